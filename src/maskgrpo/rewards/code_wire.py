"""The code reward's wire format and value codec, shared by its judge and its worker.

Frames on the pipes are an 8-byte big-endian length followed by that many bytes of a small
serialisation of nested lists of ``None``, ``bool``, ``int`` and ``str`` (:func:`dumps`,
:func:`loads`; the standard ``json`` module would add ~9 ms of import time to every sandboxed
process), at most :data:`MAX_FRAME` bytes.

Values cross as data (:func:`encode`, :func:`decode`): ``None``, ``bool``, ``int``, ``float``,
``complex``, ``str``, ``bytes``, ``bytearray``, ``Fraction``, ``Decimal`` and lists, tuples, sets,
frozensets and dicts of those, nested at most :data:`MAX_DEPTH` deep. A subclass crosses as its
base type's value (a ``Counter`` arrives as a ``dict``, an ``int`` subclass as its ``int``; a
namedtuple as a namedtuple the receiver defines with the same name and fields); a builtin or a
module's class crosses by name and is the receiver's own; anything else is left to ``keep``,
which the worker answers with a handle. Everything malformed is a :class:`ProtocolError`.

Like :mod:`.code_harness`, this file runs inside the sandbox with the standard library only.
"""

from __future__ import annotations

import builtins
import os
import sys
import types

TYPE_CHECKING = False  # mypy reads the block below; importing typing would cost ~10 ms a process
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    Keep = Callable[[Any], list[Any]]
    Resolve = Callable[[list[Any]], Any]

MAX_FRAME = 64 * 1024 * 1024
MAX_DEPTH = 200


class ProtocolError(Exception):
    """The other side sent something this protocol does not allow."""


# ---- frames ------------------------------------------------------------------------------------


def dumps(message: Any) -> bytes:
    """Serialise nested lists of ``None``, ``bool``, ``int`` and ``str``."""
    out: list[bytes] = []
    _dump(message, out)
    return b"".join(out)


def _dump(obj: Any, out: list[bytes]) -> None:
    if obj is None:
        out.append(b"N")
    elif obj is True or obj is False:
        out.append(b"T" if obj else b"F")
    elif type(obj) is int:
        out.append(b"i%d;" % obj)
    elif type(obj) is str:
        data = obj.encode("utf-8", "surrogatepass")
        out += [b"s%d:" % len(data), data]
    elif type(obj) is list:
        out.append(b"l%d:" % len(obj))
        for item in obj:
            _dump(item, out)
    else:
        raise TypeError(f"cannot serialise a {type(obj).__name__}")


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`; raises :class:`ProtocolError` on anything malformed."""
    try:
        value, end = _load(data, 0, 0)
    except (ValueError, IndexError, UnicodeDecodeError, RecursionError) as err:
        raise ProtocolError(f"malformed message: {err}") from None
    if end != len(data):
        raise ProtocolError("trailing bytes after a message")
    return value


def _load(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 3 * MAX_DEPTH:
        raise ValueError("nested too deeply")
    tag = data[pos]
    pos += 1
    if tag in b"NTF":
        return {78: None, 84: True, 70: False}[tag], pos
    end = data.index(b";" if tag == 105 else b":", pos)
    if end - pos > (4000 if tag == 105 else 20):
        raise ValueError("number too long")
    number = int(data[pos:end])
    pos = end + 1
    if tag == 105:  # i
        return number, pos
    if not 0 <= number <= len(data) - pos:
        raise ValueError("length out of range")
    if tag == 115:  # s
        return data[pos : pos + number].decode("utf-8", "surrogatepass"), pos + number
    if tag != 108:  # l
        raise ValueError(f"unknown tag {tag}")
    items = []
    for _ in range(number):
        item, pos = _load(data, pos, depth + 1)
        items.append(item)
    return items, pos


def send(fd: int, message: Any) -> None:
    """Write one frame holding ``message`` to ``fd``."""
    body = dumps(message)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_FRAME}")
    data = memoryview(len(body).to_bytes(8, "big") + body)
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, n: int) -> bytes:
    parts: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def recv(fd: int) -> Any:
    """Read one frame from ``fd`` and return its message."""
    size = int.from_bytes(_read_exact(fd, 8), "big")
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return loads(_read_exact(fd, size))


# ---- values ------------------------------------------------------------------------------------


def encode(value: Any, keep: Keep) -> list[Any]:
    """``value`` as tagged JSON data; ``keep(obj)`` encodes what is not data (or raises)."""
    return _encode(value, keep, set(), 0)


def _encode(value: Any, keep: Keep, active: set[int], depth: int) -> list[Any]:
    if value is None:
        return ["N"]
    if isinstance(value, bool):
        return ["b", value is True]
    if isinstance(value, int):
        return ["i", format(int.__int__(value), "x")]
    if isinstance(value, float):
        return ["f", float.hex(value)]
    if isinstance(value, complex):
        return ["c", float.hex(value.real), float.hex(value.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, bytes | bytearray):
        return ["Y" if isinstance(value, bytearray) else "y", bytes(value).hex()]
    number = _stdlib_number(value)
    if number is not None:
        return number
    named = _named_object(value)
    if named is not None:
        return named
    tag = _container_tag(value)
    if tag is None or depth >= MAX_DEPTH or id(value) in active:
        return keep(value)
    active.add(id(value))
    try:
        fields = _namedtuple_fields(value) if tag == "t" else None
        if fields is not None:
            items = [_encode(v, keep, active, depth + 1) for v in _members(value, tag)]
            return ["T", type(value).__name__, fields, items]
        if tag == "d":
            items = [[_encode(k, keep, active, depth + 1), _encode(v, keep, active, depth + 1)]
                     for k, v in dict.items(value)]  # fmt: skip
            return ["d", items]
        return [tag, [_encode(v, keep, active, depth + 1) for v in _members(value, tag)]]
    finally:
        active.discard(id(value))


def _namedtuple_fields(value: Any) -> list[str] | None:
    fields = getattr(type(value), "_fields", None)
    if isinstance(fields, tuple) and all(isinstance(f, str) for f in fields):
        return list(fields)
    return None


def _container_tag(value: Any) -> str | None:
    for cls, tag in ((list, "l"), (tuple, "t"), (dict, "d"), (set, "S"), (frozenset, "F")):
        if isinstance(value, cls):
            return tag
    return None


def _members(value: Any, tag: str) -> Iterator[Any]:
    """The items of a list, tuple, set or frozenset (subclass), by the base type's iteration."""
    if tag == "l":
        return list.__iter__(value)
    if tag == "t":
        return tuple.__iter__(value)
    return set.__iter__(value) if tag == "S" else frozenset.__iter__(value)


def _stdlib_number(value: Any) -> list[Any] | None:
    """``Fraction`` and ``Decimal`` (checked by exact type, without importing their modules)."""
    cls = type(value)
    if cls.__module__ == "fractions" and cls.__name__ == "Fraction":
        return ["q", format(value.numerator, "x"), format(value.denominator, "x")]
    if cls.__module__ in ("decimal", "_decimal", "_pydecimal") and cls.__name__ == "Decimal":
        return ["D", str(value)]
    return None


def _named_object(value: Any) -> list[Any] | None:
    """A builtin (``int``, ``len``) by name, or a module-level object of an imported module."""
    if not isinstance(value, type | types.BuiltinFunctionType | types.FunctionType):
        return None
    name = getattr(value, "__qualname__", None)
    if not isinstance(name, str):
        return None
    if getattr(builtins, name, None) is value:
        return ["B", name]
    module = getattr(value, "__module__", None)
    if isinstance(module, str) and module != "__main__":
        if getattr(sys.modules.get(module), name, None) is value:
            return ["M", module, name]
    return None


# Builtins the judge accepts by name besides types: functions without side effects.
JUDGE_BUILTINS = frozenset(
    "abs all any ascii bin callable chr divmod format hash hex isinstance issubclass iter len "
    "max min next oct ord pow repr round sorted sum Ellipsis NotImplemented".split()
)


def _resolve_named(tag: str, rest: list[Any], in_worker: bool) -> Any:
    """The receiver's own object for a ``B`` (builtin) or ``M`` (module attribute) value.

    The worker resolves anything (it may import a module for it). The judge takes only builtin
    types and :data:`JUDGE_BUILTINS`, and classes of modules it has already imported.
    """
    if tag == "B":
        name = _typed(str)(rest[0])
        value = getattr(builtins, name)
        if not in_worker and not isinstance(value, type) and name not in JUDGE_BUILTINS:
            raise ValueError(f"the judge does not accept builtins.{name} from the program")
        return value
    module, name = _typed(str)(rest[0]), _typed(str)(rest[1])
    if in_worker and module not in sys.modules:
        import importlib

        importlib.import_module(module)
    value = getattr(sys.modules[module], name)
    if not in_worker and not isinstance(value, type):
        raise ValueError(f"the judge accepts only classes by name, not {module}.{name}")
    return value


def decode(data: Any, resolve: Resolve, depth: int = 0, in_worker: bool = False) -> Any:
    """Inverse of :func:`encode`; ``resolve(["h", ...])`` turns a handle into an object.

    A ``B``/``M`` value names a builtin or a module attribute of the receiver (see
    :func:`_resolve_named`; ``in_worker`` tells which side decodes).
    """
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ProtocolError(f"not an encoded value: {str(data)[:80]}")
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    tag, rest = data[0], data[1:]
    try:
        if tag in _SCALARS:
            return _SCALARS[tag](*rest)
        if tag == "h":
            return resolve(data)
        if tag in ("B", "M"):
            return _resolve_named(tag, rest, in_worker)
        if tag == "T":
            name, fields, items = rest
            values = [decode(v, resolve, depth + 1, in_worker) for v in items]
            return _namedtuple_type(_typed(str)(name), tuple(fields))(*values)
        (items,) = rest
        if tag == "d":
            return {
                decode(k, resolve, depth + 1, in_worker): decode(v, resolve, depth + 1, in_worker)
                for k, v in items
            }
        build = {"l": list, "t": tuple, "S": set, "F": frozenset}[tag]
        return build(decode(v, resolve, depth + 1, in_worker) for v in items)
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError, ImportError) as err:
        raise ProtocolError(f"bad encoded value {str(data)[:80]}: {err}") from None


_NAMEDTUPLES: dict[tuple[str, tuple[str, ...]], type] = {}


def _namedtuple_type(name: str, fields: tuple[str, ...]) -> type:
    """The receiver's own namedtuple class with ``name`` and ``fields`` (no sender methods)."""
    key = (name, fields)
    if key not in _NAMEDTUPLES:
        from collections import namedtuple

        _NAMEDTUPLES[key] = namedtuple(name, fields)  # type: ignore[misc]
    return _NAMEDTUPLES[key]


def _typed(cls: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not cls:
            raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        return value

    return check


def _fraction(num: str, den: str) -> Any:
    from fractions import Fraction

    return Fraction(int(num, 16), int(den, 16))


def _decimal(text: str) -> Any:
    from decimal import Decimal

    return Decimal(_typed(str)(text))


_SCALARS: dict[str, Callable[..., Any]] = {
    "N": lambda: None,
    "b": _typed(bool),
    "i": lambda s: int(_typed(str)(s), 16),
    "f": lambda s: float.fromhex(_typed(str)(s)),
    "c": lambda re, im: complex(float.fromhex(_typed(str)(re)), float.fromhex(_typed(str)(im))),
    "s": _typed(str),
    "y": lambda s: bytes.fromhex(_typed(str)(s)),
    "Y": lambda s: bytearray.fromhex(_typed(str)(s)),
    "q": _fraction,
    "D": _decimal,
}
