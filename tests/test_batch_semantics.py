"""TRL's batch semantics: rollouts per step = per_device_train_batch_size x
gradient_accumulation_steps x processes; each inner update is one optimizer step over all of them,
so splitting the same rollouts into more micro-batches changes nothing but rounding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maskgrpo.config import TrainConfig, load_config
from maskgrpo.trainer.grpo import train_grpo
from maskgrpo.trainer.run import _reward_set, setup

TINY = {"dim": 32, "n_layers": 1, "n_heads": 2, "sample_every": 0, "device": "cpu"}


def _train(tmp_path: Path, **batch: Any) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    cfg = load_config(
        TrainConfig,
        output_dir=str(tmp_path),
        max_steps=2,
        num_generations=4,
        num_iterations=2,
        learning_rate=1e-2,
        beta=0.02,
        **TINY,
        **batch,
    )
    s = setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name="cpu",
        sampling=cfg,
    )
    history = train_grpo(
        cfg,
        s.policy.model,
        modality=s.modality,
        rows=s.task.train,
        rewards=_reward_set(cfg, s.task),
        settings=s.settings,
    )
    params = {n: p.detach().clone() for n, p in s.policy.model.named_parameters()}
    return history, params


def test_accumulation_splits_the_same_update(tmp_path: Path) -> None:
    whole, p_whole = _train(tmp_path / "a", per_device_train_batch_size=16)
    split, p_split = _train(
        tmp_path / "b", per_device_train_batch_size=4, gradient_accumulation_steps=4
    )
    # the same prompts and rollout tokens (4 prompts x 4 generations per step) ...
    assert [m["rollout_hash"] for m in whole] == [m["rollout_hash"] for m in split]
    assert all(m["tokens_scored"] > 0 for m in whole)
    # ... and the same loss and updates: one optimizer step per inner update over all 16 rows
    for a, b in zip(whole, split, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["kl"] - b["kl"]) < 1e-6
    init = _train_init(tmp_path)
    change = max(float((p_whole[n] - init[n]).abs().max()) for n in init)
    assert change > 1e-3, "training left every parameter unchanged"
    # Adam divides each gradient by its own magnitude, so entries with near-zero gradients carry
    # summation-order rounding; the difference stays far below the size of the update
    diff = max(float((p_split[n] - p_whole[n]).abs().max()) for n in init)
    assert diff < 1e-2 * change, (diff, change)


def _train_init(tmp_path: Path) -> dict[str, torch.Tensor]:
    cfg = load_config(TrainConfig, output_dir=str(tmp_path / "init"), **TINY)
    s = setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name="cpu",
        sampling=cfg,
    )
    return {n: p.detach().clone() for n, p in s.policy.model.named_parameters()}


def test_rollouts_per_step_follow_the_processes() -> None:
    cfg = TrainConfig(
        per_device_train_batch_size=3, gradient_accumulation_steps=2, num_generations=6
    )
    assert cfg.rollouts_per_step(1) == 6 and cfg.prompts_per_step(1) == 1
    assert cfg.rollouts_per_step(4) == 24 and cfg.prompts_per_step(4) == 4
    cfg.validate_batch(2)
    bad = TrainConfig(per_device_train_batch_size=3, num_generations=6)
    bad.validate_batch(2)  # 3 x 1 x 2 = 6: whole groups over two processes
    try:
        bad.validate_batch(1)
    except ValueError as err:
        assert "= 3 rollouts per step is not a multiple of num_generations=6" in str(err)
    else:
        raise AssertionError("3 rollouts cannot form a group of 6")
