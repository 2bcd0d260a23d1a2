"""Row checks run before any model is loaded.

A row is a dict with ``prompt`` plus the columns its reward needs. :func:`validate_rows`
checks every row and raises one ``ValueError`` that lists each bad row by index with the
reason, so a broken dataset fails in seconds rather than hours into a run.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..rewards.gsm8k import gold_number

Row = dict[str, Any]
RowCheck = Callable[[Row], str | None]

_MAX_LISTED = 20


def _text(row: Row, column: str) -> str | None:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        return f"column {column!r} must be a non-empty string, got {value!r:.60}"
    return None


def check_prompt(row: Row) -> str | None:
    """Every row: a non-empty ``prompt`` string."""
    return _text(row, "prompt")


def check_numeric_answer(row: Row) -> str | None:
    """GSM8K-style rows: ``answer`` holds a number (or a solution ending in ``#### n``)."""
    if gold_number(row.get("answer", "")) is None:
        return f"column 'answer' has no number: {row.get('answer')!r:.60}"
    return None


def check_text_answer(row: Row) -> str | None:
    """MATH-style rows: ``answer`` is a non-empty string."""
    return _text(row, "answer")


def check_tests(row: Row) -> str | None:
    """Code rows: ``tests`` is a non-empty list of strings that each parse as Python."""
    tests = row.get("tests")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        return f"column 'tests' must be a non-empty list of strings, got {tests!r:.60}"
    for i, test in enumerate(tests):
        try:
            ast.parse(test)
        except SyntaxError as err:
            return f"tests[{i}] is not valid Python ({err.msg} at line {err.lineno})"
    setup = row.get("test_setup", "")
    if not isinstance(setup, str):
        return f"column 'test_setup' must be a string, got {type(setup).__name__}"
    return None


def check_countdown(row: Row) -> str | None:
    """Countdown rows: ``numbers`` a list of ints, ``target`` an int."""
    numbers, target = row.get("numbers"), row.get("target")
    if not isinstance(numbers, list) or not numbers or not all(type(n) is int for n in numbers):
        return f"column 'numbers' must be a non-empty list of ints, got {numbers!r:.60}"
    if type(target) is not int:
        return f"column 'target' must be an int, got {target!r:.60}"
    return None


def check_sudoku(row: Row) -> str | None:
    """Sudoku rows: 16-digit ``puzzle`` (0 = blank) consistent with a 16-digit ``solution``."""
    puzzle, solution = row.get("puzzle"), row.get("solution")
    for name, grid in (("puzzle", puzzle), ("solution", solution)):
        if not isinstance(grid, str) or len(grid) != 16 or not grid.isdigit():
            return f"column {name!r} must be 16 digits, got {grid!r:.60}"
    if any(p not in ("0", s) for p, s in zip(str(puzzle), str(solution), strict=True)):
        return "puzzle gives a digit that differs from the solution"
    return None


def validate_rows(rows: Sequence[Mapping[str, Any]], checks: Sequence[RowCheck]) -> None:
    """Run ``check_prompt`` and ``checks`` on every row; one ``ValueError`` lists all failures."""
    problems: list[str] = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            problems.append(f"row {index}: not a dict but {type(row).__name__}")
            continue
        for check in (check_prompt, *checks):
            reason = check(dict(row))
            if reason is not None:
                problems.append(f"row {index}: {reason}")
                break
    if not rows:
        raise ValueError("dataset has no rows; check the file path, split and limit.")
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise ValueError(
            f"{len(problems)} of {len(rows)} dataset rows are invalid; fix or drop them:\n  "
            f"{shown}{more}"
        )
