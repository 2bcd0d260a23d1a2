"""Primitives shared by the samplers: Gumbel-max draws, the cosine schedule, the emerge rule.

Every random draw takes an explicit ``torch.Generator``; nothing here touches the global RNG.
A draw may instead take one generator per row (:data:`Generators`): row ``b`` then draws its
noise from ``generators[b]`` alone, so a row's tokens do not depend on which other rows share
its batch (the same rollouts on one process or on many).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "Generators",
    "cosine_schedule",
    "emerge_reveal",
    "gumbel_noise",
    "gumbel_sample",
    "linear_transfer",
    "reveal_masked",
    "uniform",
]

Generators = torch.Generator | Sequence[torch.Generator] | None


def uniform(
    shape: tuple[int, ...] | torch.Size,
    generator: Generators,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``U[0, 1)`` draws of ``shape``; with a generator per row, row ``b`` comes from ``generator[b]``."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, dtype=dtype, device=device, generator=generator)
    if len(generator) != shape[0]:
        raise ValueError(
            f"got {len(generator)} per-row generators for a batch of {shape[0]} rows; "
            "pass one generator per row (or a single generator)"
        )
    rows = [torch.rand(shape[1:], dtype=dtype, device=device, generator=g) for g in generator]
    return torch.stack(rows) if rows else torch.empty(shape, dtype=dtype, device=device)


def gumbel_noise(shape: torch.Size, generator: Generators, device: torch.device) -> Tensor:
    """Standard Gumbel noise in float64, ``-log(-log(u))`` with both logs kept finite."""
    u = uniform(shape, generator, dtype=torch.float64, device=device)
    return -torch.log((-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300))


def gumbel_sample(
    logits: Tensor, temperature: float, generator: Generators
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
        gumbel = gumbel_noise(logits64.shape, generator, logits.device)
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
    generator: Generators,
) -> Tensor:
    """The emerge rule (MaskGRPO, arXiv 2510.02880, Sec. 4): which masked positions unmask now.

    Going from masked fraction ``k_t`` to ``k_s < k_t`` every masked position unmasks
    independently with probability ``(k_t - k_s) / k_t``; at the last step all do.
    ``still_masked``: ``(B, N)`` bool. Returns a ``(B, N)`` bool subset of ``still_masked``.
    """
    if last or k_t <= 0:
        return still_masked.clone()
    p = min(max((k_t - k_s) / k_t, 0.0), 1.0)
    u = uniform(still_masked.shape, generator, device=still_masked.device)
    return still_masked & (u < p)


def linear_transfer(steps: int, eps: float = 1e-3) -> list[Tensor | float]:
    """Dream's default ("origin") schedule: the chance a masked position unmasks at each step.

    ``t`` runs linearly from 1 to ``eps`` over ``steps`` (float32, as Dream's
    ``diffusion_generate`` computes it); step ``i`` unmasks with probability ``1 - t_{i+1} / t_i``
    and the last step unmasks everything. Returned as 0-d float32 tensors (1.0 last), so a
    comparison ``u < p`` rounds exactly as Dream's does.
    """
    t = torch.linspace(1, eps, steps + 1)
    return [1 - t[i + 1] / t[i] if i < steps - 1 else 1.0 for i in range(steps)]


def reveal_masked(still_masked: Tensor, p: Tensor | float, generator: Generators) -> Tensor:
    """Each position of ``still_masked`` ``(B, N)`` unmasks independently with probability ``p``.

    Uniforms are drawn only for masked positions, in row-major order: with one generator,
    ``rand(#masked)`` over the whole batch (the draw of Dream's ``diffusion_generate``); with a
    generator per row, ``rand(#masked in row b)`` from ``generator[b]``.
    """
    device = still_masked.device
    if generator is None or isinstance(generator, torch.Generator):
        u = torch.rand(int(still_masked.sum()), generator=generator, device=device)
    else:
        if len(generator) != still_masked.shape[0]:
            raise ValueError(
                f"got {len(generator)} per-row generators for a batch of "
                f"{still_masked.shape[0]} rows; pass one generator per row (or a single one)"
            )
        parts = [
            torch.rand(int(row.sum()), generator=g, device=device)
            for row, g in zip(still_masked, generator, strict=True)
        ]
        u = torch.cat(parts) if parts else torch.empty(0, device=device)
    commit = torch.zeros_like(still_masked)
    commit[still_masked] = u < p
    return commit
