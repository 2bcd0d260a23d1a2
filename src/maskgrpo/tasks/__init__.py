"""Synthetic tasks with verifiable rewards, generated locally from a seed."""

from __future__ import annotations

from collections.abc import Callable

from .base import SyntheticTask, split_rows
from .running_sums import make_running_sums
from .sudoku import make_sudoku4

__all__ = ["TASKS", "SyntheticTask", "make_task", "split_rows"]

TASKS: dict[str, Callable[..., SyntheticTask]] = {
    "running_sums": make_running_sums,
    "sudoku4": make_sudoku4,
}


def make_task(name: str, seed: int = 0, **kwargs: object) -> SyntheticTask:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](seed=seed, **kwargs)
