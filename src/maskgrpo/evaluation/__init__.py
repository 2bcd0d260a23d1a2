"""Evaluation: pass@k and interval statistics, and a harness that writes reproducible results."""

from __future__ import annotations

from .harness import EvalProtocol, PassCriterion, evaluate
from .metrics import bootstrap_ci, mean_pass_at_k, pass_at_1, pass_at_k, wilson_interval

__all__ = [
    "EvalProtocol",
    "PassCriterion",
    "bootstrap_ci",
    "evaluate",
    "mean_pass_at_k",
    "pass_at_1",
    "pass_at_k",
    "wilson_interval",
]
