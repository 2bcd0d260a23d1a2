"""Held-out evaluation of a text policy on a synthetic task: accuracy with a 95% interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..evaluation.metrics import wilson_interval
from ..modalities.base import Modality, SamplerSettings
from ..rng import derive_generator
from ..tasks import SyntheticTask

__all__ = ["TaskEval", "evaluate_task"]


@dataclass
class TaskEval:
    accuracy: float
    ci95: tuple[float, float]
    reward: float
    n: int
    completions: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "ci95": list(self.ci95),
            "reward": self.reward,
            "n": self.n,
        }


@torch.inference_mode()
def evaluate_task(
    model: nn.Module,
    modality: Modality,
    task: SyntheticTask,
    settings: SamplerSettings,
    *,
    num_prompts: int,
    batch_size: int = 256,
    seed: int = 0,
) -> TaskEval:
    """Accuracy (exact match) and mean summed reward on the first ``num_prompts`` held-out rows."""
    rows = task.heldout[:num_prompts]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions: list[str] = []
    gen = derive_generator(seed, "eval", device=device)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids = modality.encode_prompts([r["prompt"] for r in chunk], device)
        seqs = modality.rollout(model, ids, settings, gen)
        completions += modality.decode(seqs[:, modality.prompt_width :])
    model.train(was_training)
    correct = sum(task.accuracy(completions, rows))
    prompts = [r["prompt"] for r in rows]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    total = [0.0] * len(rows)
    for fn, w in zip(task.rewards, task.weights, strict=True):
        values = fn(prompts, completions, **columns)
        total = [t + w * (v or 0.0) for t, v in zip(total, values, strict=True)]
    return TaskEval(
        accuracy=correct / len(rows),
        ci95=wilson_interval(correct, len(rows)),
        reward=sum(total) / len(rows),
        n=len(rows),
        completions=completions,
    )
