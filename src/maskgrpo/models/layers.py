"""A transformer's layers as plain steps, and the block KV cache built on them.

:class:`Layers` is what one architecture adapter provides (LLaDA/MMaDA and Dream in
:mod:`.native_llada` and :mod:`.native_dream`, the built-in tiny model here): embed ids, the
queries/keys/values of a layer (rotary positions applied), the rest of the layer given the
attention output, the final norm. :func:`run_span` is the one layer loop over them: it runs a
*span* of positions ``[lo, lo + n)`` of a sequence of length ``L``, writes the span's keys and
values into a :class:`KVCache` and attends over all ``L`` cached keys. A span of the whole
sequence is an ordinary forward pass that also fills the cache.

:class:`BlockCache` is the KV cache of semi-autoregressive decoding (Fast-dLLM, Wu et al. 2025,
arXiv 2505.22618, Sec. 3.2): at the start of a block (and every ``refresh`` steps) one full
pass refreshes the keys and values of every position; the block's other steps run only

- ``"prefix"``: the block and everything after it (the prompt and finished blocks are read from
  the cache);
- ``"dual"``: the block alone (the prompt, the finished blocks and the masked suffix are read
  from the cache).

Both are approximations: in a bidirectional model the cached keys and values of the other
positions would change as the block changes; the cache keeps those of the last refresh. With a
refresh at every step a cached sampler decodes exactly.

Padding: a key-padding mask hides padding keys from every query; with ``real_positions`` the
rotary positions count real tokens only (``cumsum(keep) - 1``), so a left-padded row computes
what it computes alone (as the families' padding rules do). Dropout is not applied (the cache
serves sampling in eval mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CACHE_MODES",
    "BlockCache",
    "KVCache",
    "Layers",
    "TinyLayers",
    "apply_rotary",
    "real_token_positions",
    "rotary_tables",
    "run_span",
]

CACHE_MODES = ("none", "prefix", "dual")


class Layers(Protocol):
    """One architecture's layers as steps; ``q`` ``(B, H, n, hd)``, ``k, v`` ``(B, Hkv, n, hd)``."""

    n_layers: int
    real_positions: bool  # rotary positions count real tokens only (left padding is skipped)

    def embed(self, ids: Tensor, positions: Tensor) -> Tensor: ...

    def attention_inputs(
        self, i: int, x: Tensor, positions: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]: ...

    def finish(self, i: int, x: Tensor, attended: Tensor) -> Tensor: ...

    def norm(self, x: Tensor) -> Tensor: ...


def real_token_positions(keep: Tensor) -> Tensor:
    """``(B, L)`` positions counting the real tokens of key-padding ``keep`` (``cumsum - 1``).

    Padding positions get 1, as Dream's sampler gives them (their outputs are never used).
    """
    return (keep.long().cumsum(dim=1) - 1).masked_fill(~keep, 1)


def rotary_tables(positions: Tensor, inv_freq: Tensor) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` ``(B, 1, n, hd)`` float32 of integer ``positions`` ``(B, n)`` (RoPE)."""
    freqs = positions.float()[..., None] * inv_freq.float()  # (B, n, hd / 2)
    angles = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, n, hd)
    return angles.cos(), angles.sin()


def apply_rotary(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``t * cos + rotate_half(t) * sin`` (the two halves of the head dimension rotated)."""
    half = t.shape[-1] // 2
    rotated = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
    return t * cos + rotated * sin


@dataclass
class KVCache:
    """Keys and values of every layer, ``(B, Hkv, L, hd)`` each, filled by :func:`run_span`."""

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)

    def write(self, i: int, lo: int, k: Tensor, v: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Store layer ``i``'s ``k, v`` at positions ``[lo, lo + n)``; return all ``L`` of them."""
        if i == len(self.keys):  # first pass: it must cover the whole sequence
            if lo != 0 or k.shape[2] != length:
                raise ValueError("a KV cache is filled by a pass over the whole sequence first")
            self.keys.append(k.contiguous())
            self.values.append(v.contiguous())
        else:
            self.keys[i][:, :, lo : lo + k.shape[2]] = k
            self.values[i][:, :, lo : lo + v.shape[2]] = v
        return self.keys[i], self.values[i]


# torch >= 2.5 attends grouped key heads without copying them (``enable_gqa``)
_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def _attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """Bidirectional attention of ``q`` over every key; ``(B, n, H * hd)``."""
    grouped = k.shape[1] != q.shape[1]  # grouped-query attention: a key head serves a group
    if grouped and _GQA:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, enable_gqa=True)
    else:
        if grouped:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (B, H, n, hd)
    return out.transpose(1, 2).flatten(2)


def run_span(
    layers: Layers,
    ids: Tensor,
    positions: Tensor,
    *,
    lo: int = 0,
    length: int | None = None,
    cache: KVCache | None = None,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Final hidden states ``(B, n, D)`` of the span ``ids`` ``(B, n)`` at ``[lo, lo + n)``.

    ``positions`` ``(B, n)``: rotary/absolute positions of the span. With ``cache`` the span's
    keys and values are written into it and the span attends over all ``length`` cached keys
    (the first call must cover the whole sequence); without, the span is the whole sequence.
    ``key_mask`` ``(B, 1, 1, L)`` bool, True where a key may be attended.
    """
    length = ids.shape[1] if length is None else length
    x = layers.embed(ids, positions)
    for i in range(layers.n_layers):
        q, k, v = layers.attention_inputs(i, x, positions)
        if cache is not None:
            k, v = cache.write(i, lo, k, v, length)
        x = layers.finish(i, x, _attend(q, k, v, key_mask))
    return layers.norm(x)


class BlockCache:
    """The KV cache of one batch of sequences ``(B, L)`` during semi-autoregressive decoding.

    ``keep`` ``(B, L)``: key padding (None: nothing hidden). ``shift``: the output at ``i - 1``
    predicts token ``i`` (Dream); the returned hidden states are aligned so that row ``j``
    predicts token ``j`` of the span asked for. ``context``: entered around every pass (the
    adapter-disabled reference of a LoRA policy).
    """

    def __init__(
        self,
        layers: Layers,
        keep: Tensor | None,
        *,
        batch: int,
        length: int,
        device: torch.device,
        mode: str = "dual",
        shift: bool = False,
        context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        if mode not in ("prefix", "dual"):
            raise ValueError(f"cache mode {mode!r} is unknown; choose 'prefix' or 'dual'")
        self.layers, self.mode, self.shift, self.context = layers, mode, shift, context
        self.length = length
        self.key_mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, L)
        if keep is not None and layers.real_positions:
            self.positions = real_token_positions(keep)  # (B, L)
        else:
            self.positions = torch.arange(length, device=device).expand(batch, length)
        self.cache = KVCache()
        self.passes = 0

    def refresh(self, x: Tensor) -> Tensor:
        """One pass over the whole sequence ``x`` ``(B, L)``: every key and value recomputed.

        Returns the aligned hidden states ``(B, L, D)``.
        """
        self.cache = KVCache()
        with self.context():
            out = run_span(
                self.layers,
                x,
                self.positions,
                length=self.length,
                cache=self.cache,
                key_mask=self.key_mask,
            )
        self.passes += 1
        return torch.cat([out[:, :1], out[:, :-1]], dim=1) if self.shift else out

    def block(self, x: Tensor, lo: int, hi: int) -> Tensor:
        """Aligned hidden states ``(B, hi - lo, D)`` of tokens ``[lo, hi)`` from a cached pass.

        Runs ``[lo, hi)`` (``"dual"``) or ``[lo, L)`` (``"prefix"``), one position earlier with
        ``shift``; the other positions' keys and values come from the cache.
        """
        if not self.cache.keys:
            raise ValueError("BlockCache.block() before refresh(): refresh the cache first")
        start = lo - 1 if self.shift else lo
        if start < 0:
            raise ValueError(f"the block [{lo}, {hi}) has no position before it to predict from")
        end = hi if self.mode == "dual" else self.length
        with self.context():
            out = run_span(
                self.layers,
                x[:, start:end],
                self.positions[:, start:end],
                lo=start,
                length=self.length,
                cache=self.cache,
                key_mask=self.key_mask,
            )
        self.passes += 1
        return out[:, : hi - lo]


class TinyLayers:
    """:class:`Layers` of the built-in :class:`~maskgrpo.models.tiny.TinyDiffusionLM`.

    Positions ``0..L-1`` (its padding stays in place: ``real_positions`` off), learned or rotary,
    pre-norm blocks with a fused ``qkv`` projection, GELU MLP.
    """

    real_positions = False

    def __init__(self, model: Any) -> None:
        self.model = model
        self.blocks = model.blocks
        self.n_layers = len(self.blocks)
        self.heads = int(model.config.n_heads)

    def embed(self, ids: Tensor, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.model.config.max_length:
            raise ValueError(
                f"position {int(positions.max())} exceeds the model's max_length "
                f"{self.model.config.max_length}; shorten the prompt/generation"
            )
        x = self.model.tok(ids)
        return x if self.model.pos is None else x + self.model.pos(positions)

    def attention_inputs(
        self, i: int, x: Tensor, positions: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        block = self.blocks[i]
        b, n, _ = x.shape
        qkv = block.qkv(block.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = block.rotate(qkv[0], qkv[1], positions)
        return q, k, qkv[2]

    def finish(self, i: int, x: Tensor, attended: Tensor) -> Tensor:
        block = self.blocks[i]
        x = x + block.proj(attended)
        return x + block.mlp(block.norm2(x))

    def norm(self, x: Tensor) -> Tensor:
        return self.model.norm(x)
