"""Datasets: loading (local files or hub ids), prompt templates, recipes and row validation.

A row is a dict with ``prompt`` plus the columns its reward needs (``answer``, ``tests``,
``entry_point``, ...). Recipes validate every row before returning, so errors surface before
any model is loaded.
"""

from __future__ import annotations

from .loading import load_rows, read_jsonl, read_local, rename_columns
from .puzzles import countdown_rows, sudoku_rows
from .recipes import (
    FILE_RECIPES,
    GENERATED_RECIPES,
    RecipeOptions,
    countdown,
    gsm8k,
    humaneval,
    load_recipe,
    math500,
    mbpp,
    sudoku,
)
from .templates import PromptTemplate
from .validation import validate_rows

__all__ = [
    "FILE_RECIPES",
    "GENERATED_RECIPES",
    "PromptTemplate",
    "RecipeOptions",
    "countdown",
    "countdown_rows",
    "gsm8k",
    "humaneval",
    "load_recipe",
    "load_rows",
    "math500",
    "mbpp",
    "read_jsonl",
    "read_local",
    "rename_columns",
    "sudoku",
    "sudoku_rows",
    "validate_rows",
]
