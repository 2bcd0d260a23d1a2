"""The reward sets of MaskGRPO (arXiv 2510.02880), ready to pass to the trainer.

Every component already returns the paper's value (2.0 correct, 0.5 format, ...), so the
default weights are 1.0; change ``weights`` to re-balance the parts.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..sandbox import Sandbox
from .code import CodeExecutionReward, code_format_reward
from .combine import RewardFn, RewardSet
from .gsm8k import gsm8k_correctness_reward, integer_answer_reward, reasoning_format_reward
from .math_answer import boxed_format_reward, math_equivalence_reward


def paper_gsm8k_rewards(weights: Sequence[float] = (1.0, 1.0, 1.0)) -> RewardSet:
    """Correctness (2.0), reasoning format (0.5) and integer answer (0.5)."""
    funcs: list[RewardFn] = [
        gsm8k_correctness_reward,
        reasoning_format_reward,
        integer_answer_reward,
    ]
    return RewardSet(funcs, weights)


def paper_math_rewards(weights: Sequence[float] = (1.0, 1.0)) -> RewardSet:
    """Equivalence via math-verify (2.0) and a ``\\boxed{}`` answer (0.5)."""
    return RewardSet([math_equivalence_reward, boxed_format_reward], weights)


def paper_code_rewards(
    sandbox: Sandbox | None = None,
    weights: Sequence[float] = (1.0, 1.0),
    *,
    allow_unsafe: bool = False,
) -> RewardSet:
    """2.0 x test pass-rate in the sandbox, plus 0.5 for a fenced block that parses."""
    execution = CodeExecutionReward(sandbox, allow_unsafe=allow_unsafe)
    return RewardSet([execution, code_format_reward], weights)
