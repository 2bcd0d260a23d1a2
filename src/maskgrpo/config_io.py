"""Reading configs: YAML files and command-line options into validated config dataclasses.

A config class is a dataclass whose fields carry a ``help`` string (:func:`field_with_help`) and
which has a ``validate()`` method raising ``ValueError`` naming the bad value and the fix. A class
may list old field names in a ``RENAMED`` class variable (``{old: "new_name (note)"}``): an old
name in YAML or on the command line is then one error line naming its replacement.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Container
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from .user_input import read_config_file

__all__ = [
    "add_config_arguments",
    "check_choice",
    "check_non_negative",
    "check_positive",
    "config_from_args",
    "field_with_help",
    "load_config",
    "renamed_fields",
]

C = TypeVar("C")


def field_with_help(default: Any, help: str, *, const: Any = None, **kw: Any) -> Any:
    """A field with its help string; ``const`` lets ``--flag`` alone stand for that value."""
    meta = {"help": help} if const is None else {"help": help, "const": const}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def renamed_fields(cls: type) -> dict[str, str]:
    """Old field names of ``cls``'s command and what replaced each (empty when none)."""
    table: dict[str, str] = getattr(cls, "RENAMED", {})
    return table


def _renamed_error(cls: type, names: list[str]) -> ValueError:
    table = renamed_fields(cls)
    parts = []
    for name in names:
        new = table[name]
        if new.startswith("replaced"):
            parts.append(f"unknown field {name!r}: {new}")
        else:
            field_name, _, note = new.partition(" ")
            parts.append(
                f"unknown field {name!r}: renamed to {field_name!r}{' ' + note if note else ''}"
            )
    return ValueError("; ".join(parts))


def check_non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) >= 0:  # also rejects NaN
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 0 (0 = off)")


def check_choice(cfg: Any, name: str, choices: Container[str]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {list(choices)}")  # type: ignore[call-overload]


def check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:  # also rejects NaN
            raise ValueError(f"{name}={getattr(cfg, name)} must be positive")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A YAML value as its field's type (YAML 1.1 reads ``1e-4`` as a string), else an error."""
    if typing.get_origin(hint) is list:
        if isinstance(value, dict) and typing.get_args(hint)[0] is str:
            value = [f"{k}={v}" for k, v in value.items()]  # a YAML mapping of renames
        if not isinstance(value, list):
            raise ValueError(f"{name}={value!r} must be a list")
        return [_coerce(name, v, typing.get_args(hint)[0]) for v in value]
    if isinstance(value, bool) and hint is not bool:
        raise ValueError(f"{name}={value!r} must be of type {getattr(hint, '__name__', hint)}")
    if hint is float and isinstance(value, int | str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} must be a number") from None
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise ValueError(f"{name}={value!r} must be of type {hint.__name__}")
    return value


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build ``cls`` from a YAML file and keyword overrides, then validate it."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_config_file(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    old = [name for name in unknown if name in renamed_fields(cls)]
    if old:
        raise _renamed_error(cls, old)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; see --help for the fields")
    cfg = cls(**{k: _coerce(k, v, _hints(cls)[k]) for k, v in values.items()})
    cfg.validate()  # type: ignore[attr-defined]
    return cfg


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


_OLD_FLAG = "renamed:"


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field`` option per dataclass field, defaulting to None (= keep YAML/default).

    Old field names get hidden options that only report the rename (see :func:`config_from_args`).
    """
    parser.add_argument("--config", help="YAML file of fields; command-line options override it.")
    for old in renamed_fields(cls):
        flag = "--" + old.replace("_", "-")
        parser.add_argument(flag, dest=_OLD_FLAG + old, nargs="*", help=argparse.SUPPRESS)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        origin = typing.get_origin(hint)
        if origin in (list, types.GenericAlias) or origin is list:
            (item,) = typing.get_args(hint)
            parser.add_argument(flag, dest=f.name, type=item, nargs="*", help=help_text)
        elif hint is bool:  # '--flag' alone means true
            parser.add_argument(
                flag, dest=f.name, type=_parse_bool, nargs="?", const=True, metavar="BOOL",
                help=help_text,
            )  # fmt: skip
        elif "const" in f.metadata:
            const = f.metadata["const"]
            parser.add_argument(
                flag, dest=f.name, type=hint, nargs="?", const=const, help=help_text
            )
        else:
            parser.add_argument(flag, dest=f.name, type=hint, help=help_text)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    old = [
        k[len(_OLD_FLAG) :]
        for k, v in vars(args).items()
        if k.startswith(_OLD_FLAG) and v is not None
    ]
    if old:
        raise _renamed_error(cls, old)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return load_config(cls, getattr(args, "config", None), **overrides)
