"""Entry points behind the command line: SFT, MaskGRPO training, generation, evaluation.

Each takes one validated config and writes its outputs under ``cfg.out_dir``. The demo chains
them (see :mod:`maskgrpo.demo`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..config import EvalConfig, GenerateConfig, ModelConfig, SamplingConfig, SFTConfig, TrainConfig
from ..modality import SamplerSettings, TextModality
from ..policy import Policy, load_policy, resolve_device, save_policy
from ..rewards.combine import RewardSet
from ..rng import derive_generator
from ..tasks import SyntheticTask, make_task
from .evaluate import TaskEval, evaluate_task
from .grpo import Rollout, sampler_settings, train_grpo
from .outputs import RunLogger, plot_curves, read_metrics
from .sft import train_sft

__all__ = ["run_eval", "run_generate", "run_sft", "run_train", "setup"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
    task: SyntheticTask
    policy: Policy
    modality: TextModality
    settings: SamplerSettings
    device: torch.device


def setup(
    cfg: ModelConfig,
    seed: int,
    task_name: str,
    task_seed: int,
    device_name: str,
    sampling: SamplingConfig | None,
) -> Setup:
    """Task, policy, modality and sampler settings; checks the sequence fits the model."""
    task = make_task(task_name, seed=task_seed)
    device = resolve_device(device_name)
    gen_length = (sampling.gen_length if sampling else 0) or task.answer_chars + 1
    if gen_length <= task.answer_chars:
        raise ValueError(
            f"gen_length={gen_length} cannot hold the {task.name} answer ({task.answer_chars} "
            f"tokens) plus EOS; use gen_length >= {task.answer_chars + 1} or 0"
        )
    max_length = task.max_prompt_chars + gen_length
    policy = load_policy(
        cfg.model,
        alphabet=task.alphabet,
        max_length=max_length,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        device=device,
        init_generator=derive_generator(seed, "init"),
    )
    limit = getattr(getattr(policy.model, "config", None), "max_length", None)
    if limit is not None and max_length > limit:
        raise ValueError(
            f"prompt ({task.max_prompt_chars}) + gen_length ({gen_length}) = {max_length} tokens "
            f"exceed the model's max_length={limit}; lower gen_length"
        )
    modality = TextModality(policy.tokenizer, policy.spec, prompt_width=task.max_prompt_chars)
    settings = SamplerSettings(gen_length, gen_length, gen_length, 0.0, "low_confidence")
    if sampling is not None:
        settings = sampler_settings_from(sampling, task.answer_chars)
    return Setup(task, policy, modality, settings, device)


def sampler_settings_from(cfg: SamplingConfig, answer_tokens: int) -> SamplerSettings:
    return sampler_settings(cfg, answer_tokens)  # type: ignore[arg-type]


def _write_yaml(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def save_checkpoint(policy: Policy, out_dir: Path, name: str, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/<name>`` atomically (temporary folder, then rename)."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(policy, tmp)
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """SFT the policy on the task's train split; saves ``<out_dir>/model``."""
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, None)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_yaml(cfg, out / "sft_config.yaml")
    logger = RunLogger(out, tensorboard=False)
    bar = tqdm(total=cfg.steps, desc="sft", disable=None)

    def on_log(step: int, loss: float) -> None:
        logger.log({"step": step, "sft_loss": loss})
        bar.update(cfg.log_every)
        bar.set_postfix(loss=f"{loss:.3f}")

    t0 = time.time()
    losses = train_sft(
        s.policy.model,
        s.modality,
        s.task.train,
        gen_length=s.settings.gen_length,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        min_mask_ratio=cfg.min_mask_ratio,
        log_every=cfg.log_every,
        on_log=on_log,
    )
    bar.close()
    save_policy(s.policy, out / "model")
    logger.close()
    return {
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": time.time() - t0,
        "model": str(out / "model"),
    }


def run_train(cfg: TrainConfig, *, policy: Policy | None = None) -> dict[str, Any]:
    """MaskGRPO on the task's train split; metrics, samples, plots and checkpoints in out_dir."""
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, cfg)
    if policy is not None:
        s.policy = policy
        s.modality = TextModality(policy.tokenizer, policy.spec, s.modality.prompt_width)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_yaml(cfg, out / "train_config.yaml")
    weights = cfg.reward_weights or s.task.weights
    if len(weights) != len(s.task.rewards):
        raise ValueError(
            f"reward_weights has {len(weights)} values but task {s.task.name} has "
            f"{len(s.task.rewards)} reward functions ({[f.__name__ for f in s.task.rewards]})"
        )
    rewards = RewardSet(s.task.rewards, weights)
    logger = RunLogger(out)
    bar = tqdm(total=cfg.steps, desc="maskgrpo", disable=None)
    greedy = dataclasses.replace(s.settings, temperature=0.0)

    def on_step(metrics: dict[str, Any], rollout: Rollout) -> None:
        step = metrics["step"]
        if cfg.eval_every and step % cfg.eval_every == 0:
            ev = evaluate_task(
                s.policy.model,
                s.modality,
                s.task,
                greedy,
                num_prompts=cfg.eval_prompts,
                seed=cfg.seed,
            )
            metrics["heldout_accuracy"] = ev.accuracy
        if step % cfg.log_every == 0:
            logger.log(metrics)
        if cfg.sample_every and step % cfg.sample_every == 0:
            k = min(cfg.group_size, len(rollout.prompts))
            logger.samples(
                step, rollout.prompts[:k], rollout.completions[:k], rollout.rewards.total[:k]
            )
        if cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(s.policy, out, f"step_{step:06d}", {"step": step})
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", loss=f"{metrics['loss']:.4f}")

    t0 = time.time()
    history = train_grpo(
        cfg, s.policy.model, s.modality, s.task.train, rewards, s.settings, on_step=on_step
    )
    bar.close()
    logger.close()
    final = save_checkpoint(s.policy, out, "final", {"step": len(history)})
    plot = plot_curves(
        read_metrics(logger.metrics_path),
        out / "reward_curve.png",
        keys=("reward_mean", "kl", "clip_fraction"),
        title=f"MaskGRPO on {s.task.name}",
    )
    return {
        "steps": len(history),
        "seconds": time.time() - t0,
        "checkpoint": str(final),
        "metrics": str(logger.metrics_path),
        "plot": str(plot),
        "final_reward": history[-1]["reward_mean"] if history else None,
    }


def run_eval(cfg: EvalConfig) -> TaskEval:
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, cfg)
    result = evaluate_task(
        s.policy.model,
        s.modality,
        s.task,
        s.settings,
        num_prompts=cfg.num_prompts,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "task": s.task.name,
        "model": cfg.model,
        "protocol": dataclasses.asdict(s.settings),
        **result.as_dict(),
    }
    (out / "eval.json").write_text(json.dumps(record, indent=2))
    return result


def run_generate(cfg: GenerateConfig) -> list[dict[str, Any]]:
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, cfg)
    prompts = cfg.prompts or [r["prompt"] for r in s.task.heldout[: cfg.num_prompts]]
    ids = s.modality.encode_prompts([p for p in prompts for _ in range(cfg.samples)], s.device)
    s.policy.model.eval()
    seqs = s.modality.rollout(
        s.policy.model, ids, s.settings, derive_generator(cfg.seed, "generate", device=s.device)
    )
    texts = s.modality.decode(seqs[:, s.modality.prompt_width :])
    return [
        {"prompt": p, "completion": c}
        for p, c in zip([p for p in prompts for _ in range(cfg.samples)], texts, strict=True)
    ]
