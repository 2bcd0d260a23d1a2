"""The judge and the worker of the code reward, as one standalone program.

This file runs inside the sandbox under ``python -I -S`` with the standard library only; it never
imports maskgrpo. :class:`~maskgrpo.rewards.code.CodeExecutionReward` starts it twice per
completion, in two separate sandboxes joined only by two pipes
(:meth:`maskgrpo.sandbox.Sandbox.run_pair`):

* ``worker`` reads ``{"program", "setup"}`` on stdin, runs the program and then the setup code
  as ``__main__``, and answers the judge's requests about the names they defined;
* ``judge`` reads ``{"tests"}`` on stdin, runs each test in a fresh module in which the
  program's names are stand-ins (:class:`Remote`) that forward calls to the worker, and writes
  ``PASS i`` or ``FAIL i`` for test ``i`` on its stdout, the verdict channel. Whatever the tests
  print goes to stderr.

Values cross the pipes as data (:func:`encode`, :func:`decode`): ``None``, ``bool``, ``int``,
``float``, ``complex``, ``str``, ``bytes``, ``bytearray``, ``Fraction``, ``Decimal`` and lists,
tuples, sets, frozensets and dicts of those. A subclass crosses as its base type's value (a
``Counter`` arrives as a ``dict``, an ``int`` subclass as its ``int``; a namedtuple as a
namedtuple the receiver defines with the same name and fields); anything else stays in the
worker and the judge holds a :class:`Remote` for it, which can be called, iterated, indexed and
asked for attributes, ``len`` and ``str``, but has no truth value and cannot be compared or hashed
by content. So a comparison in a test is always the judge's own comparison of plain values: the
program's ``__eq__``, ``__bool__``, ``__contains__`` or ordering methods never decide a test.

Names in a test resolve like this: a builtin name is the judge's builtin (unless the test uses no
other name of the program, as in MBPP's ``def sum(a, b)`` tests); a standard-library module name
whose attribute the test reads (``sys.getsizeof``) is the judge's own import of it, whatever the
program defined under that name; any other name is the program's if it defined one, else the
judge's import of a top-level standard-library module of that name.

Frames on the pipes are an 8-byte big-endian length followed by that many bytes of a small
serialisation of nested lists of ``None``, ``bool``, ``int`` and ``str`` (:func:`dumps`,
:func:`loads`; the standard ``json`` module would add ~9 ms of import time to every process), at
most :data:`MAX_FRAME` bytes. A worker that breaks the protocol, dies or stalls fails every test
it has not passed yet.
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
MODULE = ["m"]  # the worker's answer for a name bound to a module


class ProtocolError(Exception):
    """The other side sent something this protocol does not allow."""


class ProgramError(Exception):
    """An exception raised in the program whose type is not a builtin ``Exception``."""


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


# ---- the judge's side --------------------------------------------------------------------------


class Link:
    """The judge's end of the pipes: one request, one reply; broken for good after a fault."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.broken = ""

    def exchange(self, *message: Any) -> Any:
        """Send ``message``, return the worker's raw reply; a fault breaks the link."""
        if self.broken:
            raise ProgramError(f"the program is gone: {self.broken}")
        try:
            send(self.write_fd, list(message))
            reply = recv(self.read_fd)
            if not isinstance(reply, list) or not reply or reply[0] not in ("ok", "raise"):
                raise ProtocolError(f"unexpected reply {str(reply)[:80]}")
        except (OSError, EOFError, ProtocolError) as err:
            self.broken = f"{type(err).__name__}: {err}"
            raise ProgramError(f"the program is gone: {self.broken}") from None
        if reply[0] == "raise":
            raise _exception(reply[1:], may_stop=message[0] == "next")
        if len(reply) != 2:
            raise ProgramError(f"malformed reply {str(reply)[:80]}")
        return reply[1]

    def request(self, *message: Any) -> Any:
        """Send ``message`` and decode the value the worker answers."""
        return decode(self.exchange(*message), self.remote)

    def remote(self, handle: list[Any]) -> Remote:
        if len(handle) != 3 or type(handle[1]) is not int or type(handle[2]) is not str:
            raise ProtocolError(f"bad handle {str(handle)[:80]}")
        return Remote(self, handle[1], handle[2])


def _exception(info: list[Any], may_stop: bool) -> BaseException:
    """The builtin ``Exception`` type the program raised (by name), else :class:`ProgramError`.

    ``StopIteration`` passes only as the answer to ``next``: raised from a call it would end
    the test's own loop early (``all(map(f, cases))`` would hold with no case checked).
    """
    name, message = (str(info[0]), str(info[1])) if len(info) == 2 else ("?", str(info))
    cls = getattr(builtins, name, None)
    if name in ("StopIteration", "StopAsyncIteration") and not may_stop:
        cls = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # e.g. UnicodeDecodeError needs five arguments
            pass
    return ProgramError(f"{name}: {message}")


class Remote:
    """Stand-in for an object that lives in the worker (a function, a class, an instance).

    It forwards calls, attribute reads, indexing, iteration, ``len`` and ``str``; it has no
    truth value and refuses comparisons, so the program's own methods cannot decide a test.
    """

    __slots__ = ("_link", "_id", "_type")

    def __init__(self, link: Link, handle: int, type_name: str) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_id", handle)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, *args: Any) -> Any:
        return self._link.request(op, self._id, *args)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        encoded = [encode(a, _export) for a in args]
        named = [[k, encode(v, _export)] for k, v in kwargs.items()]
        return self._ask("call", encoded, named)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError(f"cannot set {name!r} on an object of the program")

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", encode(key, _export))

    def __iter__(self) -> Any:
        return self._ask("iter")

    def __next__(self) -> Any:
        return self._ask("next")

    def __len__(self) -> int:
        n = self._ask("len")
        if type(n) is not int:
            raise TypeError(f"len() of a program object gave {type(n).__name__}")
        return n

    def __str__(self) -> str:
        text = self._ask("str")
        return text if type(text) is str else f"<{self._type} object of the program>"

    def __repr__(self) -> str:
        return f"<{self._type} object of the program>"

    def __bool__(self) -> bool:
        raise TypeError(
            f"a {self._type} object returned by the program has no truth value here; "
            "tests judge plain values (bool, int, str, containers)"
        )

    def _refuse(self, other: Any) -> bool:
        raise TypeError(f"cannot compare a {self._type} object of the program by content")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:
        return id(self)


def _export(value: Any) -> list[Any]:
    """Encode a judge-side object for the worker: only stand-ins of its own objects qualify."""
    if isinstance(value, Remote):
        return ["h", object.__getattribute__(value, "_id")]
    raise TypeError(f"cannot pass a {type(value).__name__} to the program; pass plain data")


def free_names(source: str) -> set[str]:
    """Global names ``source`` reads without defining them at its top level."""
    import symtable

    names: set[str] = set()
    stack = [(symtable.symtable(source, "<test>", "exec"), True)]
    while stack:
        table, top = stack.pop()
        for sym in table.get_symbols():
            if not sym.is_referenced():
                continue
            if top and not (sym.is_assigned() or sym.is_imported()):
                names.add(sym.get_name())
            elif not top and sym.is_global():
                names.add(sym.get_name())
        stack += [(child, False) for child in table.get_children()]
    return names


def module_attribute_names(source: str, names: set[str]) -> set[str]:
    """Those of ``names`` that are standard-library modules and that ``source`` reads an
    attribute of (``sys.getsizeof``): they mean the module, whatever the program calls so."""
    candidates = names & set(getattr(sys, "stdlib_module_names", ()))
    if not candidates:
        return set()
    import ast

    return {
        node.value.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in candidates
    }


def _stdlib_module(name: str) -> types.ModuleType | None:
    if not name.isidentifier() or name.startswith("_"):
        return None
    import importlib
    import importlib.util

    try:
        return importlib.import_module(name) if importlib.util.find_spec(name) else None
    except Exception:  # a module that fails to import is simply not bound
        return None


def bind(names: set[str], link: Link) -> dict[str, Any]:
    """The global bindings of a test that reads ``names`` (see the module docstring)."""
    reply = link.exchange("names", sorted(names)) if names else []
    try:
        answers = {str(name): value for name, value in reply}
    except (TypeError, ValueError):
        raise ProgramError("malformed answer to a names request") from None
    own = [n for n in answers if n in names and not hasattr(builtins, n) and answers[n] != MODULE]
    bound: dict[str, Any] = {}
    for name in sorted(names):
        if name in answers and answers[name] != MODULE:
            if hasattr(builtins, name) and own:
                continue  # the test uses the program's functions; builtins stay the judge's
            bound[name] = decode(answers[name], link.remote)
        elif not hasattr(builtins, name):
            module = _stdlib_module(name)
            if module is not None:
                bound[name] = module
    return bound


def run_test(source: str, index: int, link: Link) -> None:
    """Run one test in a fresh ``__main__`` module; raises when it fails."""
    code = compile(source, f"test_{index}.py", "exec")
    module = types.ModuleType("__main__")
    names = free_names(source)
    modules = module_attribute_names(source, names)
    module.__dict__.update(bind(names - modules, link))
    for name in modules:
        module.__dict__[name] = _stdlib_module(name)
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


def judge(read_fd: int, write_fd: int) -> None:
    """Run the tests of stdin against the worker; one ``PASS i``/``FAIL i`` line per test."""
    tests = loads(sys.stdin.buffer.read())
    verdict = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the tests print goes to stderr, never to the verdict channel
    link = Link(read_fd, write_fd)
    try:
        start = recv(read_fd)
        ready = start == ["ready"]
        if not ready:
            print(f"program failed: {str(start)[:2000]}", file=sys.stderr)
    except (OSError, EOFError, ProtocolError) as err:
        ready = False
        print(f"program failed: {type(err).__name__}: {err}", file=sys.stderr)
    for index, source in enumerate(tests):
        passed = False
        if ready:
            try:
                run_test(source, index, link)
                passed = True
            except BaseException as err:  # a failing test may raise anything, SystemExit too
                print(f"test {index} failed: {type(err).__name__}: {err}"[:2000], file=sys.stderr)
        verdict.write(f"{'PASS' if passed else 'FAIL'} {index}\n")
        verdict.flush()


# ---- the worker's side -------------------------------------------------------------------------


class Worker:
    """Holds the program's namespace and the objects the judge has handles for."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.objects: list[Any] = []

    def keep(self, obj: Any) -> list[Any]:
        self.objects.append(obj)
        return ["h", len(self.objects) - 1, type(obj).__name__[:100]]

    def resolve(self, handle: list[Any]) -> Any:
        return self.objects[handle[1]]

    def answer(self, message: list[Any]) -> Any:
        op, args = message[0], message[1:]
        if op == "names":
            return [
                [name, MODULE if isinstance(self.namespace[name], types.ModuleType)
                 else encode(self.namespace[name], self.keep)]
                for name in args[0] if name in self.namespace
            ]  # fmt: skip
        target = self.objects[args[0]]
        if op == "call":
            call_args = [decode(a, self.resolve, in_worker=True) for a in args[1]]
            call_kwargs = {k: decode(v, self.resolve, in_worker=True) for k, v in args[2]}
            value = target(*call_args, **call_kwargs)
        elif op == "getattr":
            value = getattr(target, args[1])
        elif op == "getitem":
            value = target[decode(args[1], self.resolve, in_worker=True)]
        else:
            builtins_by_op: dict[str, Callable[[Any], Any]] = {
                "iter": iter,
                "next": next,
                "len": len,
                "str": str,
            }
            value = builtins_by_op[op](target)
        return encode(value, self.keep)


def worker(read_fd: int, write_fd: int) -> None:
    """Run the program of stdin as ``__main__``, then answer the judge until it hangs up."""
    program, setup = loads(sys.stdin.buffer.read())
    sys.stdin = open(os.devnull, encoding="utf-8")
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    try:
        source = program + "\n" + setup
        exec(compile(source, "solution.py", "exec"), module.__dict__)
    except BaseException as err:
        send(write_fd, ["failed", f"{type(err).__name__}: {err}"[:2000]])
        return
    send(write_fd, ["ready"])
    server = Worker(module.__dict__)
    while True:
        try:
            message = recv(read_fd)
        except EOFError:
            return
        try:
            reply = ["ok", server.answer(message)]
        except BaseException as err:  # the program's exceptions, SystemExit included
            reply = ["raise", type(err).__name__, _describe(err)]
        try:
            send(write_fd, reply)
        except ProtocolError as err:  # a value too large to send
            send(write_fd, ["raise", "OverflowError", str(err)])


def _describe(err: BaseException) -> str:
    try:
        return str(err)[:2000]
    except Exception:
        return "<unprintable>"


def main(argv: list[str]) -> None:
    role, read_fd, write_fd = argv[0], int(argv[1]), int(argv[2])
    {"judge": judge, "worker": worker}[role](read_fd, write_fd)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter shutdown: the verdict is written and flushed


if __name__ == "__main__":
    main(sys.argv[1:])
