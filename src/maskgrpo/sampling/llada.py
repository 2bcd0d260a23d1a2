"""Semi-autoregressive text sampling for masked diffusion LMs (LLaDA, Nie et al. 2025).

The completion of ``gen_length`` masked tokens is decoded in blocks of ``block_length``, left to
right, with ``steps / num_blocks`` steps per block. Each step runs one forward pass over the whole
sequence and draws a token at every masked position of the current block by Gumbel-max (float64
noise; temperature 0 is greedy). Only those positions can be committed in the step, so the LM
head, the noise and the softmax run there alone (:mod:`.draw`: block-local sampling, the same
distribution as drawing everywhere). Which drawn tokens are committed depends on ``remasking``:

- ``"low_confidence"`` (LLaDA): the ``k`` most confident masked positions of the current block,
  the block's masked count split evenly over its steps (earlier steps take the remainder);
- ``"random"`` (LLaDA's alternative): ``k`` positions of the block chosen at random;
- ``"emerge"`` (MaskGRPO, arXiv 2510.02880, Sec. 4): every masked position of the block unmasks
  independently with probability ``(k_t - k_s) / k_t`` under a cosine schedule over the block's
  steps, all remaining masks drawn at its last step. No fixed count: more diverse rollouts.
- ``"origin"`` (Dream's default, ``diffusion_generate(alg="origin")``): the same independent
  rule under Dream's linear schedule ``t: 1 -> 1e-3`` (unmask with probability ``1 - s/t``), the
  uniforms drawn at masked positions only, as Dream draws them. With ``block_length =
  gen_length`` and temperature 0 it reproduces Dream's decoding token for token.

Two options make decoding faster:

- ``kv_cache="prefix"`` / ``"dual"``: the block KV cache of Fast-dLLM (Wu et al. 2025, arXiv
  2505.22618): one full pass at the start of each block (and every ``kv_cache_refresh`` steps)
  computes the keys and values of every position; the block's other steps run only the block
  and what follows it (prefix) or the block alone (dual), reading the rest from the cache
  (:class:`maskgrpo.models.layers.BlockCache`). An approximation (the cached positions do not
  see the block change until the next refresh); refreshed at every step it decodes exactly.
  Models whose family has no native layers, or in a distributed wrapper, decode exactly;
- ``parallel_threshold`` (low-confidence remasking only; Fast-dLLM's parallel decoding, Sec. 3.3):
  every masked position of the block whose confidence reaches the threshold is committed, and
  at least the schedule's pace (``ceil(masked left / steps left)`` per row, so never more
  passes than ``steps``); a block ends as soon as it has no mask left. With ``steps =
  gen_length`` this is Fast-dLLM's rule (at least one token per step).
  :attr:`TextSample.forward_passes` counts the passes made.

Random stream, per step, in this order: the Gumbel noise at the block's masked positions
(:mod:`.draw`; none at temperature 0), then the commit draw: ``"random"`` and ``"emerge"`` one
float32 uniform per block position, ``(B, block_length)``; ``"origin"`` one per masked position
of the block, row-major; ``"low_confidence"`` none.

Batched over rows (no per-row Python loop), under ``torch.inference_mode()``, and all randomness
from the ``generator`` argument: same seed, same tokens. ``generator`` may be a list with one
generator per row, so a row's tokens do not depend on the batch it was sampled in (the same
rollouts on any number of processes). The mask token, and ids beyond the tokenizer's vocabulary
(padding rows of the embedding, MMaDA's image codes), can never be emitted.

The model is called through :func:`maskgrpo.models.calls.model_call`: its family's logit
alignment and padding form apply. Prompts must be left-padded to a common width; the padding
(each row's leading pad tokens, or ``attention_mask``) is hidden from the model exactly, so at
temperature 0 a row's tokens do not depend on the rows it is batched with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.calls import ModelCall, model_call
from ..models.layers import CACHE_MODES, BlockCache
from .common import (
    Generators,
    cosine_schedule,
    emerge_reveal,
    linear_transfer,
    reveal_masked,
    uniform,
)
from .draw import draw_masked

__all__ = ["CACHE_MODES", "REMASKING", "TextSample", "generate", "transfer_schedule"]

log = logging.getLogger(__name__)

REMASKING = ("low_confidence", "random", "emerge", "origin")
_WARNED: set[str] = set()


@dataclass(frozen=True)
class TextSample:
    """Result of :func:`generate`: ``sequences`` ``(B, P + L)`` and ``completions`` ``(B, L)``.

    ``forward_passes``: model passes made (one per step); ``full_passes``: those over the whole
    sequence (all of them without a cache; one per block and refresh with one).
    """

    sequences: Tensor
    completions: Tensor
    prompt_width: int
    forward_passes: int
    full_passes: int = 0


def transfer_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens committed at each of a block's ``steps``: an even split, remainder first (LLaDA)."""
    base, rem = divmod(block_length, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def _check_fast(kv_cache: str, threshold: float | None, remasking: str, refresh: int) -> None:
    if kv_cache not in CACHE_MODES:
        raise ValueError(f"kv_cache={kv_cache!r} is unknown; choose one of {CACHE_MODES}")
    if refresh < 0:
        raise ValueError(
            f"kv_cache_refresh={refresh} must be >= 0 (0: refresh the cache once per block)"
        )
    if threshold is None:
        return
    if not 0 < threshold <= 1:
        raise ValueError(
            f"parallel_threshold={threshold} must be in (0, 1]: a confidence (softmax "
            "probability), e.g. 0.9; or leave it unset for the fixed schedule"
        )
    if remasking != "low_confidence":
        raise ValueError(
            f"parallel_threshold applies to remasking='low_confidence' (it ranks by "
            f"confidence), not {remasking!r}; unset it or use low_confidence"
        )


def _check(
    gen_length: int, steps: int, block_length: int, remasking: str, temperature: float
) -> int:
    if not 0 <= temperature < float("inf"):  # also rejects NaN
        raise ValueError(
            f"temperature must be >= 0 and finite, got {temperature}; use 0 for greedy decoding"
        )
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; choose one of {REMASKING}")
    if gen_length < 1 or block_length < 1 or steps < 1:
        raise ValueError(
            f"gen_length={gen_length}, block_length={block_length}, steps={steps} must be >= 1"
        )
    if gen_length % block_length:
        raise ValueError(
            f"gen_length={gen_length} must be a multiple of block_length={block_length}"
        )
    blocks = gen_length // block_length
    if steps % blocks:
        raise ValueError(
            f"steps={steps} must be a multiple of the number of blocks ({blocks} = "
            f"gen_length / block_length); e.g. steps={blocks * max(1, steps // blocks)}"
        )
    if steps // blocks > block_length:
        raise ValueError(
            f"{steps // blocks} steps per block exceed block_length={block_length}; "
            f"use at most steps={blocks * block_length}"
        )
    return blocks


def _topk_by_row(score: Tensor, k: Tensor) -> Tensor:
    """Bool mask of the ``k[b]`` highest entries of each row of ``score`` ``(B, L)``."""
    order = score.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return rank < k.unsqueeze(1)


def _block_cache(
    call: ModelCall, x: Tensor, keep: Tensor | None, kv_cache: str
) -> BlockCache | None:
    """The block KV cache of ``call``'s model, or None (exact decoding, said once per family)."""
    if kv_cache == "none":
        return None
    made = call.block_cache(x, keep, kv_cache)
    if made is None and call.family.name not in _WARNED:
        _WARNED.add(call.family.name)
        log.warning(
            "kv_cache=%r is unavailable for this %s model (no native layers for it, or a "
            "distributed wrapper); decoding without a cache",
            kv_cache,
            call.family.name,
        )
    return made


class _BlockStates:
    """Hidden states of a block's positions at each step: a full pass, or the block cache."""

    def __init__(
        self, call: ModelCall, keep: Tensor | None, cache: BlockCache | None, refresh_every: int
    ) -> None:
        self.call, self.keep, self.cache, self.refresh_every = call, keep, cache, refresh_every
        self.passes = self.full_passes = 0

    def __call__(self, x: Tensor, lo: int, hi: int, step: int) -> Tensor:
        """``(B, hi - lo, D)`` for step ``step`` of the block ``[lo, hi)``."""
        self.passes += 1
        if self.cache is None:
            self.full_passes += 1
            return self.call.hidden_states(x, self.keep)[:, lo:hi]
        if step == 0 or (self.refresh_every and step % self.refresh_every == 0):
            self.full_passes += 1
            return self.cache.refresh(x)[:, lo:hi]
        return self.cache.block(x, lo, hi)


def _commit_count(masked: Tensor, steps_left: int, conf: Tensor, threshold: float | None) -> Tensor:
    """Per row: ``ceil(masked / steps_left)`` (LLaDA's even split, remainder first), raised to
    the number of masked positions whose confidence reaches ``threshold``."""
    left = masked.sum(dim=1)  # (B,)
    k = (left + steps_left - 1) // steps_left
    if threshold is not None:
        k = torch.maximum(k, ((conf >= threshold) & masked).sum(dim=1))
    return k


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt_ids: Tensor,
    *,
    mask_id: int,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    generator: Generators = None,
    attention_mask: Tensor | None = None,
    kv_cache: str = "none",
    kv_cache_refresh: int = 0,
    parallel_threshold: float | None = None,
) -> TextSample:
    """Sample completions for left-padded ``prompt_ids`` ``(B, P)``.

    ``attention_mask`` ``(B, P)`` marks real prompt tokens (left padding); by default the
    padding of a Hugging Face model is each row's leading run of pad tokens. The model must
    already be in eval mode. ``kv_cache`` (``"none"``, ``"prefix"``, ``"dual"``),
    ``kv_cache_refresh`` (steps between cache refreshes within a block; 0: once per block) and
    ``parallel_threshold`` (parallel decoding): see the module docstring.
    """
    blocks = _check(gen_length, steps, block_length, remasking, temperature)
    _check_fast(kv_cache, parallel_threshold, remasking, kv_cache_refresh)
    per_block = steps // blocks
    batch, width = prompt_ids.shape
    device = prompt_ids.device
    call = model_call(model)
    keep = attention_mask.bool() if attention_mask is not None else call.padding(prompt_ids)
    completion = torch.full((batch, gen_length), mask_id, dtype=prompt_ids.dtype, device=device)
    x = torch.cat([prompt_ids, completion], dim=1)  # (B, P + L)
    if keep is not None:
        keep = torch.cat([keep, torch.ones_like(completion, dtype=torch.bool)], dim=1)
    cache = _block_cache(call, x, keep, kv_cache)
    states = _BlockStates(call, keep, cache, kv_cache_refresh)
    origin = linear_transfer(per_block)
    for blk in range(blocks):
        lo, hi = width + blk * block_length, width + (blk + 1) * block_length
        for s in range(per_block):
            masked = x[:, lo:hi] == mask_id  # (B, block_length)
            if not bool(masked.any()):  # parallel decoding finished the block early
                break
            drawn, conf = draw_masked(
                states(x, lo, hi, s),  # (B, block_length, D)
                masked,
                call.head,
                temperature=temperature,
                generator=generator,
                mask_id=mask_id,
                vocab_limit=call.vocab_limit,
            )  # (B, block_length) each
            if remasking == "emerge":
                k_t = cosine_schedule(s / per_block)
                k_s = cosine_schedule((s + 1) / per_block)
                commit = emerge_reveal(
                    masked, k_t, k_s, last=s == per_block - 1, generator=generator
                )
            elif remasking == "origin":
                commit = reveal_masked(masked, origin[s], generator)
            else:
                k = _commit_count(masked, per_block - s, conf, parallel_threshold)
                if remasking == "random":
                    conf = uniform(conf.shape, generator, device=device)
                score = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
                commit = _topk_by_row(score, k) & masked
            x[:, lo:hi] = torch.where(commit, drawn, x[:, lo:hi])
    return TextSample(x, x[:, width:], width, states.passes, states.full_passes)
