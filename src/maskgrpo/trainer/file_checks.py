"""Cheap integrity checks of saved files: a truncated or corrupt ``.safetensors`` or ``.json``.

A safetensors file is an 8-byte header length, a JSON header listing each tensor's byte range,
and the data; it is complete when the header parses and the file is exactly as long as the
header says. Checking reads the header only, so a multi-gigabyte model is checked in
milliseconds. Loading code calls these checks first so that a damaged file is named in one
sentence instead of surfacing as a deserialisation traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["check_model_folder", "folder_problems", "json_problem", "safetensors_problem"]

_MAX_HEADER = 100 * 1024 * 1024
_MAX_JSON = 256 * 1024 * 1024


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or ``None`` when it is."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, no header)"
            length = int.from_bytes(head, "little")
            if length > min(size - 8, _MAX_HEADER):
                return f"truncated or corrupt (header of {length} bytes in a {size}-byte file)"
            header = json.loads(fh.read(length))
    except OSError as err:
        return f"unreadable ({err.strerror})"
    except (ValueError, UnicodeDecodeError):
        return "corrupt (its header is not JSON)"
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return "corrupt (its header lacks tensor offsets)"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"truncated or corrupt ({size} bytes where its header describes {expected})"
    return None


def json_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable JSON file, or ``None`` when it is."""
    try:
        if path.stat().st_size > _MAX_JSON:
            return None  # not read whole here; its loader will report a problem
        json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        return f"unreadable ({err.strerror})"
    except UnicodeDecodeError:
        return "corrupt (not UTF-8 text)"
    except ValueError as err:
        return f"corrupt JSON ({err})"
    return None


# The JSON files of a model folder that loading reads (others, like a log, are not checked).
MODEL_JSON = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
)


def folder_problems(folder: Path, json_names: tuple[str, ...] | None = None) -> list[str]:
    """``"<file> is <problem>"`` for each damaged ``.safetensors`` or ``.json`` file in ``folder``
    (only the JSON files named in ``json_names``, when given)."""
    problems: list[str] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix == ".json" and json_names is not None and path.name not in json_names:
            continue
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path)
        elif path.suffix == ".json":
            problem = json_problem(path)
        else:
            continue
        if problem is not None:
            problems.append(f"{path.name} is {problem}")
    return problems


def check_model_folder(folder: str | Path) -> None:
    """Raise ``ValueError`` naming the first damaged file of a local model folder."""
    path = Path(folder)
    if not path.is_dir():
        return
    problems = folder_problems(path, MODEL_JSON)
    if problems:
        raise ValueError(
            f"model folder {folder} is damaged: {'; '.join(problems)}; save or download the "
            "model again, or pass another --model"
        )
