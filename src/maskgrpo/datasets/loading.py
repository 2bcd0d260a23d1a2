"""Load raw rows from a local JSONL/JSON/Parquet file or, when online, a Hugging Face hub id.

Local files need no extra package (Parquet needs ``pyarrow``). Hub ids go through the optional
``datasets`` package, imported only when used. ``columns`` renames source columns to the names
the recipes and rewards expect, e.g. ``{"problem": "question", "solution": "answer"}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

Row = dict[str, Any]

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def read_jsonl(path: str) -> list[Row]:
    """Rows of a JSON-lines file; a malformed line is a ``ValueError`` naming its number."""
    rows: list[Row] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{number} is not valid JSON ({err.msg}); fix the line."
                ) from err
    return rows


def read_local(path: str) -> list[Row]:
    """Rows of a ``.jsonl``, ``.json`` (a list of objects) or ``.parquet`` file."""
    if path.endswith(".jsonl"):
        return read_jsonl(path)
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list of row objects; use .jsonl otherwise.")
        return data
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from err
        return list(pq.read_table(path).to_pylist())
    raise ValueError(f"unsupported data file {path!r}; use one of {', '.join(_LOCAL_SUFFIXES)}.")


def read_hub(name: str, split: str, config: str | None = None) -> list[Row]:
    """Rows of a hub dataset split through the optional ``datasets`` package."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{name!r} is not a local file, and loading hub datasets needs the optional "
            "package datasets (pip install datasets); or pass a .jsonl/.parquet path."
        ) from err
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown id, unknown split: one sentence, not a traceback
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"could not load hub dataset {name!r} (config {config!r}, split {split!r}): "
            f"{reason[:200]}; offline or without the hub, pass a local .jsonl/.parquet file"
        ) from err
    return [dict(r) for r in data]


def rename_columns(rows: list[Row], columns: Mapping[str, str] | None) -> list[Row]:
    """Copy rows with ``source -> target`` column renames; missing sources are an error."""
    if not columns:
        return rows
    out: list[Row] = []
    for index, row in enumerate(rows):
        missing = [src for src in columns if src not in row]
        if missing:
            raise ValueError(
                f"row {index} lacks column(s) {missing} named in the column mapping; "
                f"its columns are {sorted(row)}."
            )
        renamed = {k: v for k, v in row.items() if k not in columns}
        renamed.update({dst: row[src] for src, dst in columns.items()})
        out.append(renamed)
    return out


def load_rows(
    source: str,
    *,
    split: str = "train",
    config: str | None = None,
    columns: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Rows from a local file (when ``source`` exists) or a hub dataset id.

    Args:
        source: path to a ``.jsonl``/``.json``/``.parquet`` file, or a hub id.
        split: hub split (ignored for files).
        config: hub configuration name (ignored for files).
        columns: ``{source_column: target_column}`` renames.
        limit: keep the first ``limit`` rows.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be a positive number of rows or None.")
    if os.path.exists(source):
        rows = read_local(source)
        if not rows:
            raise ValueError(f"data file {source!r} has no rows; check that it is the right file.")
    elif source.endswith(_LOCAL_SUFFIXES):
        raise FileNotFoundError(f"data file {source!r} does not exist; check the path.")
    else:
        rows = read_hub(source, split, config)
    rows = rows[:limit] if limit is not None else rows
    return rename_columns(rows, columns)
