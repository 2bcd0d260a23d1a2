"""Checks of what users hand the command line: config files and device names.

Each check raises ``ValueError`` with one sentence that names the bad value (and the file and
line, for a config file) and says what to do; the command line prints it as one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["check_device", "read_config_file"]

_DEVICE = re.compile(r"^(auto|cpu|mps|meta|(cuda|xpu|npu|hpu|mlu|mtia)(:\d+)?)$")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of config fields in the YAML file ``path``."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"--config {path} is a folder; pass a YAML file of config fields")
    if not file.is_file():
        raise ValueError(f"config file {path} does not exist; check the --config path")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(
            f"cannot read config file {path} ({err}); pass a UTF-8 YAML file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path}: {_yaml_problem(err)}; fix the YAML there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} holds a {type(data).__name__}, not a mapping of config fields; "
            "write one 'field: value' per line"
        )
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """``line L, column C: problem`` from a PyYAML error (lines and columns 1-based)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    if mark is None:
        return f"YAML syntax error ({problem})"
    return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1} ({problem})"


def check_device(device: str) -> None:
    """``device`` is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``, ``xpu:N``, ...)."""
    if not _DEVICE.match(device):
        raise ValueError(
            f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N "
            "(or mps, xpu:N on those machines)"
        )
