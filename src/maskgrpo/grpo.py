"""GRPO maths for masked diffusion models: advantages, the clipped surrogate, k3 KL, the loss.

Pure functions over tensors (MaskGRPO, arXiv 2510.02880, Sec. 3; GRPO, Shao et al. 2024).
Per token ``k`` of rollout ``i`` on one masked view::

    A_i       = (R_i - mean_group(R)) / (std_group(R) + eps_std)
    rho_k     = exp(logp_k - logp_old_k)
    surrogate = min(rho_k A_i, clip(rho_k, 1 - eps, 1 + eps_high) A_i)
    kl_k      = exp(logp_ref_k - logp_k) - (logp_ref_k - logp_k) - 1          (k3)
    loss      = -sum_k mask_k (surrogate_k - beta kl_k) / normaliser

Unscorable rewards (``None``/NaN) are left out of the group statistics and get advantage 0.

The advantage scalings (:data:`ADVANTAGES`) and the loss normalisers (:data:`NORMALIZERS`) are
registries: a new one is a function plus its ``register`` line, and the configuration accepts
it (``scale_rewards``, ``loss_type``) without further changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .registry import Registry

__all__ = [
    "ADVANTAGES",
    "NORMALIZERS",
    "AdvantageFn",
    "LossStats",
    "NormalizerFn",
    "centred_groups",
    "clipped_surrogate",
    "grpo_loss",
    "group_advantages",
    "k3_kl",
    "masked_mean",
    "rewards_tensor",
]

# (groups, G) float64 rewards, NaN = unscorable; eps -> (groups, G) advantages (the unscorable
# entries are set to 0 afterwards).
AdvantageFn = Callable[[Tensor, float], Tensor]
# Per-token objective (B, L), scored mask (B, L) bool, the caller's normaliser -> the loss.
NormalizerFn = Callable[[Tensor, Tensor, "float | None"], Tensor]

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage method")
NORMALIZERS: Registry[NormalizerFn] = Registry("normalization")


def rewards_tensor(rewards: Sequence[float | None] | Tensor) -> Tensor:
    """Rewards as a float64 tensor, ``None`` becoming NaN (unscorable)."""
    if isinstance(rewards, Tensor):
        return rewards.to(torch.float64)
    return torch.tensor(
        [float("nan") if r is None else float(r) for r in rewards], dtype=torch.float64
    )


def centred_groups(rewards: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(valid, count, centred)`` of ``(groups, G)`` rewards (NaN = unscorable): which entries
    count, how many per group ``(groups, 1)``, and the rewards minus their group's mean (0 where
    unscorable)."""
    valid = ~torch.isnan(rewards)
    count = valid.sum(dim=1, keepdim=True)
    filled = torch.where(valid, rewards, torch.zeros_like(rewards))
    mean = filled.sum(dim=1, keepdim=True) / count.clamp_min(1)
    centred = torch.where(valid, rewards - mean, torch.zeros_like(rewards))
    return valid, count, centred


@ADVANTAGES.register("zscore", config_name="group")
def zscore_advantages(rewards: Tensor, eps: float) -> Tensor:
    """GRPO: centre, divide by the group's unbiased std plus ``eps``."""
    _, count, centred = centred_groups(rewards)
    var = (centred**2).sum(dim=1, keepdim=True) / (count - 1).clamp_min(1)
    return centred / (var.sqrt() + eps)


@ADVANTAGES.register("mean", config_name="none")
def mean_advantages(rewards: Tensor, eps: float) -> Tensor:
    """Centre only (Dr.GRPO, d1)."""
    return centred_groups(rewards)[2]


@ADVANTAGES.register("rank", config_name="rank")
def rank_advantages(rewards: Tensor, eps: float) -> Tensor:
    """Centred ranks scaled to [-1, 1], ties averaged; robust to the reward scale."""
    valid, count, _ = centred_groups(rewards)
    values = rewards.masked_fill(~valid, float("inf"))
    less = (values.unsqueeze(2) > values.unsqueeze(1)) & valid.unsqueeze(1)  # (n, G, G)
    equal = (values.unsqueeze(2) == values.unsqueeze(1)) & valid.unsqueeze(1)
    rank = less.sum(dim=2).double() + (equal.sum(dim=2).double() + 1.0) / 2.0
    half = (count.double() - 1.0) / 2.0
    return (rank - (count.double() + 1.0) / 2.0) / half.clamp_min(0.5)


def group_advantages(
    rewards: Sequence[float | None] | Tensor,
    group_size: int,
    method: str = "zscore",
    eps: float = 1e-4,
) -> Tensor:
    """Group-relative advantages, ``(N,)`` float32 for ``N = num_groups * group_size`` rewards.

    Consecutive runs of ``group_size`` rewards form a group. ``method`` names an entry of
    :data:`ADVANTAGES`: ``"zscore"`` (GRPO), ``"mean"`` (Dr.GRPO, d1) or ``"rank"``.
    """
    scale = ADVANTAGES.get(method)
    r = rewards_tensor(rewards)
    if group_size < 1 or r.numel() % group_size:
        raise ValueError(
            f"{r.numel()} rewards cannot be split into groups of {group_size}; "
            "the number of rollouts must be a multiple of the group size"
        )
    r = r.view(-1, group_size)  # (num_groups, G)
    valid = ~torch.isnan(r)
    adv = scale(r, eps)
    return torch.where(valid, adv, torch.zeros_like(adv)).view(-1).float()


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    eps: float = 0.2,
    eps_high: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO/GRPO clipped objective per token.

    ``logp``, ``old_logp``: ``(B, L)``; ``advantages``: ``(B,)``. Returns
    ``(surrogate (B, L), ratio (B, L), clipped (B, L) bool)`` where ``clipped`` marks tokens whose
    gradient the clip removed. ``eps_high`` (clip-higher, DAPO) defaults to ``eps``.
    """
    if eps < 0 or (eps_high is not None and eps_high < 0):
        raise ValueError(f"clip ranges must be >= 0, got eps={eps}, eps_high={eps_high}")
    high = eps if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1).to(logp.dtype)  # (B, 1)
    unclipped = ratio * adv
    clipped_term = ratio.clamp(1.0 - eps, 1.0 + high) * adv
    surrogate = torch.minimum(unclipped, clipped_term)
    clipped = ((ratio < 1.0 - eps) & (adv < 0)) | ((ratio > 1.0 + high) & (adv > 0))
    return surrogate, ratio, clipped


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref): ``exp(d) - d - 1``, ``d = ref - logp``."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is true; the count is clamped so it never divides by 0."""
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp_min(1.0)
    return (values * m).sum(dim=dim) / m.sum(dim=dim).clamp_min(1.0)


@dataclass(frozen=True)
class LossStats:
    """Detached statistics of one loss evaluation (means over the scored tokens)."""

    kl: float
    clip_fraction: float
    ratio_mean: float
    tokens: int


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    eps: float = 0.2,
    eps_high: float | None = None,
    normalization: Literal["token", "sequence", "constant"] | str = "token",
    normalizer: float | None = None,
) -> tuple[Tensor, LossStats]:
    """The MaskGRPO loss on one masked view.

    ``loss_mask`` ``(B, L)`` bool: positions masked in *this* view (never the union over
    iterations) and, by default, inside the completion up to its first EOS.
    ``normalization``: ``"token"`` divides the summed objective by the number of scored tokens,
    or by ``normalizer`` when given (the count over the whole accumulated batch);
    ``"sequence"`` averages per sequence, then over sequences; ``"constant"`` divides by
    ``normalizer`` (Dr.GRPO: e.g. ``batch * generation_length``), which must then be given.
    """
    normalize = NORMALIZERS.get(normalization)
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logp; pass reference log-probs or set beta=0")
    surrogate, ratio, clipped = clipped_surrogate(
        logp, old_logp, advantages, eps=eps, eps_high=eps_high
    )
    per_token = surrogate
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    if beta > 0:
        per_token = per_token - beta * kl
    loss = normalize(per_token, loss_mask, normalizer)
    with torch.no_grad():
        stats = LossStats(
            kl=float(masked_mean(kl.detach(), loss_mask)),
            clip_fraction=float(masked_mean(clipped.to(logp.dtype), loss_mask)),
            ratio_mean=float(masked_mean(ratio.detach(), loss_mask)),
            tokens=int(loss_mask.sum()),
        )
    return loss, stats


@NORMALIZERS.register("token", config_name="dapo")
def token_normalized(per_token: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    """Minus the summed objective over the scored tokens, or over ``normalizer`` when given
    (the count over the whole accumulated batch; DAPO)."""
    m = mask.to(per_token.dtype)
    denom = m.sum().clamp_min(1.0) if normalizer is None else max(float(normalizer), 1.0)
    return -(per_token * m).sum() / denom


@NORMALIZERS.register("sequence", config_name="grpo")
def sequence_normalized(per_token: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    """Minus the mean over each sequence's scored tokens, then over sequences (GRPO)."""
    return -masked_mean(per_token, mask, dim=1).mean()


@NORMALIZERS.register("constant", config_name="dr_grpo")
def constant_normalized(per_token: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    """Minus the summed objective over a constant ``normalizer`` (Dr.GRPO: rollouts x length)."""
    if normalizer is None or normalizer <= 0:
        raise ValueError(f"normalization='constant' needs a positive normalizer, got {normalizer}")
    return -(per_token * mask.to(per_token.dtype)).sum() / normalizer
