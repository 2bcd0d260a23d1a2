"""MaskGRPO on aMUSEd / MUSE-style models: diffusers' ``UVit2DModel`` + ``VQModel``.

aMUSEd (Patil et al. 2024) predicts VQGAN codes on an ``h x w`` latent grid from text
conditioning: CLIP hidden states (``encoder_hidden_states``), a pooled text embedding and
micro-conditioning (original size, crop offsets, aesthetic score; five numbers per image). The
mask token id is ``codebook_size`` (the first id past the codes). This adapter gives the samplers
a ``logits_fn`` over the flattened grid, scores log-probs of codes on masked views (the MaskGRPO
estimator, random re-masking with truncation 0.8), runs one MaskGRPO update batch, and decodes
codes to uint8 pixels through the VQ model so rewards score pixels.

Left to the caller: text encoding (run the pipeline's CLIP text encoder and keep the
conditional and empty-prompt embeddings as :class:`AmusedConditioning`), LoRA wrapping, and
mixed precision. The ratio targets the unguided conditional model (see ``docs/image.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..grpo import grpo_loss
from ..masking import mask_ratios, remask
from ..rng import derive_generator
from ..sampling.guidance import LogitsFn

__all__ = [
    "AmusedConditioning",
    "AmusedStepStats",
    "amused_grpo_update",
    "amused_logits_fn",
    "amused_logprobs",
    "decode_codes",
]


@dataclass(frozen=True)
class AmusedConditioning:
    """Per-row conditioning: ``encoder_hidden_states`` ``(B, S, E)``, ``pooled_text_emb``
    ``(B, P)``, ``micro_conds`` ``(B, 5)`` (width, height, crop top, crop left, aesthetic)."""

    encoder_hidden_states: Tensor
    pooled_text_emb: Tensor
    micro_conds: Tensor

    def rows(self, index: slice | Tensor) -> AmusedConditioning:
        return AmusedConditioning(
            self.encoder_hidden_states[index], self.pooled_text_emb[index], self.micro_conds[index]
        )


def _grid(transformer: Any, codes: Tensor, height: int, width: int) -> Tensor:
    if codes.shape[1] != height * width:
        raise ValueError(
            f"codes have {codes.shape[1]} positions but the latent grid is {height}x{width}; "
            "pass the grid of the model's sample size"
        )
    return codes.view(codes.shape[0], height, width)  # (B, h, w)


def code_logits(
    transformer: nn.Module, cond: AmusedConditioning, codes: Tensor, height: int, width: int
) -> Tensor:
    """``UVit2DModel`` logits as ``(B, N, K)`` for codes ``(B, N)`` (mask id at masked cells)."""
    logits = transformer(
        _grid(transformer, codes, height, width),
        encoder_hidden_states=cond.encoder_hidden_states,
        pooled_text_emb=cond.pooled_text_emb,
        micro_conds=cond.micro_conds,
    )  # (B, K, h, w)
    return logits.flatten(2).transpose(1, 2)  # (B, N, K)


def amused_logits_fn(
    transformer: nn.Module, cond: AmusedConditioning, height: int, width: int
) -> LogitsFn:
    """A sampler ``logits_fn`` closing over the conditioning: codes ``(B, N)`` -> ``(B, N, K)``."""

    def fn(codes: Tensor) -> Tensor:
        return code_logits(transformer, cond, codes, height, width)

    return fn


def amused_logprobs(
    transformer: nn.Module,
    cond: AmusedConditioning,
    noisy: Tensor,
    targets: Tensor,
    scored: Tensor,
    height: int,
    width: int,
) -> Tensor:
    """``log pi(targets | noisy, cond)`` at ``scored`` cells, float32 ``(B, N)``, 0 elsewhere."""
    logits = code_logits(transformer, cond, noisy, height, width).float()  # (B, N, K)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(scored, logp, torch.zeros_like(logp))


@dataclass(frozen=True)
class AmusedStepStats:
    loss: float
    kl: float
    clip_fraction: float
    tokens: int


def amused_grpo_update(
    transformer: nn.Module,
    optimizer: torch.optim.Optimizer,
    cond: AmusedConditioning,
    codes: Tensor,
    advantages: Tensor,
    *,
    mask_id: int,
    height: int,
    width: int,
    seed: int,
    step: int,
    mu: int = 8,
    gamma: float = 0.8,
    eps: float = 0.2,
    beta: float = 0.0,
    ref_model: nn.Module | None = None,
    max_grad_norm: float = 1.0,
) -> list[AmusedStepStats]:
    """The ``mu`` MaskGRPO updates of one rollout batch: codes ``(B, N)``, advantages ``(B,)``.

    View ``j`` re-masks each code with probability ``r_j`` (random re-masking, truncation
    ``gamma``; MaskGRPO Sec. 4) from a generator seeded by ``(seed, step, "mask", j)``; old and
    reference log-probs are computed on the same views before the first update.
    """
    if beta > 0 and ref_model is None:
        raise ValueError(f"beta={beta} > 0 needs ref_model; pass a frozen copy or set beta=0")
    transformer.eval()  # dropout off: the ratio is exactly 1 at the first update
    views, old, ref = [], [], []
    with torch.no_grad():
        for j, ratio in enumerate(mask_ratios(gamma, mu)):
            gen = derive_generator(seed, step, "mask", j, device=codes.device)
            view = remask(codes, 0, ratio, "random", mask_id=mask_id, generator=gen)
            noisy, scored = view.noisy_ids[0], view.scored[0]  # (B, N)
            views.append((noisy, scored))
            old.append(amused_logprobs(transformer, cond, noisy, codes, scored, height, width))
            if ref_model is not None:
                ref.append(amused_logprobs(ref_model, cond, noisy, codes, scored, height, width))
    stats = []
    for j, (noisy, scored) in enumerate(views):
        if not bool(scored.any()):
            continue  # nothing masked in this view: no update
        logp = amused_logprobs(transformer, cond, noisy, codes, scored, height, width)
        loss, st = grpo_loss(
            logp, old[j], advantages, scored, ref_logp=ref[j] if ref else None, beta=beta, eps=eps
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), max_grad_norm)
        optimizer.step()
        stats.append(AmusedStepStats(float(loss.detach()), st.kl, st.clip_fraction, st.tokens))
    return stats


@torch.no_grad()
def decode_codes(vqvae: nn.Module, codes: Tensor, height: int, width: int) -> list[np.ndarray]:
    """VQ codes ``(B, N)`` -> ``B`` uint8 ``(H, W, 3)`` images (as the aMUSEd pipeline decodes)."""
    channels = vqvae.config.latent_channels  # type: ignore[union-attr]
    shape = (codes.shape[0], height, width, channels)
    out = vqvae.decode(codes.flatten(), force_not_quantize=True, shape=shape)  # type: ignore[operator]
    pixels = out.sample.clamp(0.0, 1.0)  # (B, 3, H, W)
    arr = (pixels.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return list(arr)
