"""Programs that try to score on the code reward without solving the task must score 0.

Each attack below targets a task it does not solve; the correct solution of every task is
scored alongside as a control and must get full marks. The attacks cover objects whose
``__eq__`` (or ``__contains__``, ordering, a subclass of the expected type) always agrees,
forging the harness's pass marker (from its globals, its frames, a thread, ``atexit``, raw
descriptors), rewriting or reading the harness's tests, patching ``builtins``, ``sys.modules``
and library helpers, shadowing builtins, ``SystemExit`` from ``__eq__``, and garbage on the
harness's pipes. This file uses only the reward's public API.
"""

from __future__ import annotations

import pytest

from maskgrpo.rewards.code import CodeExecutionReward
from maskgrpo.sandbox import Sandbox, sandbox_available

pytestmark = pytest.mark.skipif(not sandbox_available(), reason="bubblewrap sandbox not usable")

TASKS: dict[str, list[str]] = {
    "add": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert 0 == add(-1, 1)"],
    "add_check": [
        "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(5, 5) == 10\n"
        "    assert candidate(0, 0) == 0\n\ncheck(add)\n"
    ],
    "evens": ["assert evens([1, 2, 3, 4]) == [2, 4]", "assert evens([5]) == []"],
    "truncate": [
        "assert abs(truncate(3.5) - 0.5) < 1e-6",
        "assert abs(truncate(1.25) - 0.25) < 1e-6",
    ],
    "area": [
        "import math\nassert math.isclose(area(2), 12.566, rel_tol=1e-3)",
        "import math\nassert math.isclose(area(1), 3.1416, rel_tol=1e-3)",
    ],
    "divisors": ["assert 3 in divisors(6)", "assert 2 in divisors(4)", "assert 5 in divisors(10)"],
    "root": ["assert 3 < root(16) < 5", "assert 2 < root(9) < 4"],
    "size": ["assert tuple_size((1, 2)) == sys.getsizeof((1, 2))"],
    "add_cases": [
        "assert all(map(lambda case: add(*case[0]) == case[1], [((1, 2), 3), ((2, 2), 4)]))"
    ],
}

SOLUTIONS = {
    "add": "def add(a, b):\n    return a + b\n",
    "add_check": "def add(a, b):\n    return a + b\n",
    "evens": "def evens(xs):\n    return [x for x in xs if x % 2 == 0]\n",
    "truncate": "def truncate(x):\n    return x - int(x)\n",
    "area": "import math\ndef area(r):\n    return math.pi * r * r\n",
    "divisors": "def divisors(n):\n    return [d for d in range(1, n + 1) if n % d == 0]\n",
    "root": "def root(n):\n    return n ** 0.5\n",
    "add_cases": "def add(a, b):\n    return a + b\n",
    "size": "import sys\ndef tuple_size(t):\n    return sys.getsizeof(t)\n",
}

_FORGE = (
    "def _forge(write):\n"
    "    for i in range(16):\n"
    "        write(f'PASS {i}')\n"
    "        if _TOKEN:\n"
    "            write(f'{_TOKEN} PASS {i}')\n"
)
_FIND_TOKEN = (
    "import sys\n"
    "_TOKEN = vars(sys.modules['__main__']).get('_token')\n"
    "_f = sys._getframe()\n"
    "while _f is not None and not _TOKEN:\n"
    "    _TOKEN = _f.f_globals.get('_token') or _f.f_locals.get('_token')\n"
    "    _f = _f.f_back\n"
)
_FIND_TESTS = (
    "import gc\n"
    "def _test_lists():\n"
    "    for obj in gc.get_objects():\n"
    "        if isinstance(obj, list) and obj and all(\n"
    "            isinstance(t, str) and 'assert' in t for t in obj\n"
    "        ):\n"
    "            yield obj\n"
)

# name: (task, program). None of these solves its task.
ATTACKS: dict[str, tuple[str, str]] = {
    "eq_always_true": (
        "add",
        "class _Any:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\n\ndef add(a, b):\n    return _Any()\n",
    ),
    "eq_always_true_check_function": (
        "add_check",
        "class _Any:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\n\ndef add(a, b):\n    return _Any()\n",
    ),
    "int_subclass_eq": (
        "add",
        "class _Int(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n\ndef add(a, b):\n    return _Int(7)\n",
    ),
    "list_subclass_eq": (
        "evens",
        "class _List(list):\n    def __eq__(self, other):\n        return True\n\n"
        "def evens(xs):\n    return _List([9])\n",
    ),
    "contains_always_true": (
        "divisors",
        "class _All:\n    def __contains__(self, x):\n        return True\n\n"
        "def divisors(n):\n    return _All()\n",
    ),
    "stop_iteration_ends_the_test_loop": (
        "add_cases",
        "def add(a, b):\n    raise StopIteration\n",
    ),
    "ordering_always_true": (
        "root",
        "class _Mid:\n    __lt__ = __gt__ = __le__ = __ge__ = lambda self, other: True\n\n"
        "def root(n):\n    return _Mid()\n",
    ),
    "forge_marker_from_main_module": (
        "add",
        _FIND_TOKEN + _FORGE + "_forge(print)\n\ndef add(a, b):\n    return 12345\n",
    ),
    "forge_marker_from_a_thread": (
        "add",
        _FIND_TOKEN + _FORGE + "import threading, time\n"
        "def _later():\n    time.sleep(0.2)\n    _forge(lambda s: print(s, flush=True))\n"
        "threading.Thread(target=_later).start()\n"
        "def add(a, b):\n    time.sleep(0.5)\n    return 12345\n",
    ),
    "forge_marker_at_exit": (
        "add",
        _FIND_TOKEN + _FORGE + "import atexit\natexit.register(_forge, print)\n\n"
        "def add(a, b):\n    return 12345\n",
    ),
    "forge_marker_on_every_descriptor": (
        "add",
        _FIND_TOKEN + _FORGE + "import os\n"
        "def _everywhere(line):\n    for fd in range(64):\n        try:\n"
        "            os.write(fd, (line + '\\n').encode())\n        except OSError:\n"
        "            pass\n_forge(_everywhere)\n\ndef add(a, b):\n    return 12345\n",
    ),
    "rewrite_the_tests": (
        "add",
        _FIND_TESTS
        + "for _tests in list(_test_lists()):\n    _tests[:] = ['pass'] * len(_tests)\n\n"
        "def add(a, b):\n    return 12345\n",
    ),
    "read_the_tests": (
        "add",
        _FIND_TESTS + "import re\n_ANSWERS = {}\nfor _tests in list(_test_lists()):\n"
        "    for _t in _tests:\n"
        "        for a, b, c in re.findall(r'add\\((-?\\d+), (-?\\d+)\\) == (-?\\d+)', _t):\n"
        "            _ANSWERS[(int(a), int(b))] = int(c)\n"
        "        for c, a, b in re.findall(r'(-?\\d+) == add\\((-?\\d+), (-?\\d+)\\)', _t):\n"
        "            _ANSWERS[(int(a), int(b))] = int(c)\n\n"
        "def add(a, b):\n    return _ANSWERS.get((a, b), 12345)\n",
    ),
    "patch_builtins": (
        "truncate",
        "import builtins\nbuiltins.abs = lambda x: 0\n\ndef truncate(x):\n    return 99.0\n",
    ),
    "shadow_a_builtin": (
        "truncate",
        "def abs(x):\n    return 0\n\ndef truncate(x):\n    return 99.0\n",
    ),
    "patch_a_library_helper": (
        "area",
        "import math\nmath.isclose = lambda *a, **k: True\n\ndef area(r):\n    return 0\n",
    ),
    "shadow_a_module": (
        "size",
        "class sys:\n    getsizeof = staticmethod(lambda obj: 7)\n\n"
        "def tuple_size(t):\n    return 7\n",
    ),
    "patch_sys_modules": (
        "area",
        "import sys, types\n_fake = types.ModuleType('math')\n"
        "_fake.isclose = lambda *a, **k: True\nsys.modules['math'] = _fake\n\n"
        "def area(r):\n    return 0\n",
    ),
}
# Attacks that also score 0 against a harness running the tests in the program's process (or
# that target the judge's pipes); kept as guards.
GUARDS: dict[str, tuple[str, str]] = {
    "system_exit_from_eq": (
        "add",
        "class _Exit:\n    def __eq__(self, other):\n        raise SystemExit(0)\n"
        "    __hash__ = object.__hash__\n\ndef add(a, b):\n    return _Exit()\n",
    ),
    "exit_zero_at_import": ("add", "import os\nos._exit(0)\n"),
    "garbage_on_the_pipes": (
        "add",
        "import os\nfor _fd in range(3, 64):\n    try:\n"
        "        os.write(_fd, b'\\xff' * 8 + b'PASS 0\\nPASS 1\\nPASS 2\\n')\n"
        "    except OSError:\n        pass\n\ndef add(a, b):\n    return 12345\n",
    ),
}


@pytest.fixture(scope="module")
def scores() -> dict[str, float | None]:
    """Every attack and every correct solution, scored in one batch."""
    reward = CodeExecutionReward(Sandbox(timeout_s=5.0), max_workers=4)
    cheats = {**ATTACKS, **GUARDS}
    names = [f"solution:{task}" for task in SOLUTIONS] + list(cheats)
    programs = list(SOLUTIONS.values()) + [program for _, program in cheats.values()]
    tasks = list(SOLUTIONS) + [task for task, _ in cheats.values()]
    completions = [f"```python\n{p}```" for p in programs]
    values = reward([""] * len(names), completions, tests=[TASKS[t] for t in tasks])
    return dict(zip(names, values, strict=True))


@pytest.mark.parametrize("task", sorted(SOLUTIONS))
def test_correct_solutions_score_full_marks(scores: dict[str, float | None], task: str) -> None:
    assert scores[f"solution:{task}"] == 2.0


@pytest.mark.parametrize("attack", sorted(ATTACKS) + sorted(GUARDS))
def test_attack_scores_nothing(scores: dict[str, float | None], attack: str) -> None:
    assert scores[attack] == 0.0, f"{attack} scored {scores[attack]}"
