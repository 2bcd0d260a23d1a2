"""Primitives shared by the samplers: Gumbel-max draws, the cosine schedule, the emerge rule.

Every random draw takes an explicit ``torch.Generator``; nothing here touches the global RNG.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["cosine_schedule", "emerge_reveal", "gumbel_sample"]


def gumbel_sample(
    logits: Tensor, temperature: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Draw one token per position by Gumbel-max and return ``(tokens, probs)``.

    ``logits``: ``(..., V)``. ``temperature == 0`` is the greedy argmax (no noise drawn).
    The noise is float64: low-precision Gumbel noise degrades sample quality (LLaDA).
    ``probs`` is the softmax probability (temperature 1) of the drawn token, the confidence
    used by low-confidence remasking.  Returns ``(..., )`` long and ``(..., )`` float32.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}; use 0 for greedy decoding")
    logits64 = logits.double()
    if temperature == 0:
        tokens = logits64.argmax(dim=-1)
    else:
        u = torch.rand(
            logits64.shape, dtype=torch.float64, device=logits.device, generator=generator
        )
        neg_log_u = (-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300)  # Exp(1), > 0
        gumbel = -torch.log(neg_log_u)
        tokens = (logits64 / temperature + gumbel).argmax(dim=-1)
    probs = torch.softmax(logits64, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, probs.float()


def cosine_schedule(progress: float) -> float:
    """Fraction of tokens still masked at ``progress`` in [0, 1]: ``cos(pi/2 * progress)``."""
    return math.cos(math.pi / 2 * min(max(progress, 0.0), 1.0))


def emerge_reveal(
    still_masked: Tensor,
    k_t: float,
    k_s: float,
    *,
    last: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """The emerge rule (MaskGRPO, arXiv 2510.02880, Sec. 4): which masked positions unmask now.

    Going from masked fraction ``k_t`` to ``k_s < k_t`` every masked position unmasks
    independently with probability ``(k_t - k_s) / k_t``; at the last step all do.
    ``still_masked``: ``(B, N)`` bool. Returns a ``(B, N)`` bool subset of ``still_masked``.
    """
    if last or k_t <= 0:
        return still_masked.clone()
    p = min(max((k_t - k_s) / k_t, 0.0), 1.0)
    u = torch.rand(still_masked.shape, device=still_masked.device, generator=generator)
    return still_masked & (u < p)
