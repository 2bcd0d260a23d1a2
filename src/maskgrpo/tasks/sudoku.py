"""4x4 Sudoku: a constraint task. The prompt is the grid row by row with ``.`` for blanks.

The reward checks constraints, not a stored answer: a completion is correct when it is a full
4x4 grid that keeps every given digit and has 1-4 once in each row, column and 2x2 box. All 288
solved grids are enumerated; puzzles blank a seeded number of cells.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from .base import SyntheticTask, split_rows

__all__ = ["all_grids", "make_sudoku4", "sudoku_valid"]

_UNITS = (
    [[r * 4 + c for c in range(4)] for r in range(4)]
    + [[r * 4 + c for r in range(4)] for c in range(4)]
    + [
        [(br + r) * 4 + bc + c for r in range(2) for c in range(2)]
        for br in (0, 2)
        for bc in (0, 2)
    ]
)


def sudoku_valid(grid: str) -> bool:
    return len(grid) == 16 and all(sorted(grid[i] for i in unit) == list("1234") for unit in _UNITS)


def all_grids() -> list[str]:
    """The 288 solved 4x4 grids."""
    rows = ["".join(p) for p in itertools.permutations("1234")]
    return [g for g in ("".join(c) for c in itertools.product(rows, repeat=4)) if sudoku_valid(g)]


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
        out.append(sum(sorted(c[i] for i in u) == list("1234") for u in _UNITS) / len(_UNITS))
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
