"""Reward functions for GRPO, in the TRL convention ``fn(prompts, completions, **columns)``.

Each returns one ``float | None`` per completion (``None`` = cannot be scored).
:class:`RewardSet` combines several with weights; ``paper_*_rewards`` build the sets used by
MaskGRPO (arXiv 2510.02880).
"""

from __future__ import annotations

from .code import CodeExecutionReward, code_format_reward, extract_code
from .combine import RewardFn, RewardResult, RewardSet
from .extract import extract_answer, last_boxed, normalize_number
from .gsm8k import gsm8k_correctness_reward, integer_answer_reward, reasoning_format_reward
from .math_answer import boxed_format_reward, math_equivalence_reward
from .presets import paper_code_rewards, paper_gsm8k_rewards, paper_math_rewards
from .puzzles import countdown_reward, sudoku_reward

__all__ = [
    "CodeExecutionReward",
    "RewardFn",
    "RewardResult",
    "RewardSet",
    "boxed_format_reward",
    "code_format_reward",
    "countdown_reward",
    "extract_answer",
    "extract_code",
    "gsm8k_correctness_reward",
    "integer_answer_reward",
    "last_boxed",
    "math_equivalence_reward",
    "normalize_number",
    "paper_code_rewards",
    "paper_gsm8k_rewards",
    "paper_math_rewards",
    "reasoning_format_reward",
    "sudoku_reward",
]
