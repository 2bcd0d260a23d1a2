"""Combine several reward functions into one weighted reward.

Reward functions follow the TRL convention ``fn(prompts, completions, **columns)`` and return one
value per completion; ``None`` (or NaN) means "this function does not apply to this sample". The
total of a sample is the weighted sum over the functions that returned a value, and ``None`` when
none did. A function that raises makes every sample of that call unscorable (for that function
and in the total), is logged and counted, unless ``raise_errors=True``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]


@dataclass
class RewardResult:
    """Rewards of one batch.

    Attributes:
        total: weighted sum per sample; ``None`` = unscorable.
        per_function: raw (unweighted) values per function name.
        errors: exceptions per function name during this call.
    """

    total: list[float | None]
    per_function: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def _clean(value: Any) -> float | None:
    """Map None/NaN to None and everything else to float."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _default_name(fn: RewardFn) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))


class RewardSet:
    """A weighted set of reward functions, called like one function.

    Args:
        funcs: reward callables ``fn(prompts, completions, **columns) -> list[float | None]``.
        weights: one weight per function; all 1.0 when omitted.
        names: one unique name per function; ``fn.__name__`` when omitted.
        raise_errors: re-raise exceptions from reward functions instead of counting them.
    """

    def __init__(
        self,
        funcs: Sequence[RewardFn],
        weights: Sequence[float] | None = None,
        *,
        names: Sequence[str] | None = None,
        raise_errors: bool = False,
    ) -> None:
        if not funcs:
            raise ValueError("RewardSet needs at least one reward function; got an empty list.")
        weights = [1.0] * len(funcs) if weights is None else [float(w) for w in weights]
        names = [_default_name(f) for f in funcs] if names is None else list(names)
        if len(weights) != len(funcs):
            raise ValueError(
                f"RewardSet got {len(funcs)} functions but {len(weights)} weights; "
                "pass one weight per function."
            )
        if len(names) != len(funcs):
            raise ValueError(
                f"RewardSet got {len(funcs)} functions but {len(names)} names; "
                "pass one name per function."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"RewardSet names must be unique, got {names}; pass names=[...].")
        if any(not math.isfinite(w) for w in weights):
            raise ValueError(f"RewardSet weights must be finite, got {weights}.")
        self.funcs = list(funcs)
        self.weights = weights
        self.names = names
        self.raise_errors = raise_errors

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> RewardResult:
        """Score a batch; ``columns`` are dataset columns aligned with ``completions``."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"RewardSet got {len(prompts)} prompts and {len(completions)} completions; "
                "pass one prompt per completion (repeat prompts for groups)."
            )
        n = len(completions)
        total: list[float] = [0.0] * n
        scored = [False] * n
        broken = [False] * n
        per_function: dict[str, list[float | None]] = {}
        errors: dict[str, int] = {}
        for fn, weight, name in zip(self.funcs, self.weights, self.names, strict=True):
            values = self._call_one(fn, name, prompts, completions, columns, errors)
            if values is None:
                per_function[name] = [None] * n
                broken = [True] * n
                continue
            per_function[name] = values
            for i, value in enumerate(values):
                if value is not None:
                    total[i] += weight * value
                    scored[i] = True
        totals: list[float | None] = [
            t if s and not b else None for t, s, b in zip(total, scored, broken, strict=True)
        ]
        return RewardResult(total=totals, per_function=per_function, errors=errors)

    def _call_one(
        self,
        fn: RewardFn,
        name: str,
        prompts: list[str],
        completions: list[str],
        columns: dict[str, list[Any]],
        errors: dict[str, int],
    ) -> list[float | None] | None:
        """Values of one function, or ``None`` when it raised (and errors are not re-raised)."""
        try:
            raw = fn(prompts, completions, **columns)
        except Exception:
            if self.raise_errors:
                raise
            logger.exception("reward function %r raised; its batch is marked unscorable", name)
            errors[name] = errors.get(name, 0) + 1
            return None
        raw = list(raw)
        if len(raw) != len(completions):
            raise ValueError(
                f"reward function {name!r} returned {len(raw)} values for {len(completions)} "
                "completions; it must return exactly one value (or None) per completion."
            )
        return [_clean(v) for v in raw]
