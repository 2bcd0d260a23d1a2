"""Code rewards: run the completion's program against the row's tests in the sandbox.

MaskGRPO (arXiv 2510.02880) rewards code with 2.0 x the fraction of tests passed, plus a format
term. The program of a completion is its last fenced code block (or the whole text when it has
none). Each row carries ``tests``: a list of snippets (``assert f(1) == 2``, or a whole
HumanEval ``check`` function followed by ``check(entry_point)``), and optionally
``test_setup`` (code run after the program and before the tests, as in MBPP).

All tests of a completion run in one sandboxed process: a driver executes the program, then
each test in its own ``try`` block, printing a per-run secret token for every test that passed.
The token is sent on stdin and never written into the program, so ordinary code cannot print
a pass by accident; a program that deliberately inspects the driver's frames could forge it,
which the sandbox still contains.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from ..sandbox import Sandbox, SandboxUnavailableError, sandbox_available

CODE_REWARD_SCALE = 2.0
CODE_FORMAT_REWARD = 0.5

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)

_DRIVER = """\
import sys as _sys
_token = _sys.stdin.readline().strip()
_program, _setup, _tests = {payload}
_env = {{"__name__": "__main__"}}
try:
    exec(compile(_program + "\\n" + _setup, "solution.py", "exec"), _env)
except BaseException as _err:
    print("program failed:", type(_err).__name__, _err, file=_sys.stderr)
    _sys.exit(1)
for _i, _test in enumerate(_tests):
    try:
        exec(compile(_test, f"test_{{_i}}.py", "exec"), dict(_env))
    except BaseException as _err:
        print(f"test {{_i}} failed:", type(_err).__name__, _err, file=_sys.stderr)
    else:
        print(f"{{_token}} PASS {{_i}}", flush=True)
"""


def extract_code(completion: str) -> str:
    """The last fenced code block (preferring python-tagged ones), else the whole completion."""
    blocks = _FENCE.findall(completion)
    if not blocks:
        return completion
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return (python or [body for _, body in blocks])[-1]


def build_test_program(code: str, tests: Sequence[str], setup: str = "") -> str:
    """Driver source that runs ``code`` then each test, reporting passes with a stdin token."""
    payload = json.dumps([code, setup, list(tests)])
    return _DRIVER.format(payload=f"__import__('json').loads({payload!r})")


def count_passes(stdout: str, token: str, n_tests: int) -> int:
    """Distinct tests reported as passed with the right token."""
    passed = set()
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == token and parts[1] == "PASS" and parts[2].isdigit():
            passed.add(int(parts[2]))
    return len({i for i in passed if i < n_tests})


class CodeExecutionReward:
    """Reward ``2.0 x fraction of tests passed``, running every program in a :class:`Sandbox`.

    Args:
        sandbox: sandbox to use; a default one (5 s, 1 GiB, 32 processes) when omitted.
        max_workers: programs run in parallel.
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
        completions: list[str],
        tests: list[Sequence[str]],
        test_setup: list[str] | None = None,
        **_: Any,
    ) -> list[float | None]:
        """Score each completion; a row without tests gets ``None``."""
        del prompts
        setups = test_setup if test_setup is not None else [""] * len(completions)
        rows = list(zip(completions, tests, setups, strict=True))
        tokens = [secrets.token_hex(16) for _ in rows]
        programs = [build_test_program(extract_code(c), t, s or "") for c, t, s in rows]
        stdins = [token + "\n" for token in tokens]
        results = self.sandbox.run_many(programs, self.max_workers, stdins=stdins)
        out: list[float | None] = []
        for (_c, row_tests, _s), token, result in zip(rows, tokens, results, strict=True):
            if not row_tests:
                out.append(None)
                continue
            passed = count_passes(result.stdout, token, len(row_tests))
            out.append(self.scale * passed / len(row_tests))
        return out


def code_format_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    """0.5 when the completion has a fenced code block that parses as Python."""
    del prompts
    out: list[float | None] = []
    for completion in completions:
        blocks = _FENCE.findall(completion)
        ok = bool(blocks) and _parses(extract_code(completion))
        out.append(CODE_FORMAT_REWARD if ok else 0.0)
    return out


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
