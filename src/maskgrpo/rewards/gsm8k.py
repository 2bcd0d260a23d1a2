"""GSM8K rewards as used by MaskGRPO (arXiv 2510.02880, section 5 of our method notes).

The paper scores a GSM8K completion with 2.0 for a correct final answer, 0.5 for the reasoning
format and 0.5 for an integer answer. Each part is its own function so that a
:class:`~maskgrpo.rewards.combine.RewardSet` can weight them; each returns the paper's value
when satisfied and 0.0 otherwise, so with unit weights the sum is the paper's reward.

The gold answer comes from the ``answer`` column: either a bare number or a full GSM8K solution
ending in ``#### x``. Every function scores row by row: a completion that is not a string gets
``None`` (cannot be scored) and leaves the other rows alone.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from .extract import answer_tag, extract_answer, last_boxed, normalize_number, score_rows

CORRECT_REWARD = 2.0
FORMAT_REWARD = 0.5
INTEGER_REWARD = 0.5

_FINAL_MARKERS = ("\\boxed{", "<answer>", "####")
_WORD = re.compile(r"[A-Za-z]{2,}")


def gold_number(answer: Any) -> Fraction | None:
    """Exact gold value from a GSM8K ``answer`` cell (full solution or bare number)."""
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return normalize_number(text)


def answers_match(completion: str, answer: Any) -> bool:
    """Whether the completion's final answer equals the gold number exactly."""
    gold = gold_number(answer)
    predicted = normalize_number(extract_answer(completion))
    return gold is not None and predicted is not None and predicted == gold


def gsm8k_correctness_reward(
    prompts: list[str], completions: list[str], answer: list[Any], **_: Any
) -> list[float | None]:
    """2.0 when the extracted final answer equals the gold number, else 0.0.

    A row whose gold answer is not a number, or whose completion is not text, gets ``None``.
    """
    del prompts

    def score(text: str, gold: Any) -> float | None:
        if gold_number(gold) is None:
            return None
        return CORRECT_REWARD if answers_match(text, gold) else 0.0

    return score_rows(score, completions, answer)


def has_reasoning_format(completion: str) -> bool:
    """Some written reasoning followed by an explicit final answer.

    The final answer is ``\\boxed{}``, ``<answer>...</answer>`` or a ``#### x`` line; the text
    before it must contain words (a bare answer is not reasoning).
    """
    cuts = [completion.find(m) for m in _FINAL_MARKERS if m in completion]
    if not cuts:
        return False
    has_final = last_boxed(completion) is not None or answer_tag(completion) is not None
    has_final = has_final or re.search(r"####\s*\S", completion) is not None
    return has_final and _WORD.search(completion[: min(cuts)]) is not None


def reasoning_format_reward(
    prompts: list[str], completions: list[str], **_: Any
) -> list[float | None]:
    """0.5 when the completion reasons in words and then states a marked final answer."""
    del prompts
    return score_rows(lambda c: FORMAT_REWARD if has_reasoning_format(c) else 0.0, completions)


def integer_answer_reward(
    prompts: list[str], completions: list[str], **_: Any
) -> list[float | None]:
    """0.5 when the extracted final answer is an integer (GSM8K answers always are)."""
    del prompts

    def score(text: str) -> float:
        value = normalize_number(extract_answer(text))
        return INTEGER_REWARD if value is not None and value.denominator == 1 else 0.0

    return score_rows(score, completions)
