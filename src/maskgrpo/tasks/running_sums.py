"""Running sums mod 10: a task whose answer is built strictly left to right.

Prompt ``"3142="``; answer ``"3480"`` (prefix sums 3, 4, 8, 10 mod 10). Answer digit ``k``
depends on digit ``k`` of the prompt and on answer digit ``k - 1``, so a model must get the
early tokens right before the late ones: the setting where MaskGRPO's fading-out masking
(later tokens masked more) should help.

Up to ``ENUMERATED_DIGITS`` digits, every prompt is enumerated once, then split into train and
held-out sets with a seed. Longer prompts cannot be enumerated: ``heldout + train_rows`` distinct
prompts are drawn with a private ``random.Random`` seeded from ``(n_digits, seed)``, the first
``heldout`` of them held out, so the two sets are disjoint and fixed by the seed.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from ..rng import derive_seed
from .base import SyntheticTask, split_rows

__all__ = ["ENUMERATED_DIGITS", "MAX_DIGITS", "make_running_sums", "running_sum"]

ENUMERATED_DIGITS = 6  # 10**6 prompts; beyond, prompts are sampled
MAX_DIGITS = 64


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


def make_running_sums(
    n_digits: int = 4, heldout: int = 1000, seed: int = 0, train_rows: int = 50_000
) -> SyntheticTask:
    """Running sums over ``n_digits`` digits; ``train_rows`` only counts for sampled prompts
    (``n_digits > ENUMERATED_DIGITS``)."""
    if not 2 <= n_digits <= MAX_DIGITS:
        raise ValueError(f"n_digits={n_digits} must be in [2, {MAX_DIGITS}] for running sums")
    if n_digits <= ENUMERATED_DIGITS:
        rows = [_row("".join(d)) for d in itertools.product("0123456789", repeat=n_digits)]
        train, held = split_rows(rows, min(heldout, len(rows) // 2), seed)
    else:
        if heldout < 1 or train_rows < 1 or heldout + train_rows > 10**n_digits // 2:
            raise ValueError(
                f"heldout={heldout} and train_rows={train_rows} must both be >= 1 and sum to at "
                f"most half the {n_digits}-digit prompts for sampled running sums"
            )
        prompts = _distinct_digits(n_digits, heldout + train_rows, seed)
        held = [_row(d) for d in prompts[:heldout]]
        train = [_row(d) for d in prompts[heldout:]]
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


def _row(digits: str) -> dict[str, Any]:
    return {"prompt": digits + "=", "answer": running_sum(digits)}


def _distinct_digits(n_digits: int, count: int, seed: int) -> list[str]:
    """``count`` distinct uniform digit strings, in draw order (a private generator)."""
    rng = random.Random(derive_seed("running_sums", n_digits, seed))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        digits = "".join(rng.choices("0123456789", k=n_digits))
        if digits not in seen:
            seen.add(digits)
            out.append(digits)
    return out
