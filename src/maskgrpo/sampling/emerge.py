"""The emerge sampler for image-code sequences (MaskGRPO, arXiv 2510.02880, Sec. 4).

Start fully masked. Under the cosine schedule ``k(tau) = cos(pi tau / 2)`` (fraction still
masked), step ``s`` of ``T`` goes from ``k_t = k(s/T)`` to ``k_s = k((s+1)/T)``: every masked
position unmasks independently with probability ``(k_t - k_s) / k_t``, taking a token drawn
from the (guided) model distribution at ``temperature``; revealed tokens never change; the last
step draws every remaining mask. No confidence ranking and no fixed count per step, which keeps
GRPO rollouts diverse. Simplifications: no prefix/inpainting codes (every position starts
masked); the caller closes the conditioning over ``logits_fn`` and sets eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .common import cosine_schedule, emerge_reveal, gumbel_sample
from .guidance import LogitsFn, with_guidance

__all__ = ["EmergeResult", "check_sampler_args", "masked_logits", "sample"]


@dataclass(frozen=True)
class EmergeResult:
    """``codes`` ``(B, N)`` long, no mask left; ``masked_per_step`` ``(T + 1, B)``: masked count
    per row before each step and after the last; ``forward_passes``: conditional calls made."""

    codes: Tensor
    masked_per_step: Tensor
    forward_passes: int


def check_sampler_args(batch_size: int, num_tokens: int, steps: int, temperature: float) -> None:
    """Validate the arguments shared by the image samplers (ValueError naming the fix)."""
    if batch_size < 1 or num_tokens < 1:
        raise ValueError(f"batch_size={batch_size} and num_tokens={num_tokens} must be >= 1")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}; use 0 for greedy")


def masked_logits(logits_fn: LogitsFn, codes: Tensor, mask_id: int) -> Tensor:
    """Logits ``(B, N, K)`` in float32 with the mask id (if inside ``K``) never drawable."""
    logits = logits_fn(codes).float()  # (B, N, K)
    if logits.shape[:2] != codes.shape:
        raise ValueError(
            f"logits_fn returned {tuple(logits.shape)} for codes {tuple(codes.shape)}; "
            "it must return (B, N, K)"
        )
    if 0 <= mask_id < logits.shape[-1]:
        logits = logits.clone()
        logits[..., mask_id] = float("-inf")
    return logits


@torch.inference_mode()
def sample(
    logits_fn: LogitsFn,
    batch_size: int,
    num_tokens: int,
    *,
    mask_id: int,
    steps: int,
    temperature: float,
    guidance_scale: float,
    generator: torch.Generator,
    uncond_logits_fn: LogitsFn | None = None,
    device: torch.device | str | None = None,
) -> EmergeResult:
    """Draw ``batch_size`` code sequences of length ``num_tokens`` with the emerge rule.

    ``logits_fn(codes (B, N) long, mask_id at masked positions) -> (B, N, K)``; guidance
    ``(1 + w) cond - w uncond`` with ``w = guidance_scale`` (``w = 0`` never calls the
    unconditional branch). All randomness comes from ``generator``. ``device`` defaults to
    the generator's device.
    """
    check_sampler_args(batch_size, num_tokens, steps, temperature)
    guided = with_guidance(logits_fn, uncond_logits_fn, guidance_scale)
    dev = torch.device(device) if device is not None else generator.device
    codes = torch.full((batch_size, num_tokens), mask_id, dtype=torch.long, device=dev)  # (B, N)
    counts = [torch.full((batch_size,), num_tokens, dtype=torch.long, device=dev)]
    passes = 0
    for s in range(steps):
        masked = codes == mask_id  # (B, N)
        k_t, k_s = cosine_schedule(s / steps), cosine_schedule((s + 1) / steps)
        reveal = emerge_reveal(masked, k_t, k_s, last=s == steps - 1, generator=generator)
        if reveal.any():  # a step that reveals nothing needs no forward pass
            logits = masked_logits(guided, codes, mask_id)  # (B, N, K)
            tokens, _ = gumbel_sample(logits, temperature, generator)  # (B, N)
            codes = torch.where(reveal, tokens, codes)
            passes += 1
        counts.append((codes == mask_id).sum(-1))
    return EmergeResult(codes=codes, masked_per_step=torch.stack(counts), forward_passes=passes)
