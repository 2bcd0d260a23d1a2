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

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.calls import model_call
from .common import (
    Generators,
    cosine_schedule,
    emerge_reveal,
    linear_transfer,
    reveal_masked,
    uniform,
)
from .draw import draw_masked

__all__ = ["REMASKING", "TextSample", "generate", "transfer_schedule"]

REMASKING = ("low_confidence", "random", "emerge", "origin")


@dataclass(frozen=True)
class TextSample:
    """Result of :func:`generate`: ``sequences`` ``(B, P + L)`` and ``completions`` ``(B, L)``."""

    sequences: Tensor
    completions: Tensor
    prompt_width: int
    forward_passes: int


def transfer_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens committed at each of a block's ``steps``: an even split, remainder first (LLaDA)."""
    base, rem = divmod(block_length, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


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
) -> TextSample:
    """Sample completions for left-padded ``prompt_ids`` ``(B, P)``.

    ``attention_mask`` ``(B, P)`` marks real prompt tokens (left padding); by default the
    padding of a Hugging Face model is each row's leading run of pad tokens. The model must
    already be in eval mode.
    """
    blocks = _check(gen_length, steps, block_length, remasking, temperature)
    per_block = steps // blocks
    batch, width = prompt_ids.shape
    device = prompt_ids.device
    call = model_call(model)
    keep = attention_mask.bool() if attention_mask is not None else call.padding(prompt_ids)
    completion = torch.full((batch, gen_length), mask_id, dtype=prompt_ids.dtype, device=device)
    x = torch.cat([prompt_ids, completion], dim=1)  # (B, P + L)
    if keep is not None:
        keep = torch.cat([keep, torch.ones_like(completion, dtype=torch.bool)], dim=1)
    counts = transfer_schedule(block_length, per_block)
    origin = linear_transfer(per_block)
    for blk in range(blocks):
        lo, hi = width + blk * block_length, width + (blk + 1) * block_length
        for s in range(per_block):
            masked = x[:, lo:hi] == mask_id  # (B, block_length)
            hidden = call.hidden_states(x, keep)[:, lo:hi]  # (B, block_length, D)
            drawn, conf = draw_masked(
                hidden,
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
                if remasking == "random":
                    conf = uniform(conf.shape, generator, device=device)
                score = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
                k = torch.full((batch,), counts[s], device=device)
                commit = _topk_by_row(score, k) & masked
            x[:, lo:hi] = torch.where(commit, drawn, x[:, lo:hi])
    return TextSample(x, x[:, width:], width, steps)
