"""Tiny in-process runs: masked-diffusion SFT lowers its loss, and MaskGRPO runs with one and
with twelve inner iterations per rollout batch and changes the parameters."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from maskgrpo.config import TrainConfig, load_config
from maskgrpo.modalities.text import TextModality
from maskgrpo.policy import Policy, load_policy
from maskgrpo.rng import derive_generator
from maskgrpo.tasks import make_task
from maskgrpo.trainer.run import run_train
from maskgrpo.trainer.sft import train_sft

TINY = {"dim": 32, "n_layers": 1, "n_heads": 2}


@pytest.fixture(scope="module")
def task():
    return make_task("running_sums", seed=0)


def _policy(task, seed: int = 0) -> tuple[Policy, TextModality]:
    gen_length = task.answer_chars + 1
    policy = load_policy(
        "tiny",
        alphabet=task.alphabet,
        max_length=task.max_prompt_chars + gen_length,
        init_generator=derive_generator(seed, "init"),
        **TINY,
    )
    return policy, TextModality(policy.tokenizer, policy.spec, task.max_prompt_chars)


def _sft(policy: Policy, modality: TextModality, task, steps: int, seed: int = 0) -> list[float]:
    return train_sft(
        policy.model,
        modality,
        task.train,
        gen_length=task.answer_chars + 1,
        steps=steps,
        batch_size=16,
        lr=3e-3,
        seed=seed,
        warmup_steps=10,
    )


def test_sft_lowers_the_loss(task) -> None:
    policy, modality = _policy(task)
    losses = _sft(policy, modality, task, steps=300)
    assert len(losses) == 300 and all(math.isfinite(x) for x in losses)
    early, late = sum(losses[:25]) / 25, sum(losses[-50:]) / 50
    assert late < 0.8 * early, (early, late)  # measured: 2.32 -> 1.53


def test_sft_is_reproducible_from_its_seed(task) -> None:
    runs = []
    for seed in (0, 0, 1):
        policy, modality = _policy(task)
        runs.append(_sft(policy, modality, task, steps=5, seed=seed))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.fixture(scope="module")
def sft_policy(task) -> Policy:
    """A partly-trained base, so groups have reward variance and GRPO has a gradient."""
    policy, modality = _policy(task)
    _sft(policy, modality, task, steps=60)
    return policy


def _train(tmp_path: Path, policy: Policy, mu: int) -> list[dict]:
    cfg = load_config(
        TrainConfig,
        output_dir=str(tmp_path / f"mu{mu}"),
        max_steps=2,
        per_device_train_batch_size=16,
        num_generations=4,
        num_iterations=mu,
        learning_rate=1e-3,
        sample_every=0,
        **TINY,
    )
    result = run_train(cfg, policy=policy)
    assert result["steps"] == 2
    lines = (tmp_path / f"mu{mu}" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_mu_1_and_mu_12_both_run_and_update(tmp_path: Path, sft_policy: Policy) -> None:
    tokens = {}
    for mu in (1, 12):
        policy = copy.deepcopy(sft_policy)
        metrics = _train(tmp_path, policy, mu)
        assert [m["step"] for m in metrics] == [1, 2]
        for m in metrics:
            assert math.isfinite(m["loss"]) and math.isfinite(m["kl"])
            assert m["tokens_scored"] > 0 and m["skipped_updates"] == 0
        assert any(m["zero_std_frac"] < 1 for m in metrics), "no reward variance to learn from"
        before = dict(sft_policy.model.named_parameters())
        changed = [n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])]
        assert changed, f"mu={mu}: parameters unchanged"
        tokens[mu] = metrics[0]["tokens_scored"]
    # Step 1 rolls out the same completions for both; mu=1 scores one view at ratio ~1,
    # mu=12 sums twelve views at ratios 0.63..1 (MaskGRPO truncation gamma=0.6).
    assert tokens[12] > 6 * tokens[1]


def test_sft_loss_weightings_match_hand_computation() -> None:
    from maskgrpo.models import TinyConfig
    from maskgrpo.models.tiny import TinyDiffusionLM
    from maskgrpo.trainer.sft import sft_loss

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyDiffusionLM(TinyConfig(vocab_size=12, dim=16, n_layers=1, n_heads=2))
    model.eval()
    mask_id = 11
    prompts = torch.tensor([[1, 2], [3, 4], [5, 6]])
    completions = torch.tensor([[7, 8, 9, 10], [8, 8, 7, 9], [10, 9, 8, 7]])

    def loss(weighting: str) -> torch.Tensor:
        gen = derive_generator(4, "sft-weighting")
        return sft_loss(
            model, prompts, completions, mask_id=mask_id, generator=gen, weighting=weighting
        )

    # replay the loss's own draws: t per row, then the mask
    gen = derive_generator(4, "sft-weighting")
    t = torch.rand((3, 1), generator=gen).clamp_min(1e-3)
    masked = torch.rand((3, 4), generator=gen) < t
    noisy = torch.cat([prompts, completions.masked_fill(masked, mask_id)], dim=1)
    logp = model(noisy).logits[:, 2:].log_softmax(-1).gather(-1, completions[..., None])[..., 0]
    nll = -(logp * masked)  # (3, 4), zero where unmasked
    assert masked.any()
    assert loss("elbo").item() == pytest.approx((nll / t).sum().item() / 12, rel=1e-5)
    assert loss("uniform").item() == pytest.approx(nll.sum().item() / masked.sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="weighting='mean'"):
        loss("mean")
