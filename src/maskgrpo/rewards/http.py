"""A client for reward models served over HTTP + JSON (UnifiedReward, HPSv3, CLIP servers...).

Protocol: ``POST url`` with a JSON body ``{"prompts": [str], "images": [base64 PNG]}`` plus any
extra JSON-serialisable columns the caller forwards; the server answers ``{"rewards": [float |
null]}`` of the same length. Standard library only (``urllib``): per-request timeout, retries
with exponential backoff on network errors, timeouts and 5xx/429 answers, and ``None``
("unscorable", left out of the group baseline) for every item of a batch that still fails.
Nothing is ever unpickled. Images are encoded by a minimal PNG writer (8-bit RGB, no filter).
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["HttpReward", "encode_png", "png_base64"]

logger = logging.getLogger(__name__)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(image: np.ndarray | torch.Tensor) -> bytes:
    """PNG bytes of a uint8 ``(H, W, 3)`` image (colour type 2, filter 0 on every row)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}")
    h, w, _ = arr.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), arr.reshape(h, w * 3)], axis=1)  # (H, 1+3W)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def png_base64(image: np.ndarray | torch.Tensor) -> str:
    """Base64 (ASCII) of :func:`encode_png`."""
    return base64.b64encode(encode_png(image)).decode("ascii")


def _retryable(err: Exception) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code == 429
    return isinstance(err, urllib.error.URLError | TimeoutError | ConnectionError | OSError)


def _parse(body: bytes, key: str, n: int) -> list[float | None]:
    """Scores from a JSON answer; non-numbers become ``None``; the wrong length raises."""
    values = json.loads(body.decode("utf-8"))[key]
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"server returned {values!r} under {key!r}; expected a list of {n}")
    out: list[float | None] = []
    for v in values:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
        out.append(float(v) if ok else None)
    return out


class HttpReward:
    """Reward callable ``(prompts, completions, **columns) -> list[float | None]`` over HTTP.

    ``completions`` are decoded uint8 ``(H, W, 3)`` images. ``forward_columns`` names extra
    dataset columns sent along (must be JSON-serialisable). Batches of ``batch_size`` items go
    in one request each; a request gets ``retries`` more tries after the first, waiting
    ``backoff * 2**attempt`` seconds between them.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 16,
        response_key: str = "rewards",
        forward_columns: Sequence[str] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or batch_size < 1:
            raise ValueError(
                f"need timeout > 0, retries >= 0, backoff >= 0, batch_size >= 1; got {timeout}, "
                f"{retries}, {backoff}, {batch_size}"
            )
        self.url, self.timeout, self.retries, self.backoff = url, timeout, retries, backoff
        self.batch_size, self.response_key = batch_size, response_key
        self.forward_columns = tuple(forward_columns)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.__name__ = "http_reward"

    def _post(self, payload: dict[str, Any], n: int) -> list[float | None]:
        data = json.dumps(payload).encode("utf-8")
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return _parse(resp.read(), self.response_key, n)
            except (ValueError, KeyError) as err:  # a malformed answer: retrying will not help
                logger.warning("reward server %s answered badly: %s", self.url, err)
                break
            except Exception as err:
                if not _retryable(err):
                    logger.warning("reward server %s refused the request: %s", self.url, err)
                    break
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                else:
                    logger.warning(
                        "reward server %s failed %d times: %s", self.url, attempt + 1, err
                    )
        return [None] * n

    def __call__(
        self, prompts: Sequence[object], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        missing = [c for c in self.forward_columns if c not in columns]
        if missing:
            raise ValueError(
                f"columns {missing} are not in the batch; drop them from forward_columns"
            )
        out: list[float | None] = []
        for i in range(0, len(prompts), self.batch_size):
            sl = slice(i, i + self.batch_size)
            payload: dict[str, Any] = {
                "prompts": [str(p) for p in prompts[sl]],
                "images": [png_base64(c) for c in completions[sl]],
            }
            payload.update({c: list(columns[c][sl]) for c in self.forward_columns})
            out.extend(self._post(payload, len(payload["prompts"])))
        return out
