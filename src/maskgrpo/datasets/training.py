"""Rows for training: ``--dataset`` as a built-in recipe, a synthetic task, a file or a hub id.

| ``--dataset`` | training rows | held-out rows (default) | default rewards |
|---|---|---|---|
| gsm8k, mbpp, humaneval | the recipe's source (``--data-file`` or its hub id), split ``--dataset-split`` | its hub test split (mbpp from a local file: the test task ids) | the paper's set |
| math500 | ``--data-file`` (no default) | ``--eval-data-file`` / ``--eval-dataset`` | the paper's set |
| countdown, sudoku | generated from ``dataset_seed`` | generated from another seed, none shared | correctness |
| running_sums, sudoku4 | the synthetic task's train split | its held-out split | the task's |
| a file or hub id | its rows (every column kept) | ``--eval-dataset`` | none: ``--reward-funcs`` |

Recipe prompts are the user turn of the paper's template; its system prompt is returned apart,
so the model's chat template can place it (:class:`TrainingData`). Everything here runs before
any model is loaded, so bad data fails in seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..rng import derive_seed
from .loading import load_rows
from .puzzles import countdown_rows, sudoku_rows
from .recipes import FILE_RECIPES, GENERATED_RECIPES, RecipeOptions, load_recipe
from .templates import (
    CODE_TEMPLATE,
    COUNTDOWN_TEMPLATE,
    GSM8K_TEMPLATE,
    MATH_TEMPLATE,
    SUDOKU_TEMPLATE,
    PromptTemplate,
)
from .validation import check_countdown, check_sudoku, validate_rows

__all__ = [
    "RECIPE_TEMPLATES",
    "TrainingData",
    "check_source",
    "is_builtin",
    "load_training_data",
    "normalise_prompts",
    "recipe_rewards",
    "reference_completion",
    "rows_from",
]

log = logging.getLogger(__name__)

Row = dict[str, Any]

RECIPE_TEMPLATES: dict[str, PromptTemplate] = {
    "gsm8k": GSM8K_TEMPLATE,
    "math500": MATH_TEMPLATE,
    "mbpp": CODE_TEMPLATE,
    "humaneval": CODE_TEMPLATE,
    "countdown": COUNTDOWN_TEMPLATE,
    "sudoku": SUDOKU_TEMPLATE,
}
GENERATED_TRAIN_ROWS = 5000
# MBPP's official splits by task id (Austin et al. 2021): the full 974-row file holds them all.
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class TrainingData:
    """Validated rows and what the dataset implies for training.

    Attributes:
        name: the ``--dataset`` value.
        train: rows with a string ``prompt`` (the user turn) and every other column.
        eval: held-out rows in the same format; empty when there are none.
        rewards: the dataset's reward functions and weights (empty for a plain file).
        eval_rewards: the held-out rows' reward functions when they come from another recipe.
        system_prompt: system turn for the chat template ('' = none).
        completion_column: the column SFT trains on ('' when the rows have none).
        answer_tokens: a synthetic task's answer length (sizes the default completion).
        alphabet: every character of prompts, completions and system prompt (tiny tokenizer).
    """

    name: str
    train: list[Row]
    eval: list[Row]
    rewards: tuple[list[Any], list[float]] | None
    eval_rewards: tuple[list[Any], list[float]] | None = None
    system_prompt: str = ""
    completion_column: str = ""
    answer_tokens: int | None = None
    alphabet: str = ""


def is_builtin(name: str) -> bool:
    """A recipe or a synthetic task name."""
    from ..tasks import TASKS

    return name in FILE_RECIPES or name in GENERATED_RECIPES or name in TASKS


def _builtin_names() -> list[str]:
    from ..tasks import TASKS

    return sorted({*FILE_RECIPES, *GENERATED_RECIPES, *TASKS})


def check_source(source: str, data_file: str, *, field: str) -> None:
    """Raise for a ``source`` that is neither built in, an existing file, nor a hub id."""
    if not source:
        raise ValueError(f"{field} is empty; name a built-in dataset {_builtin_names()} or a file")
    file_field = "data_file" if field == "dataset" else "eval_data_file"
    if data_file and source not in FILE_RECIPES:
        raise ValueError(
            f"{file_field}={data_file!r} replaces a recipe's source ({sorted(FILE_RECIPES)}); "
            f"{field}={source!r} takes the file itself"
        )
    if data_file and data_file.endswith(_LOCAL_SUFFIXES) and not os.path.isfile(data_file):
        raise ValueError(f"{file_field}={data_file!r}: no such file; check the path")
    if source == "math500" and field == "dataset" and not data_file:
        raise ValueError("dataset='math500' has no default source; pass --data-file rows.jsonl")
    if is_builtin(source) or os.path.isfile(source):
        return
    if source.endswith(_LOCAL_SUFFIXES):
        raise ValueError(f"{field}={source!r}: no such file; check the path")
    if not _looks_like_hub_id(source):
        raise ValueError(
            f"{field}={source!r} is not a built-in dataset {_builtin_names()}, an existing "
            ".jsonl/.json/.parquet file, or a hub id (owner/name)"
        )


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def rows_from(dataset: Any, *, name: str = "train_dataset") -> list[Row]:
    """Rows of a ``datasets.Dataset``, a list of dicts, or any iterable of mappings."""
    if hasattr(dataset, "to_list") and callable(dataset.to_list):
        rows = list(dataset.to_list())
    elif isinstance(dataset, Iterable) and not isinstance(dataset, str | bytes | Mapping):
        rows = [dict(r) if isinstance(r, Mapping) else r for r in dataset]
    else:
        raise TypeError(
            f"{name} must be a datasets.Dataset or a list of dicts with a 'prompt' column, "
            f"not {type(dataset).__name__}"
        )
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise TypeError(f"{name} row {bad} is a {type(rows[bad]).__name__}, not a dict")
    return rows


def normalise_prompts(rows: list[Row], *, name: str = "dataset") -> tuple[list[Row], str]:
    """Rows with string prompts, and the system prompt conversational rows share.

    A conversational prompt (TRL's list of ``{"role", "content"}`` messages) may hold an
    optional system message and one user message; the system message must be the same in every
    row (it becomes the chat template's system turn). Anything else is an error naming the row.
    """
    if not rows:
        raise ValueError(f"{name} has no rows; check the file, split and limit")
    out, systems = [], set()
    for i, row in enumerate(rows):
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            roles = [m.get("role") if isinstance(m, dict) else None for m in prompt]
            if roles not in (["user"], ["system", "user"]):
                raise ValueError(
                    f"{name} row {i}: a conversational prompt must be [system?, user] "
                    f"messages, got roles {roles}; multi-turn prompts are not supported"
                )
            if roles[0] == "system":
                systems.add(str(prompt[0]["content"]))
            row = {**row, "prompt": str(prompt[-1]["content"])}
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ValueError(
                f"{name} row {i} has no non-empty string 'prompt' (columns {sorted(row)}); "
                "rename a column with --dataset-columns source=prompt"
            )
        out.append(row)
    if len(systems) > 1:
        raise ValueError(f"{name}: rows carry {len(systems)} different system messages; use one")
    if systems and len(systems) == 1 and any(not isinstance(r.get("prompt"), list) for r in rows):
        raise ValueError(f"{name}: some rows have a system message and some do not; use one")
    return out, next(iter(systems), "")


def reference_completion(recipe: str, row: Row) -> str:
    """A worked answer for ``row`` in the format the recipe's rewards read (SFT, few-shot)."""
    boxed = "\\boxed{{{}}}".format
    if recipe == "gsm8k":
        steps = re.sub(r"<<[^>]*>>", "", str(row["solution"])).rsplit("####", 1)[0].strip()
        return f"{steps}\nThe answer is {boxed(row['answer'])}."
    if recipe == "math500":
        solution = str(row.get("solution") or "")
        return solution if "\\boxed" in solution else f"{solution}\n{boxed(row['answer'])}".strip()
    if recipe == "mbpp":
        return f"```python\n{row.get('code', '')}\n```"
    if recipe == "humaneval":
        return f"```python\n{row['code_prompt']}{row.get('canonical_solution', '')}```"
    return boxed(row["solution"])


def recipe_rewards(name: str, *, allow_unsafe: bool = False) -> tuple[list[Any], list[float]]:
    """The paper's reward functions of a recipe (MaskGRPO, arXiv 2510.02880, Sec. 5)."""
    from ..rewards import (
        countdown_reward,
        paper_code_rewards,
        paper_gsm8k_rewards,
        paper_math_rewards,
        sudoku_reward,
    )
    from ..sandbox import SandboxUnavailableError

    if name == "countdown":
        return [countdown_reward], [1.0]
    if name == "sudoku":
        return [sudoku_reward], [1.0]
    if name == "gsm8k":
        preset = paper_gsm8k_rewards()
    elif name == "math500":
        preset = paper_math_rewards()
    else:
        try:
            preset = paper_code_rewards(allow_unsafe=allow_unsafe)
        except SandboxUnavailableError as err:
            raise ValueError(f"{err} (--allow-unsafe-code true accepts that risk)") from err
    return list(preset.funcs), list(preset.weights)


def _columns(cfg: Any) -> dict[str, str] | None:
    pairs = [item.split("=", 1) for item in getattr(cfg, "dataset_columns", [])]
    return {a: b for a, b in pairs} or None


def _mbpp_split(rows: list[Row], split: str) -> list[Row]:
    """The task-id range of ``split`` when ``rows`` are the full MBPP file (974 task ids)."""
    if split not in MBPP_SPLITS or not all(isinstance(r.get("task_id"), int) for r in rows):
        return rows
    lo, hi = MBPP_SPLITS[split]
    return [r for r in rows if lo <= r["task_id"] <= hi]


def _recipe_rows(
    name: str, *, source: str, split: str, cfg: Any, limit: int | None, renames: bool = True
) -> list[Row]:
    """User-turn rows of file recipe ``name`` from ``source`` ('' = its default source);
    ``renames`` applies ``--dataset-columns`` (the training dataset's own rows only)."""
    user = dataclasses.replace(RECIPE_TEMPLATES[name], system="")
    local = bool(source) and os.path.isfile(source)
    opts = RecipeOptions(
        source=source or None,
        split=split,
        config=(getattr(cfg, "dataset_config", "") or None) if renames else None,
        limit=None if (local and name == "mbpp") else limit,
        columns=_columns(cfg) if renames else None,
        template=user,
    )
    rows = load_recipe(name, opts)
    if local and name == "mbpp":
        rows = _mbpp_split(rows, split)[:limit]
    return rows


def _generated(name: str, n: int, seed: int) -> list[Row]:
    user = dataclasses.replace(RECIPE_TEMPLATES[name], system="")
    if name == "countdown":
        rows = countdown_rows(n, seed, template=user)
        validate_rows(rows, [check_countdown])
    else:
        rows = sudoku_rows(n, seed, template=user)
        validate_rows(rows, [check_sudoku])
    return rows


def _generated_data(cfg: Any, name: str, eval_rows: int) -> tuple[list[Row], list[Row]]:
    train = _generated(
        name, cfg.limit or GENERATED_TRAIN_ROWS, derive_seed(cfg.dataset_seed, "train")
    )
    if not eval_rows:
        return train, []
    seen = {r["prompt"] for r in train}
    held = _generated(name, 2 * eval_rows, derive_seed(cfg.dataset_seed, "eval"))
    return train, [r for r in held if r["prompt"] not in seen][:eval_rows]


# A new tiny model's characters: printable ASCII and newline/tab, plus every character of the
# loaded rows, so later rows of the same kind (held-out, another split) mostly fit it too.
_BASE_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n\t"


def _alphabet(data: TrainingData) -> str:
    chars = set(data.system_prompt) | set(_BASE_CHARS)
    for row in data.train + data.eval:
        chars.update(str(row["prompt"]))
        for key in (data.completion_column, "answer"):
            if key and isinstance(row.get(key), str):
                chars.update(row[key])
    return "".join(sorted(chars))


def load_training_data(
    cfg: Any, *, need_eval: bool | None = None, sft: bool = False
) -> TrainingData:
    """Train and held-out rows of ``cfg.dataset`` (a :class:`~maskgrpo.config.DataConfig`, with
    ``eval_dataset``/``eval_data_file``/``eval_split``/``eval_limit`` when training).

    Held-out rows are loaded when ``need_eval`` (default: when ``cfg.eval_every`` is set);
    ``sft=True`` adds a ``completion`` column to recipe rows (:func:`reference_completion`).
    """
    from ..tasks import TASKS, make_task

    if need_eval is None:
        need_eval = bool(getattr(cfg, "eval_every", 0))

    name = cfg.dataset
    limit = cfg.limit or None
    eval_limit = getattr(cfg, "eval_limit", 200)
    if name in TASKS:
        task = make_task(name, seed=cfg.dataset_seed)
        data = TrainingData(
            name, task.train[:limit], task.heldout if need_eval else [],
            (list(task.rewards), list(task.weights)),
            completion_column="answer", answer_tokens=task.answer_chars, alphabet=task.alphabet,
        )  # fmt: skip
    elif name in GENERATED_RECIPES:
        train, held = _generated_data(cfg, name, eval_limit if need_eval else 0)
        data = TrainingData(name, train, held, recipe_rewards(name))
    elif name in FILE_RECIPES:
        train = _recipe_rows(
            name, source=cfg.data_file, split=cfg.dataset_split, cfg=cfg, limit=limit
        )
        unsafe = getattr(cfg, "allow_unsafe_code", False)
        data = TrainingData(name, train, [], recipe_rewards(name, allow_unsafe=unsafe))
    else:  # a file or a hub id
        raw = load_rows(
            name, split=cfg.dataset_split, config=getattr(cfg, "dataset_config", "") or None,
            columns=_columns(cfg), limit=limit,
        )  # fmt: skip
        train, system = normalise_prompts(raw, name=name)
        data = TrainingData(name, train, [], None, system_prompt=system)
    if name in RECIPE_TEMPLATES:
        data.system_prompt = RECIPE_TEMPLATES[name].system
        if sft:
            data.train = [{**r, "completion": reference_completion(name, r)} for r in data.train]
            data.completion_column = "completion"
    elif sft and name not in TASKS:
        _require_completion(data.train, name)
        data.completion_column = "completion"
    if need_eval:
        try:
            _attach_eval(data, cfg, eval_limit)
        except ValueError as err:  # say which rows failed and how to give them
            if "could not load hub dataset" not in str(err):
                raise
            raise ValueError(
                f"held-out rows: {err} (--eval-data-file / --eval-dataset FILE), or --eval-every 0"
            ) from err
    data.system_prompt = getattr(cfg, "system_prompt", "") or data.system_prompt
    data.alphabet = data.alphabet or _alphabet(data)
    log.info(
        "dataset %s: %d training rows, %d held-out rows", name, len(data.train), len(data.eval)
    )
    return data


def _require_completion(rows: list[Row], name: str) -> None:
    bad = next((i for i, r in enumerate(rows) if not isinstance(r.get("completion"), str)), None)
    if bad is not None:
        raise ValueError(
            f"{name} row {bad} has no string 'completion' column to train on (columns "
            f"{sorted(rows[bad])}); rename one with --dataset-columns source=completion"
        )


def _attach_eval(data: TrainingData, cfg: Any, eval_limit: int) -> None:
    """Held-out rows by the rules of the module docstring (first ``eval_limit``)."""
    name, source = data.name, getattr(cfg, "eval_dataset", "")
    eval_file, split = getattr(cfg, "eval_data_file", ""), getattr(cfg, "eval_split", "test")
    recipe = source if source in FILE_RECIPES or source in GENERATED_RECIPES else name
    if source and is_builtin(source) and source != name:
        if source not in FILE_RECIPES:
            raise ValueError(
                f"eval_dataset={source!r}: only the file recipes {sorted(FILE_RECIPES)} can "
                f"evaluate another dataset; leave it empty for {source}'s own held-out rows"
            )
        data.eval = _recipe_rows(
            source, source=eval_file, split=split, cfg=cfg, limit=eval_limit, renames=False
        )
        data.eval_rewards = recipe_rewards(
            source, allow_unsafe=getattr(cfg, "allow_unsafe_code", False)
        )
    elif recipe in FILE_RECIPES:
        file = eval_file or ("" if is_builtin(source) else source)
        if not file and recipe == "mbpp" and os.path.isfile(cfg.data_file):
            file = cfg.data_file  # the full MBPP file holds the test task ids too
        if not file and recipe == "math500":
            raise ValueError(
                "math500 has no default held-out source; pass --eval-data-file (MATH500 rows) "
                "or --eval-every 0"
            )
        data.eval = _recipe_rows(recipe, source=file, split=split, cfg=cfg, limit=eval_limit)
    elif source and not is_builtin(source):
        if eval_file:
            raise ValueError(f"eval_data_file={eval_file!r} is for recipes; pass --eval-dataset")
        raw = load_rows(source, split=split, columns=_columns(cfg), limit=eval_limit)
        data.eval, system = normalise_prompts(raw, name=source)
        if system and system != data.system_prompt:
            raise ValueError(f"eval_dataset {source!r} has another system message than {name!r}")
    data.eval = data.eval[:eval_limit]
    overlap = {r["prompt"] for r in data.train} & {r["prompt"] for r in data.eval}
    if overlap:
        log.warning(
            "%d of %d held-out prompts also appear in the training rows",
            len(overlap),
            len(data.eval),
        )
