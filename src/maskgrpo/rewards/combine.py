"""Combine several reward functions into one weighted reward.

Reward functions follow the TRL convention ``fn(prompts, completions, **columns)`` and return one
value per completion; ``None`` (or NaN) means "this function does not apply to this sample". The
total of a sample is the weighted sum over the functions that returned a value, and ``None`` when
none did.

Failures are contained row by row. When a function raises on a batch, it is called again one row
at a time, so only the rows it cannot score lose their value; a value that is not a finite number
(a string, an infinity) is dropped the same way. Such a row is unscorable for that function and
in the total, and each is logged and counted in :attr:`RewardResult.errors`, unless
``raise_errors=True``, which re-raises instead.
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
        errors: rows per function name that failed (raised, or gave a value that is not a
            finite number) during this call.
    """

    total: list[float | None]
    per_function: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


_FAILED = object()  # marks a row whose scoring failed


def _clean(value: Any) -> Any:
    """None/NaN -> None, a finite number -> float, anything else -> ``_FAILED``."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return _FAILED
    if math.isnan(number):
        return None
    return number if math.isfinite(number) else _FAILED


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
            values = self._call_one(fn, name, prompts, completions, columns)
            failed = [v is _FAILED for v in values]
            if any(failed):
                errors[name] = sum(failed)
            per_function[name] = [None if f else v for v, f in zip(values, failed, strict=True)]
            for i, value in enumerate(values):
                if failed[i]:
                    broken[i] = True
                elif value is not None:
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
        completions: list[Any],
        columns: dict[str, list[Any]],
    ) -> list[Any]:
        """One value (or ``_FAILED``) per row; a raising batch is retried row by row."""
        try:
            raw = fn(prompts, completions, **columns)
        except Exception:
            if self.raise_errors:
                raise
            logger.exception(
                "reward function %r raised on a batch of %d; scoring it row by row",
                name,
                len(completions),
            )
            return [self._one_row(fn, name, prompts, completions, columns, i)
                    for i in range(len(completions))]  # fmt: skip
        raw = list(raw)
        if len(raw) != len(completions):
            raise ValueError(
                f"reward function {name!r} returned {len(raw)} values for {len(completions)} "
                "completions; it must return exactly one value (or None) per completion."
            )
        return [self._checked(name, value, i) for i, value in enumerate(raw)]

    def _one_row(
        self,
        fn: RewardFn,
        name: str,
        prompts: list[str],
        completions: list[Any],
        columns: dict[str, list[Any]],
        i: int,
    ) -> Any:
        n = len(completions)
        row = {k: [v[i]] if _aligned(v, n) else v for k, v in columns.items()}
        try:
            values = list(fn([prompts[i]], [completions[i]], **row))
        except Exception as err:
            logger.warning("reward function %r cannot score row %d: %r", name, i, err)
            return _FAILED
        if len(values) != 1:
            logger.warning("reward function %r gave %d values for row %d", name, len(values), i)
            return _FAILED
        return self._checked(name, values[0], i)

    def _checked(self, name: str, value: Any, i: int) -> Any:
        cleaned = _clean(value)
        if cleaned is _FAILED:
            if self.raise_errors:
                raise ValueError(
                    f"reward function {name!r} returned {value!r} for row {i}; return a finite "
                    "number, or None when the row cannot be scored."
                )
            logger.warning(
                "reward function %r returned %r for row %d; row unscorable", name, value, i
            )
        return cleaned


def _aligned(column: Any, n: int) -> bool:
    """Whether ``column`` holds one entry per row (and can be sliced to one row)."""
    return isinstance(column, list | tuple) and len(column) == n
