"""Checkers for the Countdown and 4x4 Sudoku puzzles (datasets in ``maskgrpo.datasets.puzzles``).

Countdown: the answer is an arithmetic expression that uses each of the given ``numbers``
exactly once with ``+ - * /`` and brackets and evaluates (exactly, with fractions) to
``target``; reward 1.0 or 0.0. Sudoku: the answer is the solved grid as 16 digits (any
separators); the reward is the fraction of the puzzle's blank cells filled correctly, 0.0 when
the grid is missing or has the wrong size, or when it changes a given cell.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from .extract import answer_tag, last_boxed, score_rows

_EXPRESSION = re.compile(r"[\d\s+\-*/().×÷]+")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def final_text(completion: str) -> str:
    """The part of a completion holding the answer: boxed, ``<answer>``, else the last line."""
    for candidate in (last_boxed(completion), answer_tag(completion)):
        if candidate:
            return candidate
    lines = [line for line in completion.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def countdown_expression(completion: str) -> str | None:
    """The longest arithmetic-only stretch of the answer text (left of any ``=``)."""
    text = final_text(completion).split("=")[0].replace("×", "*").replace("÷", "/")
    text = text.replace("\\times", "*").replace("\\div", "/")
    pieces = [p.strip() for p in _EXPRESSION.findall(text) if re.search(r"\d", p)]
    return max(pieces, key=len) if pieces else None


def evaluate_expression(expr: str) -> tuple[Fraction, list[int]] | None:
    """Exact value of ``expr`` and the integer literals it uses; ``None`` if not plain arithmetic."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None
    numbers: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            numbers.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            return left / right  # ZeroDivisionError handled below
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"unsupported syntax {type(node).__name__}")

    try:
        return walk(tree.body), numbers
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def countdown_correct(completion: str, numbers: list[int], target: int) -> bool:
    """Whether the completion's expression uses each number once and reaches the target."""
    expr = countdown_expression(completion)
    result = evaluate_expression(expr) if expr else None
    if result is None:
        return False
    value, used = result
    return Counter(used) == Counter(int(n) for n in numbers) and value == Fraction(int(target))


def countdown_reward(
    prompts: list[str],
    completions: list[str],
    numbers: list[list[int]],
    target: list[int],
    **_: Any,
) -> list[float | None]:
    """1.0 for a valid Countdown solution, else 0.0 (``None`` for a completion that is not text)."""
    del prompts
    return score_rows(
        lambda c, n, t: 1.0 if countdown_correct(c, n, t) else 0.0, completions, numbers, target
    )


def parse_grid(completion: str) -> str | None:
    """The 16 digits of a 4x4 grid from the answer text, or ``None``."""
    digits = re.sub(r"[^0-9]", "", final_text(completion))
    if len(digits) != 16:
        digits = re.sub(r"[^0-9]", "", completion)[-16:]
    return digits if len(digits) == 16 else None


def sudoku_score(completion: str, puzzle: str, solution: str) -> float:
    """Fraction of blank cells (``0`` in ``puzzle``) filled with the ``solution`` digit."""
    grid = parse_grid(completion)
    blanks = [i for i, ch in enumerate(puzzle) if ch == "0"]
    if grid is None or not blanks:
        return 0.0
    if any(grid[i] != ch for i, ch in enumerate(puzzle) if ch != "0"):
        return 0.0
    return sum(grid[i] == solution[i] for i in blanks) / len(blanks)


def sudoku_reward(
    prompts: list[str],
    completions: list[str],
    puzzle: list[str],
    solution: list[str],
    **_: Any,
) -> list[float | None]:
    """Fraction of blank 4x4 Sudoku cells solved correctly (see :func:`sudoku_score`)."""
    del prompts
    return score_rows(sudoku_score, completions, puzzle, solution)
