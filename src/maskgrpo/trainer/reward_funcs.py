"""Reward functions named on the command line, and the checks every reward set gets.

``--reward-funcs`` takes built-in reward names (:data:`BUILTIN_REWARDS`, plus a synthetic
task's own rewards by name) and references to a user's functions: ``package.module:function``
(imported from the working directory or ``PYTHONPATH``) or ``path/to/file.py:function``. A
function follows the TRL convention ``fn(prompts, completions, **columns) -> list[float | None]``
and receives every dataset column except ``prompt`` as a keyword argument; a function that
cannot accept the dataset's columns is an error at start-up, not a batch of unscorable rewards.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..rewards.combine import RewardFn, RewardSet

__all__ = [
    "BUILTIN_REWARDS",
    "check_signature",
    "load_reference",
    "make_reward_set",
    "resolve_reward_funcs",
]


def _code_execution(allow_unsafe: bool) -> RewardFn:
    from ..rewards import CodeExecutionReward
    from ..sandbox import SandboxUnavailableError

    try:
        return CodeExecutionReward(allow_unsafe=allow_unsafe)
    except SandboxUnavailableError as err:
        raise ValueError(f"{err} (--allow-unsafe-code true accepts that risk)") from err


def _builtin(name: str) -> Callable[[bool], RewardFn]:
    def make(_: bool) -> RewardFn:
        from .. import rewards

        fn: RewardFn = getattr(rewards, name)
        return fn

    return make


# Built-in rewards by name (MaskGRPO, arXiv 2510.02880, Sec. 5); each maker takes allow_unsafe.
BUILTIN_REWARDS: dict[str, Callable[[bool], RewardFn]] = {
    "gsm8k_correctness_reward": _builtin("gsm8k_correctness_reward"),
    "reasoning_format_reward": _builtin("reasoning_format_reward"),
    "integer_answer_reward": _builtin("integer_answer_reward"),
    "math_equivalence_reward": _builtin("math_equivalence_reward"),
    "boxed_format_reward": _builtin("boxed_format_reward"),
    "code_execution_reward": _code_execution,
    "code_format_reward": _builtin("code_format_reward"),
    "countdown_reward": _builtin("countdown_reward"),
    "sudoku_reward": _builtin("sudoku_reward"),
}


def load_reference(ref: str) -> RewardFn:
    """The callable ``ref`` names: ``package.module:function`` or ``file.py:function``."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"reward function {ref!r} is neither a built-in name {sorted(BUILTIN_REWARDS)} nor "
            "a module:function reference"
        )
    if module_name.endswith(".py"):
        module = _load_file(ref, module_name)
    else:
        cwd = os.getcwd()
        if cwd not in sys.path:  # the console script's sys.path lacks the working directory
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(
                f"reward function {ref!r}: cannot import {module_name!r} ({err}); run from the "
                f"folder that holds it, add that folder to PYTHONPATH, or pass path/to/file.py:{attr}"
            ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"reward function {ref!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"reward function {ref!r} is a {type(fn).__name__}, not a callable")
    return fn  # type: ignore[no-any-return]


def _load_file(ref: str, path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"reward function {ref!r}: file {path!r} does not exist")
    name = f"maskgrpo_user_rewards_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ValueError(f"reward function {ref!r}: {path!r} cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's module failed to import: name it, keep the cause
        del sys.modules[name]
        raise ValueError(f"reward function {ref!r}: importing {path!r} raised {err!r}") from err
    return module


def resolve_reward_funcs(
    specs: Sequence[str | RewardFn],
    *,
    dataset_rewards: Sequence[RewardFn] = (),
    allow_unsafe: bool = False,
) -> list[RewardFn]:
    """Callables for ``specs``: callables as given, names of built-ins or of the dataset's own
    rewards, and ``module:function`` references."""
    own = {getattr(f, "__name__", ""): f for f in dataset_rewards}
    out: list[RewardFn] = []
    for spec in specs:
        if callable(spec):
            out.append(spec)
        elif not isinstance(spec, str) or not spec:
            raise ValueError(f"reward function {spec!r} must be a name, a reference or a callable")
        elif spec in own:
            out.append(own[spec])
        elif spec in BUILTIN_REWARDS:
            out.append(BUILTIN_REWARDS[spec](allow_unsafe))
        else:
            if ":" not in spec:
                known = sorted({*BUILTIN_REWARDS, *own} - {""})
                raise ValueError(
                    f"reward function {spec!r} is not a built-in name {known} nor a "
                    "module:function reference"
                )
            out.append(load_reference(spec))
    return out


def check_signature(fn: RewardFn, columns: Sequence[str], name: str) -> None:
    """Raise when ``fn`` cannot be called as ``fn(prompts, completions, **columns)``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return
    params = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(positional) < 2 and not takes_varargs:
        raise ValueError(
            f"reward function {name!r} must take (prompts, completions, **columns); its "
            f"signature is {signature}"
        )
    named = {p.name for p in params}
    missing = [c for c in columns if c not in named]
    if missing:
        raise ValueError(
            f"reward function {name!r} does not accept the dataset columns {missing} that it is "
            "passed as keyword arguments; add **kwargs to its signature"
        )


def make_reward_set(
    funcs: Sequence[RewardFn], weights: Sequence[float], *, columns: Sequence[str]
) -> RewardSet:
    """A :class:`RewardSet` of ``funcs`` (unique names) after checking each signature."""
    if not funcs:
        raise ValueError("no reward functions; pass reward_funcs (names, references or callables)")
    weights = list(weights) or [1.0] * len(funcs)
    if len(weights) != len(funcs):
        given = [getattr(f, "__name__", type(f).__name__) for f in funcs]
        raise ValueError(
            f"reward_weights={list(weights)} has {len(weights)} values but there are "
            f"{len(funcs)} reward functions {given}; pass one weight per function"
        )
    names: list[str] = []
    for fn in funcs:
        base = str(getattr(fn, "__name__", type(fn).__name__))
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
        check_signature(fn, columns, name)
    return RewardSet(list(funcs), weights, names=names)
