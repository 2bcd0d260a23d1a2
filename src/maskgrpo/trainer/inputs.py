"""Checks on training inputs before any rollout: prompts must fit the model's prompt window."""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = ["fit_prompts"]

log = logging.getLogger(__name__)


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def fit_prompts(
    rows: list[dict[str, Any]], tokenizer: _Tokenizer, width: int, *, truncate: bool
) -> list[dict[str, Any]]:
    """``rows`` whose prompts fit in ``width`` tokens.

    A longer prompt is an error naming its index and lengths, unless ``truncate``: then it keeps
    its last ``width`` tokens (the end sits next to the completion) and the count is logged.
    """
    out, cut = [], 0
    for i, row in enumerate(rows):
        ids = tokenizer.encode(row["prompt"])
        if len(ids) <= width:
            out.append(row)
            continue
        if not truncate:
            raise ValueError(
                f"prompt {i} has {len(ids)} tokens but the model allows {width} prompt tokens "
                "(max_length minus max_completion_length); shorten it, lower max_completion_length, or set "
                "truncate_prompts=true to keep its last tokens"
            )
        out.append({**row, "prompt": tokenizer.decode(ids[-width:])})
        cut += 1
    if cut:
        log.warning("truncate_prompts: kept the last %d tokens of %d prompt(s)", width, cut)
    return out
