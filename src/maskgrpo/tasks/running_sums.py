"""Running sums mod 10: a task whose answer is built strictly left to right.

Prompt ``"3142="``; answer ``"3480"`` (prefix sums 3, 4, 8, 10 mod 10). Answer digit ``k``
depends on digit ``k`` of the prompt and on answer digit ``k - 1``, so a model must get the
early tokens right before the late ones: the setting where MaskGRPO's fading-out masking
(later tokens masked more) should help. Every prompt of ``n_digits`` digits is enumerated once,
then split into train and held-out sets with a seed.
"""

from __future__ import annotations

import itertools
from typing import Any

from .base import SyntheticTask, split_rows

__all__ = ["make_running_sums", "running_sum"]


def running_sum(digits: str) -> str:
    total, out = 0, []
    for d in digits:
        total = (total + int(d)) % 10
        out.append(str(total))
    return "".join(out)


def _exact(
    prompts: list[str], completions: list[str], answer: list[str], **_: Any
) -> list[float | None]:
    """1.0 when the completion is exactly the answer."""
    return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]


def _prefix_credit(
    prompts: list[str], completions: list[str], answer: list[str], **_: Any
) -> list[float | None]:
    """Fraction of answer digits right before the first mistake (partial credit, left to right)."""
    out: list[float | None] = []
    for c, a in zip(completions, answer, strict=True):
        n = 0
        for got, want in zip(c.strip(), a, strict=False):
            if got != want:
                break
            n += 1
        out.append(n / len(a) if len(c.strip()) <= len(a) else n / len(c.strip()))
    return out


def make_running_sums(n_digits: int = 4, heldout: int = 1000, seed: int = 0) -> SyntheticTask:
    if not 2 <= n_digits <= 6:
        raise ValueError(f"n_digits={n_digits} must be in [2, 6] for running sums")
    rows = [
        {"prompt": "".join(d) + "=", "answer": running_sum("".join(d))}
        for d in itertools.product("0123456789", repeat=n_digits)
    ]
    train, held = split_rows(rows, min(heldout, len(rows) // 2), seed)
    _exact.__name__ = "exact_match"
    _prefix_credit.__name__ = "prefix_credit"
    return SyntheticTask(
        name="running_sums",
        alphabet="0123456789=",
        train=train,
        heldout=held,
        rewards=[_exact, _prefix_credit],
        weights=[1.0, 1.0],
        correct=lambda completion, row: completion.strip() == row["answer"],
        max_prompt_chars=n_digits + 1,
        answer_chars=n_digits,
        description=f"prefix sums mod 10 of {n_digits} digits",
    )
