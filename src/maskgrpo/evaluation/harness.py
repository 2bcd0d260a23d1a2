"""Evaluation harness: generate, score, write per-sample records and a result summary.

``evaluate`` asks ``generate(prompts, n)`` for ``n`` completions per prompt, scores them with a
:class:`~maskgrpo.rewards.RewardSet`, and writes ``samples.jsonl`` (one line per completion)
and ``result.json`` (the protocol, pass@1, pass@k, mean reward and their intervals) to
``out_dir``. A completion passes when one named reward reaches a threshold (by default the
maximum of the first reward function, for the built-in correctness rewards).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..rewards.combine import RewardResult, RewardSet
from .metrics import bootstrap_ci, mean_pass_at_k, pass_at_1, wilson_interval

logger = logging.getLogger(__name__)

GenerateFn = Callable[[list[str], int], list[list[str]]]

# Highest value of the built-in correctness rewards (MaskGRPO, arXiv 2510.02880, section 5).
KNOWN_MAXIMA = {
    "gsm8k_correctness_reward": 2.0,
    "math_equivalence_reward": 2.0,
    "code_execution_reward": 2.0,
    "countdown_reward": 1.0,
    "sudoku_reward": 1.0,
}


@dataclass(frozen=True)
class EvalProtocol:
    """Everything that changes an evaluation number; written into ``result.json``."""

    gen_length: int = field(metadata={"help": "completion tokens generated (paper: 256)"})
    steps: int = field(metadata={"help": "denoising steps of the sampler"})
    block_length: int = field(metadata={"help": "semi-autoregressive block length"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature"})
    n_shots: int = field(default=0, metadata={"help": "few-shot examples in the prompt"})
    template: str = field(default="", metadata={"help": "prompt template name"})
    n_samples: int = field(default=1, metadata={"help": "completions per prompt"})
    seed: int = field(default=0, metadata={"help": "seed of generation and the bootstrap"})
    k_values: tuple[int, ...] = field(default=(1,), metadata={"help": "k of the pass@k reported"})
    model: str = field(default="", metadata={"help": "model evaluated (hub id or folder)"})
    dataset: str = field(default="", metadata={"help": "benchmark recipe name"})
    data_file: str = field(default="", metadata={"help": "rows file; empty = the recipe default"})
    few_shot_file: str = field(
        default="", metadata={"help": "file the few-shot examples come from"}
    )
    system_prompt: str = field(default="", metadata={"help": "system turn given to the model"})
    remasking: str = field(default="low_confidence", metadata={"help": "sampler remasking rule"})
    kv_cache: str = field(default="none", metadata={"help": "block KV cache (none = exact)"})
    kv_cache_refresh: int = field(default=0, metadata={"help": "steps between cache refreshes"})
    parallel_threshold: float = field(
        default=0.0, metadata={"help": "parallel decoding threshold (0 = fixed schedule)"}
    )

    def __post_init__(self) -> None:
        for name in ("gen_length", "steps", "block_length", "n_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalProtocol.{name}={getattr(self, name)} must be >= 1.")
        if self.temperature < 0 or self.n_shots < 0:
            raise ValueError(
                f"EvalProtocol temperature={self.temperature} and n_shots={self.n_shots} "
                "must be >= 0."
            )
        bad = [k for k in self.k_values if not 1 <= k <= self.n_samples]
        if bad:
            raise ValueError(
                f"EvalProtocol k_values {bad} exceed n_samples={self.n_samples}; "
                "raise n_samples or drop those k."
            )


@dataclass(frozen=True)
class PassCriterion:
    """A completion passes when reward ``name`` is at least ``threshold``."""

    name: str
    threshold: float

    def passed(self, result: RewardResult) -> list[bool]:
        if self.name not in result.per_function:
            raise ValueError(
                f"pass criterion names reward {self.name!r}, but the reward set has "
                f"{sorted(result.per_function)}; pass PassCriterion(name=..., threshold=...)."
            )
        return [v is not None and v >= self.threshold for v in result.per_function[self.name]]


def default_criterion(rewards: RewardSet) -> PassCriterion:
    """First reward of the set at its known maximum; an error for unknown rewards."""
    name = rewards.names[0]
    if name not in KNOWN_MAXIMA:
        raise ValueError(
            f"no known maximum for reward {name!r}; pass pass_criterion="
            f"PassCriterion({name!r}, threshold=<its full-credit value>)."
        )
    return PassCriterion(name, KNOWN_MAXIMA[name])


def _generate_all(
    generate: GenerateFn, prompts: list[str], n: int, batch_size: int
) -> list[list[str]]:
    out: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        completions = generate(batch, n)
        if len(completions) != len(batch) or any(len(c) != n for c in completions):
            raise ValueError(
                f"generate returned {[len(c) for c in completions]} completions for "
                f"{len(batch)} prompts; it must return {n} per prompt."
            )
        out.extend([list(c) for c in completions])
    return out


def _columns(rows: Sequence[Mapping[str, Any]], n: int) -> dict[str, list[Any]]:
    """Row columns (except ``prompt``) repeated ``n`` times, aligned with flat completions."""
    keys = sorted({k for row in rows for k in row} - {"prompt"})
    return {k: [row.get(k) for row in rows for _ in range(n)] for k in keys}


def _summary(
    passed: np.ndarray, totals: list[float | None], protocol: EvalProtocol
) -> dict[str, Any]:
    """Metrics from the (prompts, samples) pass matrix and the flat reward totals."""
    n_prompts, n = passed.shape
    per_prompt_pass = passed.mean(axis=1)
    scored = np.array([np.nan if t is None else t for t in totals]).reshape(n_prompts, n)
    per_prompt_reward = np.nanmean(np.where(np.isnan(scored).all(axis=1)[:, None], 0.0, scored), 1)
    counts = [int(c) for c in passed.sum(axis=1)]
    return {
        "pass@1": pass_at_1(passed),
        "pass@1_bootstrap95": bootstrap_ci(per_prompt_pass, seed=protocol.seed),
        "pass@1_wilson95": wilson_interval(int(passed.sum()), passed.size),
        "pass@k": {str(k): mean_pass_at_k(counts, n, k) for k in protocol.k_values},
        "mean_reward": float(per_prompt_reward.mean()),
        "mean_reward_bootstrap95": bootstrap_ci(per_prompt_reward, seed=protocol.seed + 1),
        "unscorable_samples": int(np.isnan(scored).sum()),
    }


def evaluate(
    generate: GenerateFn,
    rows: Sequence[Mapping[str, Any]],
    rewards: RewardSet,
    protocol: EvalProtocol,
    *,
    out_dir: str,
    pass_criterion: PassCriterion | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Generate ``protocol.n_samples`` completions per row, score them and write the results.

    Returns the dict written to ``out_dir/result.json``. Unscorable samples count as failed
    and are excluded from the mean reward of their prompt.
    """
    if not rows:
        raise ValueError("evaluate needs at least one row; check the dataset and its limit.")
    criterion = pass_criterion or default_criterion(rewards)
    n = protocol.n_samples
    prompts = [str(row["prompt"]) for row in rows]
    completions = _generate_all(generate, prompts, n, batch_size)
    flat_prompts = [p for p in prompts for _ in range(n)]
    flat = [c for group in completions for c in group]
    result = rewards(flat_prompts, flat, **_columns(rows, n))
    passed = criterion.passed(result)
    os.makedirs(out_dir, exist_ok=True)
    _write_samples(
        os.path.join(out_dir, "samples.jsonl"),
        flat_prompts,
        flat,
        result=result,
        passed=passed,
        n=n,
    )
    summary = {
        "protocol": asdict(protocol),
        "pass_criterion": asdict(criterion),
        "n_prompts": len(rows),
        "n_samples": n,
        **_summary(np.array(passed, dtype=bool).reshape(len(rows), n), result.total, protocol),
        "reward_errors": result.errors,
    }
    with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    logger.info("evaluation: pass@1=%.4f over %d prompts", summary["pass@1"], len(rows))
    return summary


def _write_samples(
    path: str,
    prompts: list[str],
    completions: list[str],
    *,
    result: RewardResult,
    passed: list[bool],
    n: int,
) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            record = {
                "prompt_index": i // n,
                "sample_index": i % n,
                "prompt": prompt,
                "completion": completion,
                "rewards": {name: values[i] for name, values in result.per_function.items()},
                "total": result.total[i],
                "passed": passed[i],
            }
            f.write(json.dumps(record) + "\n")
