"""Classifier-free guidance on logits for image samplers (Ho & Salimans 2022; as used by
MaskGRPO, arXiv 2510.02880, Sec. 4): ``(1 + w) * cond - w * uncond``.

The unconditional branch is the caller's model run on the empty prompt. ``w = 0`` returns the
conditional callable itself, so the unconditional branch is never evaluated.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

__all__ = ["LogitsFn", "with_guidance"]

LogitsFn = Callable[[Tensor], Tensor]  # codes (B, N) long -> logits (B, N, K) float


def with_guidance(cond_fn: LogitsFn, uncond_fn: LogitsFn | None, w: float) -> LogitsFn:
    """A logits callable applying guidance scale ``w`` (>= 0) to ``cond_fn`` and ``uncond_fn``."""
    if w < 0:
        raise ValueError(f"guidance scale must be >= 0, got {w}; use 0 to disable guidance")
    if w == 0:
        return cond_fn
    if uncond_fn is None:
        raise ValueError(
            f"guidance scale {w} needs uncond_logits_fn; pass it or set the scale to 0"
        )
    unc: LogitsFn = uncond_fn

    def guided(codes: Tensor) -> Tensor:
        cond = cond_fn(codes)  # (B, N, K)
        return (1.0 + w) * cond - w * unc(codes)

    return guided
