"""4x4 Sudoku, the one implementation: the rules, a puzzle generator, and the synthetic task.

- Rules: a solved grid has 1-4 once in each row, column and 2x2 box (:data:`UNITS`);
  :func:`sudoku_valid`, :func:`all_grids` (the 288 solved grids), :func:`count_solutions`.
- Generator (the ``sudoku`` dataset of :mod:`maskgrpo.datasets.puzzles`): :func:`sudoku_instance`
  draws a relabelled, shuffled solution from a ``numpy.random.Generator`` and blanks cells one by
  one only while the solution stays unique, so a reward can compare against the stored solution.
- The synthetic task ``sudoku4`` (:func:`make_sudoku4`): the prompt is the grid row by row with
  ``.`` for blanks; its reward checks constraints, not a stored answer (a full grid that keeps
  every given digit and satisfies the rules), and its puzzles blank a seeded number of cells of
  an enumerated solved grid.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np

from .base import SyntheticTask, split_rows

__all__ = [
    "UNITS",
    "all_grids",
    "count_solutions",
    "make_sudoku4",
    "random_solution",
    "sudoku_instance",
    "sudoku_valid",
]

# Cell indices (row-major, 0..15) of the 4 rows, 4 columns and 4 boxes.
UNITS = (
    [[r * 4 + c for c in range(4)] for r in range(4)]
    + [[r * 4 + c for r in range(4)] for c in range(4)]
    + [
        [(br + r) * 4 + bc + c for r in range(2) for c in range(2)]
        for br in (0, 2)
        for bc in (0, 2)
    ]
)


_UNITS_OF = [[u for u in UNITS if cell in u] for cell in range(16)]  # row, column, box
_BASE_GRID = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])


def sudoku_valid(grid: str) -> bool:
    return len(grid) == 16 and all(sorted(grid[i] for i in unit) == list("1234") for unit in UNITS)


def all_grids() -> list[str]:
    """The 288 solved 4x4 grids."""
    rows = ["".join(p) for p in itertools.permutations("1234")]
    return [g for g in ("".join(c) for c in itertools.product(rows, repeat=4)) if sudoku_valid(g)]


def count_solutions(cells: list[int], limit: int = 2) -> int:
    """Solutions of a 4x4 grid (16 ints, 0 = blank), counted up to ``limit``."""
    try:
        blank = cells.index(0)
    except ValueError:
        return 1
    used = {cells[i] for unit in _UNITS_OF[blank] for i in unit}
    total = 0
    for digit in range(1, 5):
        if digit not in used:
            cells[blank] = digit
            total += count_solutions(cells, limit - total)
            cells[blank] = 0
            if total >= limit:
                break
    return total


def random_solution(rng: np.random.Generator) -> np.ndarray:
    """A uniformly relabelled, row/column-shuffled valid 4x4 Sudoku grid, shape (4, 4)."""
    grid = rng.permutation(4)[_BASE_GRID - 1] + 1  # relabel digits
    bands = [rng.permutation([0, 1]) + 2 * b for b in rng.permutation([0, 1])]
    grid = grid[np.concatenate(bands)]
    stacks = [rng.permutation([0, 1]) + 2 * s for s in rng.permutation([0, 1])]
    grid = grid[:, np.concatenate(stacks)]
    return grid.T if rng.random() < 0.5 else grid


def sudoku_instance(rng: np.random.Generator, n_blanks: int) -> dict[str, str]:
    """A puzzle with up to ``n_blanks`` blanks (``0``) and a unique solution, as 16 digits each."""
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


def _fits(puzzle: str, grid: str) -> bool:
    return len(grid) == 16 and all(p in (".", g) for p, g in zip(puzzle, grid, strict=True))


def _solved(
    prompts: list[str], completions: list[str], puzzle: list[str], **_: Any
) -> list[float | None]:
    """1.0 for a valid grid consistent with the givens."""
    return [
        float(sudoku_valid(c.strip()) and _fits(p, c.strip()))
        for p, c in zip(puzzle, completions, strict=True)
    ]


def _cell_credit(
    prompts: list[str], completions: list[str], puzzle: list[str], **_: Any
) -> list[float | None]:
    """Fraction of the 12 units (rows, columns, boxes) that hold 1-4 once, if the givens are kept."""
    out: list[float | None] = []
    for p, c in zip(puzzle, completions, strict=True):
        c = c.strip()
        if len(c) != 16 or not _fits(p, c):
            out.append(0.0)
            continue
        out.append(sum(sorted(c[i] for i in u) == list("1234") for u in UNITS) / len(UNITS))
    return out


def make_sudoku4(
    blanks: int = 6, heldout: int = 500, seed: int = 0, puzzles: int = 4000
) -> SyntheticTask:
    if not 1 <= blanks <= 12:
        raise ValueError(f"blanks={blanks} must be in [1, 12]")
    rng = random.Random(seed)
    grids = all_grids()
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(puzzles * 4):
        grid = rng.choice(grids)
        holes = rng.sample(range(16), blanks)
        puzzle = "".join("." if i in holes else ch for i, ch in enumerate(grid))
        seen.setdefault(puzzle, {"prompt": puzzle + "=", "puzzle": puzzle, "answer": grid})
        if len(seen) >= puzzles:
            break
    train, held = split_rows(list(seen.values()), heldout, seed)
    _solved.__name__ = "solved"
    _cell_credit.__name__ = "unit_credit"
    return SyntheticTask(
        name="sudoku4",
        alphabet="1234.=",
        train=train,
        heldout=held,
        rewards=[_solved, _cell_credit],
        weights=[1.0, 1.0],
        correct=lambda completion, row: (
            sudoku_valid(completion.strip()) and _fits(row["puzzle"], completion.strip())
        ),
        max_prompt_chars=17,
        answer_chars=16,
        description=f"4x4 sudoku with {blanks} blanks",
    )
