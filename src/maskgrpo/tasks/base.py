"""The synthetic-task protocol: rows, rewards and an exact-match checker, all generated locally."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RewardFn", "SyntheticTask", "split_rows"]

RewardFn = Callable[..., list[float | None]]


@dataclass
class SyntheticTask:
    """A task with verifiable rewards.

    ``train`` and ``heldout`` rows are dicts with at least ``prompt`` and ``answer``.
    ``rewards`` follow the TRL convention ``(prompts, completions, **columns)``; ``weights`` align
    with them. ``correct(prompt, completion, row)`` is the exact-match criterion for accuracy.
    ``alphabet`` lists every character prompts and answers use (for the character tokenizer);
    ``max_prompt_chars`` / ``answer_chars`` size the model's sequence.
    """

    name: str
    alphabet: str
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    rewards: list[RewardFn]
    weights: list[float]
    correct: Callable[[str, dict[str, Any]], bool]
    max_prompt_chars: int
    answer_chars: int
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def accuracy(self, completions: list[str], rows: list[dict[str, Any]]) -> list[bool]:
        return [self.correct(c, r) for c, r in zip(completions, rows, strict=True)]


def split_rows(
    rows: list[dict[str, Any]], heldout: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle with a private ``random.Random(seed)`` and split off ``heldout`` rows."""
    if not 0 < heldout < len(rows):
        raise ValueError(f"heldout={heldout} must be in (0, {len(rows)}) for this task")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shuffled = [rows[i] for i in order]
    return shuffled[heldout:], shuffled[:heldout]
