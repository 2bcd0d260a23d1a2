"""Evaluation during training through the evaluation harness (:mod:`maskgrpo.evaluation`).

Every ``eval_every`` steps (and after the last, and before the first with ``eval_on_start``)
the policy completes the held-out rows greedily, one sample each, with the training sampler's
length and steps; the harness scores them with the reward set and writes
``eval/step_<n>/samples.jsonl`` and ``result.json``. A completion passes when the first reward
reaches its full credit (the built-in rewards' maximum, else 1.0) or ``eval_pass_threshold``,
so the accuracy is pass@1: exact match on the synthetic tasks, a correct final answer on the
maths recipes, all tests passing on code. The 95% interval is Wilson's.

Under several processes every process generates (the same prompts, so the wrapped model's
collectives stay in step) and only the main process keeps the files.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluation.benchmark import BenchmarkGenerator
from ..evaluation.harness import KNOWN_MAXIMA, EvalProtocol, PassCriterion, evaluate
from ..modalities.base import Modality, SamplerSettings
from ..rewards.combine import RewardSet

__all__ = ["EVAL_KEYS", "HeldOutEvaluation", "eval_records", "plot_heldout"]

log = logging.getLogger(__name__)

EVAL_KEYS = ("eval_accuracy", "eval_accuracy_ci95_low", "eval_accuracy_ci95_high", "eval_reward")


class HeldOutEvaluation:
    """Greedy pass@1 of a policy on fixed held-out rows, with its interval and mean reward."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        rewards: RewardSet,
        settings: SamplerSettings,
        *,
        seed: int,
        batch_size: int,
        out_dir: Path,
        write: bool,
        threshold: float = 0.0,
        dataset: str = "",
        model: str = "",
        system_prompt: str = "",
    ) -> None:
        if not rows:
            raise ValueError("evaluation needs held-out rows; pass eval_dataset or eval_every=0")
        self.rows = rows
        self.rewards = rewards
        self.settings = dataclasses.replace(settings, temperature=0.0)
        first = rewards.names[0]
        self.criterion = PassCriterion(first, threshold or KNOWN_MAXIMA.get(first, 1.0))
        self.seed = seed
        self.batch_size = batch_size
        self.out_dir = out_dir
        self.write = write
        self.protocol = EvalProtocol(
            gen_length=self.settings.gen_length,
            steps=self.settings.steps,
            block_length=self.settings.block_length,
            temperature=0.0,
            n_samples=1,
            seed=seed,
            model=model,
            dataset=dataset,
            system_prompt=system_prompt,
            remasking=self.settings.remasking,
            kv_cache=self.settings.kv_cache,
            kv_cache_refresh=self.settings.kv_cache_refresh,
            parallel_threshold=self.settings.parallel_threshold,
        )
        log.info(
            "held-out evaluation: %d rows, pass when %s >= %s",
            len(rows),
            self.criterion.name,
            self.criterion.threshold,
        )

    @torch.no_grad()
    def __call__(self, model: nn.Module, modality: Modality, step: int) -> dict[str, float]:
        """Metrics of ``model`` at ``step`` (``eval_*`` keys); files under ``eval/step_<n>``."""
        device = next(model.parameters()).device
        generate = BenchmarkGenerator(
            model, modality, self.settings, seed=self.seed, device=device,
            batch_size=self.batch_size,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="maskgrpo-eval-") as scratch:
            folder = self.out_dir / "eval" / f"step_{step:06d}" if self.write else Path(scratch)
            result = evaluate(
                generate, self.rows, self.rewards, self.protocol, out_dir=str(folder),
                pass_criterion=self.criterion, batch_size=self.batch_size,
            )  # fmt: skip
        accuracy = float(result["pass@1"])
        low, high = result["pass@1_wilson95"]
        low, high = min(low, accuracy), max(high, accuracy)  # no rounding past the estimate
        metrics = {
            "eval_accuracy": accuracy,
            "eval_accuracy_ci95_low": float(low),
            "eval_accuracy_ci95_high": float(high),
            "eval_reward": float(result["mean_reward"]),
            "eval_n": int(result["n_prompts"]),
        }
        log.info(
            "step %d: held-out accuracy %.3f (95%% CI %.3f-%.3f) on %d rows",
            step, metrics["eval_accuracy"], low, high, metrics["eval_n"],
        )  # fmt: skip
        return metrics


def eval_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations in a run's metrics lines: ``step``, ``accuracy``, ``ci95``, ``reward``, ``n``."""
    return [
        {
            "step": m["step"],
            "accuracy": m["eval_accuracy"],
            "ci95": [m["eval_accuracy_ci95_low"], m["eval_accuracy_ci95_high"]],
            "reward": m["eval_reward"],
            "n": m.get("eval_n"),
        }
        for m in metrics
        if "eval_accuracy" in m
    ]


def plot_heldout(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Held-out accuracy against step with its 95% interval as error bars (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    acc = [r["accuracy"] for r in records]
    err = [  # rounding can put a Wilson bound a hair past the estimate
        [max(0.0, a - r["ci95"][0]) for a, r in zip(acc, records, strict=True)],
        [max(0.0, r["ci95"][1] - a) for a, r in zip(acc, records, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    ax.errorbar(steps, acc, yerr=err, marker="o", capsize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy (pass@1)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
