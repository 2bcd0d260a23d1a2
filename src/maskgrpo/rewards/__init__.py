"""Reward functions for GRPO, in the TRL convention ``fn(prompts, completions, **columns)``.

Each returns one ``float | None`` per completion (``None`` = cannot be scored).
:class:`RewardSet` combines several with weights; ``paper_*_rewards`` build the sets used by
MaskGRPO (arXiv 2510.02880).

Image rewards score decoded uint8 pixels: :mod:`.geneval` (GenEval-style checks of the shapes
world), :mod:`.clip` (CLIP similarity; imports ``transformers`` on use) and :mod:`.http` (a
served reward model, any modality).
"""

from __future__ import annotations

from .code import CodeExecutionReward, code_format_reward, extract_code
from .combine import RewardFn, RewardResult, RewardSet
from .extract import extract_answer, last_boxed, normalize_number
from .geneval import geneval_partial_reward, geneval_reward, make_geneval_reward
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
    "geneval_partial_reward",
    "geneval_reward",
    "gsm8k_correctness_reward",
    "integer_answer_reward",
    "last_boxed",
    "make_geneval_reward",
    "math_equivalence_reward",
    "normalize_number",
    "paper_code_rewards",
    "paper_gsm8k_rewards",
    "paper_math_rewards",
    "reasoning_format_reward",
    "sudoku_reward",
]
