"""The code reward's judge/worker harness: its wire format, its value codec, name binding, and
real programs judged through the sandbox (generators, classes, setup objects, exceptions, a
program that dies or hangs half-way)."""

from __future__ import annotations

import collections
import math
import os
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from maskgrpo.rewards.code import (
    CodeExecutionReward,
    code_format_reward,
    diagnose,
    judged_programs,
)
from maskgrpo.rewards.code_harness import free_names
from maskgrpo.rewards.code_wire import MAX_DEPTH, ProtocolError, decode, dumps, encode, loads
from maskgrpo.sandbox import Sandbox, sandbox_available

needs_bwrap = pytest.mark.skipif(not sandbox_available(), reason="bubblewrap sandbox not usable")


def test_wire_format_round_trips() -> None:
    messages: list[Any] = [
        None,
        True,
        [],
        ["ok", ["i", "-1f"], [None, False, 0, -(10**30)], "π \ud800 \x00"],
        [[[["deep"]]]],
    ]
    for message in messages:
        assert loads(dumps(message)) == message


@pytest.mark.parametrize(
    "data",
    [b"", b"l2:N", b"s5:ab", b"x", b"i12", b"NN", b"l-1:", b"s99999999999999999999999:", b"i1_0;"],
)
def test_malformed_messages_are_protocol_errors(data: bytes) -> None:
    if data == b"i1_0;":  # Python's int() accepts underscores; harmless, but it must parse
        assert loads(data) == 10
        return
    with pytest.raises(ProtocolError):
        loads(data)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ProtocolError):
        loads(b"l1:" * (3 * MAX_DEPTH + 5) + b"N")


def _round_trip(value: Any) -> Any:
    handles: list[Any] = []

    def keep(obj: Any) -> list[Any]:
        handles.append(obj)
        return ["h", len(handles) - 1, type(obj).__name__]

    return decode(loads(dumps(encode(value, keep))), lambda h: ("handle", handles[h[1]]))


def test_plain_values_cross_exactly() -> None:
    values = [
        None,
        True,
        False,
        0,
        -(2**200),
        0.1,
        -0.0,
        math.inf,
        1 + 2j,
        "text",
        b"\x00\xff",
        bytearray(b"ab"),
        Fraction(1, 3),
        Decimal("1.10"),
        [1, (2, 3), {4}, frozenset({5}), {"k": [6]}, {(1, 2): None}],
    ]
    for value in values:
        back = _round_trip(value)
        assert back == value and type(back) is type(value), value
    nan = _round_trip(math.nan)
    assert isinstance(nan, float) and math.isnan(nan)


def test_subclasses_cross_as_their_base_type() -> None:
    class Sneaky(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    point = collections.namedtuple("point", "x y")
    assert type(_round_trip(Sneaky(3))) is int and _round_trip(Sneaky(3)) == 3
    counts = _round_trip(collections.Counter("aab"))
    assert type(counts) is dict and counts == {"a": 2, "b": 1}
    crossed = _round_trip(point(1, 2))
    assert crossed == (1, 2) and crossed.y == 2 and type(crossed) is not point
    assert _round_trip(collections.OrderedDict(a=1)) == {"a": 1}


def test_everything_else_stays_behind_a_handle() -> None:
    marker = object()
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert _round_trip(marker) == ("handle", marker)
    assert _round_trip([marker, 2]) == [("handle", marker), 2]
    assert _round_trip(cyclic)[1] == ("handle", cyclic)
    assert _round_trip(int) is int and _round_trip(len) is len  # builtins by name
    assert _round_trip(collections.OrderedDict) is collections.OrderedDict  # a module's class
    for unsafe in (exec, eval, open, __import__, getattr, os.system):  # never given to tests
        with pytest.raises(ProtocolError):
            _round_trip(unsafe)


def test_free_names_of_a_humaneval_check() -> None:
    test = (
        "import math\nMETADATA = {}\n\ndef check(candidate):\n"
        "    assert abs(candidate(1) - helper(2)) < 1e-6\n"
        "    assert [x for x in range(3) if x in lookup]\n\ncheck(entry)\n"
    )
    assert free_names(test) == {"abs", "helper", "range", "lookup", "entry"}


def _reward() -> CodeExecutionReward:
    return CodeExecutionReward(Sandbox(timeout_s=5.0), max_workers=4)


CASES: dict[str, tuple[str, list[str], str]] = {
    # name: (program, tests, setup)
    "generator": (
        "def evens(n):\n    yield from range(0, n, 2)\n",
        ["assert list(evens(5)) == [0, 2, 4]", "assert next(evens(3)) == 0",
         "assert sum(evens(7)) == 12", "assert 4 in evens(5)"],
        "",
    ),
    "class_and_methods": (
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "    def total(self):\n        return self.a + self.b\n"
        "    def __str__(self):\n        return f'({self.a}, {self.b})'\n",
        ["assert Pair(1, 2).total() == 3", "assert Pair(1, 2).a == 1", "assert str(Pair(3, 4)) == '(3, 4)'"],
        "",
    ),
    "setup_objects": (
        "class Node:\n    def __init__(self, v):\n        self.v, self.left = v, None\n"
        "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n",
        ["assert depth(root) == 2", "assert depth(None) == 0"],
        "root = Node(1)\nroot.left = Node(2)\n",
    ),
    "expected_exception": (
        "def inverse(x):\n    if x == 0:\n        raise ZeroDivisionError('zero')\n    return 1 / x\n",
        ["try:\n    inverse(0)\nexcept ZeroDivisionError:\n    pass\nelse:\n    raise AssertionError",
         "assert inverse(4) == 0.25"],
        "",
    ),
    "builtin_named_function": (
        "def sum(a, b):\n    return a + b\n",
        ["assert sum(10, 15) == 25"],
        "",
    ),
    "module_of_the_program": (
        "import sys\ndef size(t):\n    return sys.getsizeof(t)\n",
        ["assert size((1, 2)) == sys.getsizeof((1, 2))"],
        "",
    ),
    "builtin_type_argument": (
        "def drop(xs, kind):\n    return [x for x in xs if not isinstance(x, kind)]\n",
        ["assert drop((1, 'a', 2.5), int) == ['a', 2.5]", "assert drop([1, 'a'], str) == [1]"],
        "",
    ),
    "library_types": (
        "from collections import Counter, namedtuple\nfrom fractions import Fraction\n"
        "P = namedtuple('P', 'x y')\n"
        "def count(s):\n    return Counter(s)\n"
        "def half(n):\n    return Fraction(n, 2)\n"
        "def point():\n    return P(1, 2)\n",
        ["assert count('aab') == {'a': 2, 'b': 1}", "assert half(3) == 1.5",
         "assert point() == (1, 2)", "assert point().x == 1"],
        "",
    ),
    "constants_and_identity": (
        "LIMIT = 3\ndef nothing():\n    return None\ndef yes():\n    return True\n",
        ["assert LIMIT == 3", "assert nothing() is None", "assert yes() is True"],
        "",
    ),
    "keyword_arguments_and_recursion": (
        "import sys\nsys.setrecursionlimit(10000)\n"
        "def fact(n, acc=1):\n    return acc if n <= 1 else fact(n - 1, acc=acc * n)\n",
        ["assert fact(5) == 120", "assert fact(3000) > 10 ** 100", "assert fact(n=4) == 24"],
        "",
    ),
}  # fmt: skip


@needs_bwrap
def test_real_programs_are_judged_like_python_would() -> None:
    names = list(CASES)
    completions = [f"```python\n{CASES[n][0]}```" for n in names]
    scores = _reward()(
        [""] * len(names),
        completions,
        tests=[CASES[n][1] for n in names],
        test_setup=[CASES[n][2] for n in names],
    )
    assert dict(zip(names, scores, strict=True)) == dict.fromkeys(names, 2.0)


@needs_bwrap
def test_harness_runs_from_source_and_compiled() -> None:
    sandbox = Sandbox(timeout_s=5.0)
    for python in (None, sandbox.python):  # another interpreter gets the source
        judge, worker = judged_programs(
            "def f():\n    return 1\n", ["assert f() == 1"], python=python
        )
        assert isinstance(judge.code, str if python is None else bytes)
        verdict, program = sandbox.run_pair(judge, worker)
        assert verdict.stdout == "PASS 0\n", diagnose((verdict, program))


@needs_bwrap
def test_partial_credit_when_the_program_dies_or_hangs_half_way() -> None:
    dies = "import os\ndef f(x):\n    if x == 2:\n        os._exit(0)\n    return x\n"
    hangs = "def f(x):\n    while x == 2:\n        pass\n    return x\n"
    tests = ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"]
    reward = CodeExecutionReward(Sandbox(timeout_s=2.0), max_workers=2)
    scores = reward(["", ""], [dies, hangs], tests=[tests, tests])
    assert scores == [2.0 / 3, 2.0 / 3]


@needs_bwrap
def test_objects_of_the_program_have_no_truth_value_in_tests() -> None:
    program = (
        "class Yes:\n    def __bool__(self):\n        return True\ndef ok():\n    return Yes()\n"
    )
    assert _reward()([""], [program], tests=[["assert ok()"]]) == [0.0]


@needs_bwrap
def test_bad_rows_are_unscorable_and_do_not_touch_their_neighbours() -> None:
    good = "def f():\n    return 1\n"
    completions: list[Any] = [good, None, b"bytes", 7, good, good]
    tests: list[Any] = [["assert f() == 1"]] * 4 + [[], "assert f() == 1"]
    assert _reward()([""] * 6, completions, tests=tests) == [2.0, None, None, None, None, None]
    assert code_format_reward([""] * 3, ["```python\nx = 1\n```", None, 5]) == [0.5, None, None]
