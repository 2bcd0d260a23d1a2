"""Built-in dataset recipes: raw rows -> validated rows with ``prompt`` and reward columns.

| recipe | default source | columns added |
|---|---|---|
| gsm8k | hub ``openai/gsm8k`` (config ``main``) | ``answer`` (gold number), ``solution`` |
| math500 | a user file with ``problem``/``answer`` | ``answer`` |
| mbpp | hub ``google-research-datasets/mbpp`` | ``tests``, ``test_setup`` |
| humaneval | hub ``openai/openai_humaneval`` | ``tests``, ``entry_point`` |
| countdown | generated from ``seed`` | ``numbers``, ``target`` |
| sudoku | generated from ``seed`` | ``puzzle``, ``solution`` |

Every recipe validates all rows (see :mod:`.validation`) before returning them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .loading import load_rows
from .puzzles import countdown_rows, sudoku_rows
from .templates import CODE_TEMPLATE, GSM8K_TEMPLATE, MATH_TEMPLATE, ChatTokenizer, PromptTemplate
from .validation import (
    check_countdown,
    check_numeric_answer,
    check_sudoku,
    check_tests,
    check_text_answer,
    validate_rows,
)

Row = dict[str, Any]


@dataclass(frozen=True)
class RecipeOptions:
    """Options shared by the file/hub-backed recipes.

    Attributes:
        source: local file path or hub id; the recipe's default when ``None``.
        split: hub split.
        config: hub configuration name; the recipe's default when ``None``.
        limit: keep the first ``limit`` rows.
        columns: ``{source_column: expected_column}`` renames applied before the recipe.
        template: prompt template; the recipe's default when ``None``.
        tokenizer: renders prompts with its chat template when given.
        n_shots: few-shot examples of the template to include (all when ``None``).
    """

    source: str | None = None
    split: str = "test"
    config: str | None = None
    limit: int | None = None
    columns: Mapping[str, str] | None = None
    template: PromptTemplate | None = None
    tokenizer: ChatTokenizer | None = None
    n_shots: int | None = None


def _render(opts: RecipeOptions, default: PromptTemplate, question: str) -> str:
    template = opts.template or default
    return template.render(question, opts.tokenizer, opts.n_shots)


def _load(opts: RecipeOptions, hub_id: str | None, config: str | None = None) -> list[Row]:
    source = opts.source or hub_id
    if source is None:
        raise ValueError("this recipe has no default source; pass source='path/to/file.jsonl'.")
    return load_rows(
        source,
        split=opts.split,
        config=opts.config or config,
        columns=opts.columns,
        limit=opts.limit,
    )


def gsm8k(opts: RecipeOptions = RecipeOptions()) -> list[Row]:
    """GSM8K rows from ``{"question", "answer"}`` (answer ends in ``#### n``)."""
    rows = []
    for raw in _load(opts, "openai/gsm8k", "main"):
        solution = str(raw.get("answer", ""))
        gold = solution.rsplit("####", 1)[-1].strip()
        prompt = _render(opts, GSM8K_TEMPLATE, str(raw.get("question", "")))
        rows.append({**raw, "prompt": prompt, "answer": gold, "solution": solution})
    validate_rows(rows, [check_numeric_answer])
    return rows


def math500(opts: RecipeOptions = RecipeOptions()) -> list[Row]:
    """MATH500 rows from a user-supplied file with ``problem`` and ``answer`` columns."""
    rows = []
    for raw in _load(opts, None):
        prompt = _render(opts, MATH_TEMPLATE, str(raw.get("problem", raw.get("question", ""))))
        rows.append({**raw, "prompt": prompt})
    validate_rows(rows, [check_text_answer])
    return rows


def mbpp(opts: RecipeOptions = RecipeOptions()) -> list[Row]:
    """MBPP rows from ``{"text", "test_list", "test_setup_code"}``; tests are shown in the prompt."""
    rows = []
    for raw in _load(opts, "google-research-datasets/mbpp", "full"):
        tests = list(raw.get("test_list") or [])
        question = f"{raw.get('text', '')}\nYour code should pass these tests:\n" + "\n".join(tests)
        prompt = _render(opts, CODE_TEMPLATE, question)
        setup = str(raw.get("test_setup_code") or "")
        rows.append({**raw, "prompt": prompt, "tests": tests, "test_setup": setup})
    validate_rows(rows, [check_tests])
    return rows


def humaneval(opts: RecipeOptions = RecipeOptions()) -> list[Row]:
    """HumanEval rows; the single test runs the task's ``check`` on ``entry_point``."""
    rows = []
    for raw in _load(opts, "openai/openai_humaneval"):
        code = str(raw.get("prompt", ""))
        question = f"Complete this Python function:\n```python\n{code}```"
        test = f"{raw.get('test', '')}\n\ncheck({raw.get('entry_point', '')})\n"
        prompt = _render(opts, CODE_TEMPLATE, question)
        rows.append({**raw, "prompt": prompt, "code_prompt": code, "tests": [test]})
    validate_rows(rows, [check_tests])
    return rows


def countdown(n: int, seed: int, tokenizer: ChatTokenizer | None = None) -> list[Row]:
    """``n`` generated Countdown rows (4 numbers up to 50)."""
    rows = countdown_rows(n, seed, tokenizer=tokenizer)
    validate_rows(rows, [check_countdown])
    return rows


def sudoku(n: int, seed: int, tokenizer: ChatTokenizer | None = None) -> list[Row]:
    """``n`` generated 4x4 Sudoku rows (8 blanks, unique solutions)."""
    rows = sudoku_rows(n, seed, tokenizer=tokenizer)
    validate_rows(rows, [check_sudoku])
    return rows


FILE_RECIPES: dict[str, Callable[[RecipeOptions], list[Row]]] = {
    "gsm8k": gsm8k,
    "math500": math500,
    "mbpp": mbpp,
    "humaneval": humaneval,
}
GENERATED_RECIPES: dict[str, Callable[[int, int, ChatTokenizer | None], list[Row]]] = {
    "countdown": countdown,
    "sudoku": sudoku,
}


def load_recipe(name: str, opts: RecipeOptions = RecipeOptions()) -> list[Row]:
    """Rows of a file/hub-backed recipe by name (see :data:`FILE_RECIPES`)."""
    if name not in FILE_RECIPES:
        raise ValueError(
            f"unknown dataset recipe {name!r}; choose one of {sorted(FILE_RECIPES)} "
            f"(or generate {sorted(GENERATED_RECIPES)} with a seed)."
        )
    return FILE_RECIPES[name](opts)
