"""The judge and the worker of the code reward: one program, started in two sandboxes.

It runs inside the sandbox under ``python -I -S`` with the standard library only (with
:mod:`.code_wire`, loaded beside it by :func:`maskgrpo.rewards.code.judged_programs`); it never
imports maskgrpo. :class:`~maskgrpo.rewards.code.CodeExecutionReward` starts it twice per
completion, in two separate sandboxes joined only by two pipes
(:meth:`maskgrpo.sandbox.Sandbox.run_pair`):

* ``worker`` reads the program and the setup code on stdin, runs them as ``__main__``, and
  answers the judge's requests about the names they defined;
* ``judge`` reads the tests on stdin, runs each test in a fresh module in which the program's
  names are stand-ins (:class:`Remote`) that forward calls to the worker, and writes ``PASS i`` or
  ``FAIL i`` for test ``i`` on its stdout, the verdict channel. Whatever the tests print goes to
  stderr.

Results reach the judge as plain data (:mod:`.code_wire`); anything else stays in the worker
behind a :class:`Remote`, which can be called, iterated, indexed and asked for attributes, ``len``
and ``str``, but has no truth value and cannot be compared or hashed by content. So a comparison
in a test is always the judge's own comparison of plain values: the program's ``__eq__``,
``__bool__``, ``__contains__`` or ordering methods never decide a test.

Names in a test resolve like this: a builtin name is the judge's builtin (unless the test uses no
other name of the program, as in MBPP's ``def sum(a, b)`` tests); a standard-library module name
whose attribute the test reads (``sys.getsizeof``) is the judge's own import of it, whatever the
program defined under that name; any other name is the program's if it defined one, else the
judge's import of a top-level standard-library module of that name.

A worker that breaks the protocol, dies or stalls fails every test it has not passed yet.
"""

from __future__ import annotations

import builtins
import os
import sys
import types

from .code_wire import ProtocolError, decode, encode, loads, recv, send

TYPE_CHECKING = False  # mypy reads the block below; importing typing would cost ~10 ms a process
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MODULE = ["m"]  # the worker's answer for a name bound to a module


class ProgramError(Exception):
    """An exception raised in the program whose type is not a builtin ``Exception``."""


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
