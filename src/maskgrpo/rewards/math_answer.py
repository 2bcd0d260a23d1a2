"""MATH / MATH500 rewards: answer equivalence through ``math-verify`` and a boxed-format check.

MaskGRPO (arXiv 2510.02880) gives 2.0 for an answer equivalent to the gold one and 0.5 for an
answer written in ``\\boxed{}``. Equivalence is decided by the optional ``math-verify`` package
(``pip install math-verify``), imported on first use. Its default time-outs rely on
``signal.alarm``, which only works in the main thread; this module always disables them
(``parsing_timeout=None`` / ``timeout_seconds=None``) so rewards can run in worker threads. Run
these rewards under an outer time limit if adversarial inputs are a concern.

The answer of a completion is its last ``\\boxed{}`` (as for every reward here); only a
completion without one is handed whole to ``math-verify``'s own extraction. (Given the whole
text, ``math-verify`` would read every boxed value of it as one set.) A completion that is not a
string gets ``None``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .extract import last_boxed, score_rows

EQUIVALENT_REWARD = 2.0
BOXED_REWARD = 0.5


@functools.cache
def _math_verify() -> tuple[Callable[..., Any], Callable[..., Any], dict[str, Any], dict[str, Any]]:
    """``parse``, ``verify`` and the keyword arguments that switch off their signal time-outs."""
    try:
        import math_verify
    except ImportError as err:
        raise ImportError(
            "math_equivalence_reward needs the optional package math-verify: "
            "pip install math-verify"
        ) from err
    parse, verify = math_verify.parse, math_verify.verify
    parse_kw = _no_timeout_kwargs(parse, ("parsing_timeout", "timeout_seconds"))
    verify_kw = _no_timeout_kwargs(verify, ("timeout_seconds", "parsing_timeout"))
    return parse, verify, parse_kw, verify_kw


def _no_timeout_kwargs(fn: Callable[..., Any], candidates: tuple[str, ...]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    for name in candidates:
        if name in params:
            return {name: None}
    raise RuntimeError(
        f"math-verify's {fn.__name__} has none of the time-out arguments {candidates}; "
        "install a version that has them (math-verify>=0.5)."
    )


def is_equivalent(completion: str, answer: str) -> bool | None:
    """Whether the completion's final answer (its last ``\\boxed{}``) equals ``answer``.

    Returns ``None`` when the gold answer itself cannot be parsed.
    """
    parse, verify, parse_kw, verify_kw = _math_verify()
    gold = parse(f"\\boxed{{{answer}}}", **parse_kw)
    if not gold:
        return None
    boxed = last_boxed(completion)
    predicted = parse(completion if boxed is None else f"\\boxed{{{boxed}}}", **parse_kw)
    if not predicted:
        return False
    return bool(verify(gold, predicted, **verify_kw))


def math_equivalence_reward(
    prompts: list[str], completions: list[str], answer: list[str], **_: Any
) -> list[float | None]:
    """2.0 when the completion's answer is equivalent to ``answer``; ``None`` if gold unparsable."""
    del prompts

    def score(text: str, gold: Any) -> float | None:
        same = is_equivalent(text, str(gold))
        return None if same is None else (EQUIVALENT_REWARD if same else 0.0)

    return score_rows(score, completions, answer)


def boxed_format_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    """0.5 when the completion puts a non-empty final answer in ``\\boxed{}``."""
    del prompts
    return score_rows(lambda c: BOXED_REWARD if last_boxed(c) else 0.0, completions)
