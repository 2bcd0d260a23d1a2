"""Seeded generators for Countdown and 4x4 Sudoku rows (synthetic reasoning tasks).

Both are deterministic functions of their ``seed`` (a private ``random.Random`` for Countdown, a
``numpy.random.Generator`` for Sudoku); the global RNGs are never touched. Countdown targets
are built by folding the drawn numbers with random operations, so every row has a solution.
Sudoku puzzles are blanked cell by cell only while the solution stays unique, so the reward can
compare against the stored solution.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from .templates import COUNTDOWN_TEMPLATE, SUDOKU_TEMPLATE, ChatTokenizer, PromptTemplate

Row = dict[str, Any]

_MAX_TARGET = 1000  # keeps targets in the range of the usual Countdown setups
_BASE_GRID = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])


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


def random_solution(rng: np.random.Generator) -> np.ndarray:
    """A uniformly relabelled, row/column-shuffled valid 4x4 Sudoku grid, shape (4, 4)."""
    grid = rng.permutation(4)[_BASE_GRID - 1] + 1  # relabel digits
    bands = [rng.permutation([0, 1]) + 2 * b for b in rng.permutation([0, 1])]
    grid = grid[np.concatenate(bands)]
    stacks = [rng.permutation([0, 1]) + 2 * s for s in rng.permutation([0, 1])]
    grid = grid[:, np.concatenate(stacks)]
    return grid.T if rng.random() < 0.5 else grid


def count_solutions(cells: list[int], limit: int = 2) -> int:
    """Solutions of a 4x4 grid (16 ints, 0 = blank), counted up to ``limit``."""
    try:
        blank = cells.index(0)
    except ValueError:
        return 1
    r, c = divmod(blank, 4)
    box = [4 * (2 * (r // 2) + i) + 2 * (c // 2) + j for i in range(2) for j in range(2)]
    used = {cells[4 * r + k] for k in range(4)} | {cells[4 * k + c] for k in range(4)}
    used |= {cells[k] for k in box}
    total = 0
    for digit in range(1, 5):
        if digit not in used:
            cells[blank] = digit
            total += count_solutions(cells, limit - total)
            cells[blank] = 0
            if total >= limit:
                break
    return total


def sudoku_instance(rng: np.random.Generator, n_blanks: int) -> Row:
    """A 4x4 puzzle with up to ``n_blanks`` blanks and a unique solution."""
    solution = [int(x) for x in random_solution(rng).reshape(-1)]
    cells = list(solution)
    blanks = 0
    for position in rng.permutation(16):
        if blanks == n_blanks:
            break
        keep, cells[position] = cells[position], 0
        if count_solutions(list(cells)) == 1:
            blanks += 1
        else:
            cells[position] = keep
    return {"puzzle": "".join(map(str, cells)), "solution": "".join(map(str, solution))}


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
