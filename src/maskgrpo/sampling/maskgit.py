"""The MaskGIT sampler for image-code sequences (Chang et al. 2022), MaskGRPO's baseline.

Start fully masked. At step ``s`` of ``T`` draw a token at every masked position from the
(guided) model at ``temperature``; score each by the log-probability of the drawn token plus
Gumbel noise scaled by ``choice_temperature * (1 - s/T)`` (annealed to 0); then re-mask the
least confident so that ``floor(N cos(pi/2 (s+1)/T))`` positions stay masked, clamped so each
step reveals at least one token and at least one stays masked until the last step. Revealed
tokens never change. The reference code anneals with ``(s+1)/T``; we follow the MaskGRPO brief's
``s/T`` (it only changes the noise, not the schedule). Simplification: no prefix codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .common import gumbel_noise, gumbel_sample
from .emerge import check_sampler_args, masked_logits
from .guidance import LogitsFn, with_guidance

__all__ = ["MaskGITResult", "maskgit_schedule", "sample"]


@dataclass(frozen=True)
class MaskGITResult:
    """``codes`` ``(B, N)`` long, no mask left; ``masked_per_step`` ``(T + 1, B)``: masked count
    per row before the first step and after each step."""

    codes: Tensor
    masked_per_step: Tensor


def maskgit_schedule(num_tokens: int, steps: int) -> list[int]:
    """Tokens still masked after each step: ``floor(N cos(pi/2 (s+1)/T))``, clamped to
    ``[1, previous - 1]`` before the last step and 0 after it."""
    if steps > num_tokens:
        raise ValueError(
            f"steps={steps} exceeds num_tokens={num_tokens}; each step must reveal a token, "
            "so use steps <= num_tokens"
        )
    out, prev = [], num_tokens
    for s in range(steps):
        if s == steps - 1:
            left = 0
        else:
            left = math.floor(num_tokens * math.cos(math.pi / 2 * (s + 1) / steps))
            left = min(max(left, steps - 1 - s), prev - 1)  # room for one reveal per later step
        out.append(left)
        prev = left
    return out


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
    choice_temperature: float | None = None,
    device: torch.device | str | None = None,
) -> MaskGITResult:
    """Draw ``batch_size`` code sequences of length ``num_tokens`` with MaskGIT decoding.

    Same callables and guidance as :func:`maskgrpo.sampling.emerge.sample`.
    ``choice_temperature`` scales the confidence noise (default: ``temperature``).
    """
    check_sampler_args(batch_size, num_tokens, steps, temperature)
    schedule = maskgit_schedule(num_tokens, steps)
    guided = with_guidance(logits_fn, uncond_logits_fn, guidance_scale)
    noise_scale = temperature if choice_temperature is None else choice_temperature
    dev = torch.device(device) if device is not None else generator.device
    codes = torch.full((batch_size, num_tokens), mask_id, dtype=torch.long, device=dev)  # (B, N)
    counts = [torch.full((batch_size,), num_tokens, dtype=torch.long, device=dev)]
    for s, left in enumerate(schedule):
        masked = codes == mask_id  # (B, N)
        logits = masked_logits(guided, codes, mask_id).double()  # (B, N, K)
        tokens, _ = gumbel_sample(logits, temperature, generator)  # (B, N)
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]  # (B, N)
        conf = logp + noise_scale * (1.0 - s / steps) * gumbel_noise(logp.shape, generator, dev)
        conf = conf.masked_fill(~masked, float("inf"))  # known tokens are never re-masked
        rank = conf.argsort(dim=-1, stable=True).argsort(dim=-1)  # (B, N) 0 = least confident
        keep_masked = rank < left
        codes = torch.where(masked & ~keep_masked, tokens, codes)
        counts.append((codes == mask_id).sum(-1))
    return MaskGITResult(codes=codes, masked_per_step=torch.stack(counts))
