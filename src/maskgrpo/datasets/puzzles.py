"""Seeded generators for Countdown and 4x4 Sudoku rows (synthetic reasoning tasks).

Both are deterministic functions of their ``seed`` (a private ``random.Random`` for Countdown, a
``numpy.random.Generator`` for Sudoku); the global RNGs are never touched. Countdown targets
are built by folding the drawn numbers with random operations, so every row has a solution.
Sudoku puzzles come from :func:`maskgrpo.tasks.sudoku.sudoku_instance` (blanked cell by cell
only while the solution stays unique, so the reward can compare against the stored solution).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from ..tasks.sudoku import sudoku_instance
from .templates import COUNTDOWN_TEMPLATE, SUDOKU_TEMPLATE, ChatTokenizer, PromptTemplate

Row = dict[str, Any]

_MAX_TARGET = 1000  # keeps targets in the range of the usual Countdown setups


def countdown_instance(rng: random.Random, n_numbers: int, max_number: int) -> Row:
    """One Countdown problem: numbers, a reachable positive integer target, and a solution."""
    numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
    order = rng.sample(range(n_numbers), n_numbers)
    value, expr = numbers[order[0]], str(numbers[order[0]])
    for i in order[1:]:
        n = numbers[i]
        options = ["+"] + (["*"] if value * n <= _MAX_TARGET else []) + (["-"] if value > n else [])
        options += ["/"] if value % n == 0 and n > 1 else []
        op = rng.choice(options)
        value = {"+": value + n, "-": value - n, "*": value * n, "/": value // n}[op]
        expr = f"({expr} {op} {n})"
    return {"numbers": numbers, "target": value, "solution": expr}


def countdown_rows(
    n: int,
    seed: int,
    *,
    n_numbers: int = 4,
    max_number: int = 50,
    template: PromptTemplate = COUNTDOWN_TEMPLATE,
    tokenizer: ChatTokenizer | None = None,
) -> list[Row]:
    """``n`` Countdown rows (``prompt``, ``numbers``, ``target``, ``solution``) from ``seed``."""
    if n < 1 or n_numbers < 2 or max_number < 2:
        raise ValueError(
            f"countdown_rows needs n>=1, n_numbers>=2, max_number>=2; got {n}, {n_numbers}, "
            f"{max_number}."
        )
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = countdown_instance(rng, n_numbers, max_number)
        question = f"Numbers: {row['numbers']}. Target: {row['target']}."
        rows.append({"prompt": template.render(question, tokenizer), **row})
    return rows


def sudoku_rows(
    n: int,
    seed: int,
    *,
    n_blanks: int = 8,
    template: PromptTemplate = SUDOKU_TEMPLATE,
    tokenizer: ChatTokenizer | None = None,
) -> list[Row]:
    """``n`` 4x4 Sudoku rows (``prompt``, ``puzzle``, ``solution``) from ``seed``."""
    if n < 1 or not 1 <= n_blanks <= 12:
        raise ValueError(f"sudoku_rows needs n>=1 and 1<=n_blanks<=12; got {n}, {n_blanks}.")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = sudoku_instance(rng, n_blanks)
        grid = "\n".join(row["puzzle"][4 * i : 4 * i + 4] for i in range(4))
        rows.append({"prompt": template.render(f"Puzzle:\n{grid}", tokenizer), **row})
    return rows
