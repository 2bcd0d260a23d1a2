"""Image SFT, evaluation and rollout diversity on the shapes world.

SFT is the masked-diffusion objective (:func:`maskgrpo.trainer.sft.sft_loss`) on
(prompt, rendered-image codes) pairs, with the softmax restricted to the code range and
conditioning dropout: a fraction of rows gets the empty prompt, so the same network is also the
unconditional model that classifier-free guidance needs (Ho & Salimans 2022).

Evaluation follows GenEval: one image per prompt, accuracy = fraction of prompts whose spec is
fully satisfied (with a 95% Wilson interval), plus the mean partial reward (clause fraction).
Images are rendered on the fly from explicitly seeded numpy generators; nothing touches the
global RNG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..modalities.base import SamplerSettings
from ..modalities.image import ImageModality
from ..rewards.geneval import (
    detect_all,
    evaluate_spec,
    make_geneval_reward,
    requested_objects,
    score_by_tag,
)
from ..rng import derive_generator, derive_seed
from ..tasks.shapes.world import WorldConfig, render
from .evaluate import wilson_interval
from .sft import sft_loop, sft_loss

__all__ = ["ImageEval", "evaluate_images", "rollout_diversity", "train_image_sft"]

log = logging.getLogger(__name__)


def train_image_sft(
    model: nn.Module,
    modality: ImageModality,
    specs: list[dict],
    *,
    world: WorldConfig,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    cond_dropout: float = 0.1,
    weighting: str = "uniform",
    warmup_steps: int = 20,
    weight_decay: float = 0.01,
    log_every: int = 50,
    on_log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """SFT ``model`` in place on renders of ``specs`` (drawn uniformly); returns per-step losses.

    ``weighting`` is :func:`~maskgrpo.trainer.sft.sft_loss`'s: ``"uniform"`` (MaskGIT's image
    loss, the default here) or ``"elbo"`` (LLaDA's ``1/t``).
    """
    if not specs:
        raise ValueError("train_image_sft needs at least one spec; pass the training specs")
    if not 0.0 <= cond_dropout < 1.0:
        raise ValueError(f"cond_dropout={cond_dropout} must be in [0, 1); 0.1 is typical")
    device = next(model.parameters()).device
    rng = np.random.default_rng(derive_seed(seed, "image-sft-data"))
    mask_gen = derive_generator(seed, "image-sft-mask", device=device)

    def step_loss(step: int) -> torch.Tensor:
        batch = [specs[i] for i in rng.integers(0, len(specs), size=batch_size)]
        images = np.stack([render(s, rng, world) for s in batch])  # (B, H, W, 3)
        drop = rng.random(batch_size) < cond_dropout
        prompts = ["" if d else s["prompt"] for s, d in zip(batch, drop, strict=True)]
        return sft_loss(
            model,
            modality.encode_prompts(prompts, device),  # (B, W)
            modality.encode_images(images, device),  # (B, N)
            mask_id=modality.spec.mask_id,
            generator=mask_gen,
            vocab_range=modality.vocab_range,
            weighting=weighting,
        )

    return sft_loop(
        model, step_loss, steps=steps, lr=lr, warmup_steps=warmup_steps,
        weight_decay=weight_decay, log_every=log_every, on_log=on_log,
    )  # fmt: skip


@dataclass
class ImageEval:
    """GenEval-style result: accuracy (all clauses met) with a 95% interval, partial reward."""

    accuracy: float
    ci95: tuple[float, float]
    reward: float
    n: int
    by_tag: dict[str, float]
    images: list[np.ndarray] = field(repr=False, default_factory=list)
    # Images holding more objects than the prompt asks for: GenEval's rules accept most of them
    # (includes ask for "at least"), so a rising value flags a policy gaming the metric.
    extra_objects: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "ci95": list(self.ci95),
            "reward": self.reward,
            "n": self.n,
            "by_tag": self.by_tag,
            "extra_objects": self.extra_objects,
        }


@torch.no_grad()
def generate_images(
    model: nn.Module,
    modality: ImageModality,
    prompts: list[str],
    settings: SamplerSettings,
    *,
    seed: int,
    batch_size: int = 128,
) -> list[np.ndarray]:
    """One image per prompt; batch ``i`` draws from a generator seeded by ``(seed, i)``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    images: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        ids = modality.encode_prompts(prompts[start : start + batch_size], device)  # (b, W)
        gen = derive_generator(seed, "image-eval", start, device=device)
        seqs = modality.rollout(model, ids, settings, gen)  # (b, W + N)
        images += modality.decode(seqs[:, modality.prompt_width :])
    model.train(was_training)
    return images


def evaluate_images(
    model: nn.Module,
    modality: ImageModality,
    specs: list[dict],
    settings: SamplerSettings,
    *,
    world: WorldConfig,
    seed: int,
    batch_size: int = 128,
) -> ImageEval:
    """GenEval accuracy and mean partial reward over ``specs`` (one image each)."""
    prompts = [s["prompt"] for s in specs]
    images = generate_images(model, modality, prompts, settings, seed=seed, batch_size=batch_size)
    # One detection per image, judged by GenEval's rules; an unscorable spec counts as failed.
    full: list[float | None] = []
    partial: list[float] = []
    extra: list[bool] = []
    for item in detect_all(images, specs, world):
        if item is None:
            full.append(None)
            partial.append(0.0)
            extra.append(False)
            continue
        spec, found = item
        res = evaluate_spec(spec, found)
        full.append(float(res.correct))
        partial.append(res.satisfied / max(res.total, 1))
        extra.append(len(found) > requested_objects(spec))
    correct = int(sum(r or 0.0 for r in full))
    return ImageEval(
        extra_objects=float(np.mean(extra)),
        accuracy=correct / len(specs),
        ci95=wilson_interval(correct, len(specs)),
        reward=float(np.mean(partial)),
        n=len(specs),
        by_tag=score_by_tag([s["tag"] for s in specs], full),
        images=images,
    )


def rollout_diversity(
    model: nn.Module,
    modality: ImageModality,
    specs: list[dict],
    settings: SamplerSettings,
    *,
    world: WorldConfig,
    group_size: int,
    seed: int,
) -> dict[str, float]:
    """Within-group spread of the partial reward over ``group_size`` rollouts per spec.

    Returns ``mean_group_std`` (mean of the per-prompt standard deviations) and
    ``zero_std_fraction`` (groups whose rollouts all score the same: no GRPO signal).
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size} must be >= 2 to measure a spread")
    group = [s for s in specs for _ in range(group_size)]  # prompt-major
    prompts = [s["prompt"] for s in group]
    images = generate_images(model, modality, prompts, settings, seed=seed)
    values = make_geneval_reward(world, partial=True)(prompts, images, spec=group)
    r = np.array([v or 0.0 for v in values]).reshape(len(specs), group_size)  # (P, G)
    std = r.std(axis=1, ddof=1)  # (P,)
    return {
        "mean_group_std": float(std.mean()),
        "zero_std_fraction": float((std < 1e-8).mean()),
        "mean_reward": float(r.mean()),
    }
