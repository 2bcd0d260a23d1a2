"""Code rewards: run the completion's program against the row's tests in the sandbox.

MaskGRPO (arXiv 2510.02880) rewards code with 2.0 x the fraction of tests passed, plus a format
term. The program of a completion is its last fenced code block (or the whole text when it has
none). Each row carries ``tests``: a list of snippets (``assert f(1) == 2``, or a whole
HumanEval ``check`` function followed by ``check(entry_point)``), and optionally
``test_setup`` (code run after the program and before the tests, as in MBPP).

The program is untrusted: a policy trained against this reward searches for any way to score
without solving. So the verdict is decided where the program cannot reach it. Each completion
runs as two processes in two separate sandboxes joined only by two pipes
(:meth:`~maskgrpo.sandbox.Sandbox.run_pair`, :mod:`maskgrpo.rewards.code_harness`): a worker
that runs the program, and a judge that holds the tests, calls the program's functions through
the pipes, receives their results as plain data, compares them itself and writes one
``PASS i``/``FAIL i`` line per test on its own stdout. The program can neither see the tests nor
write to the judge's output, and its objects' ``__eq__``, ``__bool__`` and friends are never
called by the judge. ``docs/benchmarks.md`` lists the threat model.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import marshal
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..sandbox import (
    Sandbox,
    SandboxProgram,
    SandboxResult,
    SandboxUnavailableError,
    sandbox_available,
)
from .code_wire import dumps

CODE_REWARD_SCALE = 2.0
CODE_FORMAT_REWARD = 0.5
HARNESS = Path(__file__).with_name("code_harness.py")  # with code_wire.py beside it

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_VERDICT = re.compile(r"^PASS (\d+)$")


def extract_code(completion: str) -> str:
    """The last fenced code block (preferring python-tagged ones), else the whole completion."""
    blocks = _FENCE.findall(completion)
    if not blocks:
        return completion
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return (python or [body for _, body in blocks])[-1]


def judged_programs(
    code: str, tests: Sequence[str], setup: str = "", *, python: str | None = None
) -> tuple[SandboxProgram, SandboxProgram]:
    """The judge (holding ``tests``) and the worker (running ``code`` then ``setup``).

    When ``python`` (the sandbox's interpreter) is the one running this library, the harness
    goes in compiled, which saves each of the two processes its compile time.
    """
    same = python is not None and os.path.realpath(python) == os.path.realpath(sys.executable)
    harness = _harness_program(compiled=same)
    judge = SandboxProgram(harness, dumps(list(tests)), ("judge",))
    worker = SandboxProgram(harness, dumps([code, setup]), ("worker",))
    return judge, worker


# Run in the sandbox: loads the two harness modules as a package without touching the file
# system (their code objects, or their sources, are literals of this program), then starts it.
_BOOT = """\
import marshal, sys, types
package = types.ModuleType("harness")
package.__path__ = []
sys.modules["harness"] = package
for name, code in (("code_wire", {wire}), ("code_harness", {harness})):
    module = types.ModuleType("harness." + name)
    module.__package__ = "harness"
    sys.modules[module.__name__] = module
    exec({load}(code), module.__dict__)
module.main(sys.argv[1:])
"""
HARNESS_FILES = ("code_wire.py", "code_harness.py")


@functools.cache
def _harness_program(compiled: bool) -> str | bytes:
    """The bootstrap above holding both modules: source text, or a ``.pyc`` for this Python."""
    sources = [HARNESS.with_name(name).read_text(encoding="utf-8") for name in HARNESS_FILES]
    if not compiled:
        wire, harness = (repr(src) for src in sources)
        load = "lambda text: compile(text, 'harness', 'exec', dont_inherit=True)"
        return _BOOT.format(wire=wire, harness=harness, load=f"({load})")
    codes = [
        repr(marshal.dumps(compile(src, name, "exec", dont_inherit=True)))
        for src, name in zip(sources, HARNESS_FILES, strict=True)
    ]
    boot = _BOOT.format(wire=codes[0], harness=codes[1], load="marshal.loads")
    code = compile(boot, "harness_boot.py", "exec", dont_inherit=True)
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)  # PEP 552 header


def count_passes(verdict: str, n_tests: int) -> int:
    """Distinct tests the judge's output reports as passed (``PASS i`` lines, ``i < n_tests``)."""
    passed = set()
    for line in verdict.splitlines():
        match = _VERDICT.match(line)
        if match and int(match.group(1)) < n_tests:
            passed.add(int(match.group(1)))
    return len(passed)


def _row_tests(tests: Any) -> list[str] | None:
    """The row's tests when they are a non-empty list of strings, else ``None``."""
    if isinstance(tests, list | tuple) and tests and all(isinstance(t, str) for t in tests):
        return list(tests)
    return None


class CodeExecutionReward:
    """Reward ``2.0 x fraction of tests passed``, judged outside the program's sandbox.

    A row gets ``None`` (cannot be scored) when its ``tests`` are missing or not a list of
    strings, or when its completion is not a string; the other rows are scored as usual.

    Args:
        sandbox: sandbox to use; a default one (5 s, 1 GiB, 32 processes) when omitted. Its
            limits apply to the judge and the program alike, and its timeout to the pair.
        max_workers: completions judged in parallel (each runs two processes).
        allow_unsafe: accept running without isolation when ``bwrap`` does not work here.
        scale: reward for passing every test.
    """

    __name__ = "code_execution_reward"

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        max_workers: int = 8,
        allow_unsafe: bool = False,
        scale: float = CODE_REWARD_SCALE,
    ) -> None:
        if not allow_unsafe and not sandbox_available():
            raise SandboxUnavailableError(
                "code rewards run model-written programs and need a working bubblewrap sandbox "
                "(apt-get install bubblewrap; user namespaces enabled). Pass allow_unsafe=True "
                "to run them with resource limits only."
            )
        self.sandbox = sandbox or Sandbox(allow_unsafe=allow_unsafe)
        self.max_workers = max_workers
        self.scale = scale

    def __call__(
        self,
        prompts: list[str],
        completions: list[Any],
        tests: list[Any],
        test_setup: list[Any] | None = None,
        **_: Any,
    ) -> list[float | None]:
        """Score each completion; see the class docstring for the rows that get ``None``."""
        del prompts
        setups = test_setup if test_setup is not None else [""] * len(completions)
        rows = list(zip(completions, tests, setups, strict=True))
        jobs: list[tuple[int, int, tuple[SandboxProgram, SandboxProgram]]] = []
        out: list[float | None] = [None] * len(rows)
        for i, (completion, row_tests, setup) in enumerate(rows):
            checked = _row_tests(row_tests)
            if checked is None or not isinstance(completion, str):
                logger.debug("row %d cannot be scored: completion or tests malformed", i)
                continue
            setup_code = setup if isinstance(setup, str) else ""
            code = extract_code(completion)
            pair = judged_programs(code, checked, setup_code, python=self.sandbox.python)
            jobs.append((i, len(checked), pair))
        pairs = [programs for _, _, programs in jobs]
        results = self.sandbox.map(self.sandbox.run_pair, pairs, self.max_workers)
        for (i, n_tests, _pair), (verdict, _program) in zip(jobs, results, strict=True):
            out[i] = self.scale * count_passes(verdict.stdout, n_tests) / n_tests
        return out


def diagnose(result: tuple[SandboxResult, SandboxResult]) -> str:
    """One readable paragraph on a judged run: the judge's notes and the program's stderr."""
    verdict, program = result
    return (
        f"judge: rc={verdict.returncode} {verdict.killed_reason or ''}\n{verdict.stderr.strip()}\n"
        f"program: rc={program.returncode} {program.killed_reason or ''}\n{program.stderr.strip()}"
    )


def code_format_reward(prompts: list[str], completions: list[Any], **_: Any) -> list[float | None]:
    """0.5 when the completion has a fenced code block that parses as Python (``None``: not text)."""
    del prompts
    out: list[float | None] = []
    for completion in completions:
        if not isinstance(completion, str):
            out.append(None)
            continue
        blocks = _FENCE.findall(completion)
        ok = bool(blocks) and _parses(extract_code(completion))
        out.append(CODE_FORMAT_REWARD if ok else 0.0)
    return out


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True
