"""Tier 1: hand-computed golden values for the GRPO maths and the mask-ratio schedule."""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo import (
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    k3_kl,
    mask_ratios,
    masked_mean,
)
from maskgrpo.masking import fading_keep_probability

# ---------------------------------------------------------------------------- mask_ratios


@pytest.mark.parametrize(
    ("gamma", "mu", "expected"),
    [
        (0.6, 4, [0.7, 0.8, 0.9, 0.999]),  # last ratio 1.0 capped at 0.999
        (0.0, 2, [0.5, 0.999]),
        (0.8, 1, [0.999]),  # mu = 1 used to crash in the public code
        (0.6, 1, [0.999]),
        (0.5, 5, [0.6, 0.7, 0.8, 0.9, 0.999]),
    ],
)
def test_mask_ratios_golden(gamma: float, mu: int, expected: list[float]) -> None:
    assert mask_ratios(gamma, mu) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("gamma", "mu"), [(0.6, 0), (0.6, -1), (1.0, 4), (-0.1, 4), (1.5, 2)])
def test_mask_ratios_rejects_bad_arguments(gamma: float, mu: int) -> None:
    with pytest.raises(ValueError):
        mask_ratios(gamma, mu)


# ------------------------------------------------------------------ fading keep probability


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (0.75, [0.5, 0.375, 0.25, 0.125, 0.0]),  # 2 (1 - r) = 0.5 times d = 1, .75, .5, .25, 0
        (0.25, [1.0, 1.0, 0.75, 0.375, 0.0]),  # 1.5 d, capped at 1
        (0.5, [1.0, 0.75, 0.5, 0.25, 0.0]),
        (1.0, [0.0, 0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_fading_keep_probability_golden(ratio: float, expected: list[float]) -> None:
    pos = torch.arange(5)
    keep = fading_keep_probability(pos, torch.tensor(5), ratio)
    torch.testing.assert_close(keep, torch.tensor(expected), rtol=0, atol=1e-6)


def test_fading_keep_probability_single_token_and_broadcast() -> None:
    # one-token completion: d_0 = 1, so k_0 = min(1, 2 (1 - r))
    one = fading_keep_probability(torch.tensor([0]), torch.tensor([1]), 0.8)
    torch.testing.assert_close(one, torch.tensor([0.4]))
    assert float(fading_keep_probability(torch.tensor([0]), torch.tensor([1]), 0.2)) == 1.0
    # per-row lengths broadcast against positions: rows of length 3 and 5
    keep = fading_keep_probability(torch.arange(3)[None, :], torch.tensor([[3], [5]]), 0.75)
    expected = torch.tensor([[0.5, 0.25, 0.0], [0.5, 0.375, 0.25]])
    torch.testing.assert_close(keep, expected)


@pytest.mark.parametrize("ratio", [0.5, 0.6, 0.75, 0.9, 0.999])
@pytest.mark.parametrize("length", [2, 3, 7, 64])
def test_fading_expected_mask_fraction_is_ratio(ratio: float, length: int) -> None:
    keep = fading_keep_probability(torch.arange(length), torch.tensor(length), ratio)
    assert float((1 - keep.double()).mean()) == pytest.approx(ratio, abs=1e-6)


# ---------------------------------------------------------------------------- advantages


def test_zscore_advantages_golden() -> None:
    rewards = [1.0, 2.0, 3.0, None, 5.0, 5.0, 5.0, 5.0]
    adv = group_advantages(rewards, group_size=4, method="zscore")
    # group 1: valid (1, 2, 3), mean 2, unbiased std 1; None gets 0
    # group 2: all equal, std 0 -> advantages 0 (no division by zero)
    d = 1.0 / (1.0 + 1e-4)
    expected = torch.tensor([-d, 0.0, d, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert adv.dtype == torch.float32 and adv.shape == (8,)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-7)


def test_zscore_uses_unbiased_std_and_eps() -> None:
    # (0, 4): mean 2, unbiased std sqrt(8) = 2.8284271
    adv = group_advantages([0.0, 4.0], group_size=2)
    expected = 2.0 / (math.sqrt(8.0) + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([-expected, expected]), rtol=0, atol=1e-7)
    adv0 = group_advantages([0.0, 4.0], group_size=2, eps=0.0)
    torch.testing.assert_close(adv0, torch.tensor([-(0.5**0.5), 0.5**0.5]), rtol=0, atol=1e-7)


def test_nan_rewards_are_left_out_like_none() -> None:
    with_nan = group_advantages(torch.tensor([1.0, float("nan"), 3.0, 2.0]), 4)
    with_none = group_advantages([1.0, None, 3.0, 2.0], 4)
    torch.testing.assert_close(with_nan, with_none, rtol=0, atol=0)
    # valid (1, 3, 2): mean 2, std 1
    d = 1.0 / (1.0 + 1e-4)
    torch.testing.assert_close(with_nan, torch.tensor([-d, 0.0, d, 0.0]), rtol=0, atol=1e-7)


def test_mean_advantages_golden() -> None:
    adv = group_advantages([1.0, 2.0, 3.0, None, 10.0, 0.0, 2.0, 0.0], 4, method="mean")
    expected = torch.tensor([-1.0, 0.0, 1.0, 0.0, 7.0, -3.0, -1.0, -3.0])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


def test_rank_advantages_golden() -> None:
    # ties averaged: ranks 1, 2.5, 2.5, 4 -> centred and scaled to [-1, 1]
    adv = group_advantages([10.0, 20.0, 20.0, 30.0], 4, method="rank")
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 0.0, 1.0]), rtol=0, atol=1e-7)
    # invalid entries take no rank: valid (3, 1, 2) -> ranks 3, 1, 2
    adv = group_advantages([3.0, None, 1.0, 2.0], 4, method="rank")
    torch.testing.assert_close(adv, torch.tensor([1.0, 0.0, -1.0, 0.0]), rtol=0, atol=1e-7)
    # scale invariance: only the order matters
    adv = group_advantages([0.1, 100.0, 7.0], 3, method="rank")
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, 0.0]), rtol=0, atol=1e-7)
    # five distinct values with a tie at the top: ranks 1, 2, 3, 4.5, 4.5, centre 3, half 2
    adv = group_advantages([1.0, 2.0, 3.0, 9.0, 9.0], 5, method="rank")
    torch.testing.assert_close(adv, torch.tensor([-1.0, -0.5, 0.0, 0.75, 0.75]), rtol=0, atol=1e-7)
    assert torch.equal(group_advantages([5.0, 5.0], 2, method="rank"), torch.zeros(2))


@pytest.mark.parametrize("method", ["zscore", "mean", "rank"])
def test_single_valid_and_all_invalid_groups_get_zero(method: str) -> None:
    adv = group_advantages([None, 3.0, None, None, None, None], 3, method=method)
    assert torch.equal(adv, torch.zeros(6))
    assert not torch.isnan(adv).any()


@pytest.mark.parametrize("method", ["zscore", "mean", "rank"])
def test_groups_are_independent(method: str) -> None:
    a = group_advantages([1.0, 5.0, 2.0], 3, method=method)
    b = group_advantages([1.0, 5.0, 2.0, 100.0, -3.0, 0.5], 3, method=method)
    torch.testing.assert_close(b[:3], a, rtol=0, atol=0)


def test_advantages_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="advantage method"):
        group_advantages([1.0, 2.0], 2, method="median")
    with pytest.raises(ValueError, match="groups of 2"):
        group_advantages([1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0], 0)


# ---------------------------------------------------------------------- clipped surrogate


def _logp_for_ratios(ratios: list[float], old: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    old_logp = torch.full((len(ratios),), old, dtype=torch.float64)
    return old_logp + torch.tensor(ratios, dtype=torch.float64).log(), old_logp


def test_clipped_surrogate_golden_both_signs() -> None:
    logp, old = _logp_for_ratios([1.5, 0.5, 1.1])
    logp = logp.expand(2, 3).clone().requires_grad_(True)
    old = old.expand(2, 3)
    adv = torch.tensor([2.0, -2.0])
    surrogate, ratio, clipped = clipped_surrogate(logp, old, adv, eps=0.2)
    torch.testing.assert_close(ratio.detach(), torch.tensor([[1.5, 0.5, 1.1]] * 2).double())
    # A > 0: min(rA, clip(r) A) = (1.2*2, 0.5*2, 1.1*2); A < 0: (1.5*-2, 0.8*-2, 1.1*-2)
    expected = torch.tensor([[2.4, 1.0, 2.2], [-3.0, -1.6, -2.2]], dtype=torch.float64)
    torch.testing.assert_close(surrogate.detach(), expected)
    assert clipped.tolist() == [[True, False, False], [False, True, False]]
    # the clip removes exactly the gradient of the clipped tokens: d(rA)/dlogp = rA elsewhere
    surrogate.sum().backward()
    grad_expected = torch.tensor([[0.0, 1.0, 2.2], [-3.0, 0.0, -2.2]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, grad_expected)


def test_clipped_surrogate_eps_high() -> None:
    logp, old = _logp_for_ratios([1.5, 0.5, 1.7])
    logp, old = logp.expand(2, 3), old.expand(2, 3)
    adv = torch.tensor([1.0, -1.0])
    surrogate, _, clipped = clipped_surrogate(logp, old, adv, eps=0.2, eps_high=0.6)
    # upper bound 1.6 for A > 0; the lower bound 0.8 still applies for A < 0
    expected = torch.tensor([[1.5, 0.5, 1.6], [-1.5, -0.8, -1.7]], dtype=torch.float64)
    torch.testing.assert_close(surrogate, expected)
    assert clipped.tolist() == [[False, False, True], [False, True, False]]


def test_clipped_surrogate_rejects_negative_eps() -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError):
        clipped_surrogate(x, x, torch.ones(1), eps=-0.1)
    with pytest.raises(ValueError):
        clipped_surrogate(x, x, torch.ones(1), eps=0.2, eps_high=-0.1)


# --------------------------------------------------------------------------- k3 KL, mean


def test_k3_kl_golden() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.3], dtype=torch.float64)
    ref = torch.tensor([-1.5, -1.0, -0.3], dtype=torch.float64)
    # d = ref - logp = (-0.5, 1, 0): exp(d) - d - 1
    expected = torch.tensor([math.exp(-0.5) + 0.5 - 1.0, math.e - 2.0, 0.0], dtype=torch.float64)
    kl = k3_kl(logp, ref)
    torch.testing.assert_close(kl, expected)
    assert float(kl[2]) == 0.0 and bool((kl >= 0).all())


def test_masked_mean_golden() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert float(masked_mean(values, mask)) == 2.0
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([2.0, 0.0]))
    # an empty mask gives exactly 0, never NaN
    assert float(masked_mean(values, torch.zeros_like(mask))) == 0.0
    full = torch.ones_like(mask)
    torch.testing.assert_close(masked_mean(values, full, dim=0), torch.tensor([2.5, 3.5, 4.5]))


# ---------------------------------------------------------------------------- grpo_loss

# Hand-worked batch: B = 2, L = 3, eps = 0.2, advantages (+1, -1).
# ratios row 0: (1, e^0.5, 1); row 1: (1, 1, e^-1).
# surrogate row 0: (1, min(1.6487, 1.2) = 1.2, 1); row 1: (-1, -1, min(-0.3679, -0.8) = -0.8)
# loss mask: row 0 all three, row 1 positions 0 and 2 -> scored sum 3.2 - 1.8 = 1.4, 5 tokens.
_LOGP = [[-1.0, -2.0, -3.0], [-0.5, -1.0, -2.0]]
_OLD = [[-1.0, -2.5, -3.0], [-0.5, -1.0, -1.0]]
_MASK = [[True, True, True], [True, False, True]]


def _golden_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    f64 = torch.float64
    return (
        torch.tensor(_LOGP, dtype=f64),
        torch.tensor(_OLD, dtype=f64),
        torch.tensor([1.0, -1.0]),
        torch.tensor(_MASK),
    )


def test_grpo_loss_token_normalisation_golden() -> None:
    logp, old, adv, mask = _golden_batch()
    loss, stats = grpo_loss(logp, old, adv, mask)
    assert float(loss) == pytest.approx(-1.4 / 5, abs=1e-12)
    assert stats.tokens == 5
    assert stats.clip_fraction == pytest.approx(2 / 5)
    assert stats.ratio_mean == pytest.approx((3 + math.exp(0.5) + math.exp(-1.0)) / 5)
    assert stats.kl == 0.0
    # an explicit normaliser (count over the accumulated batch) replaces the local count
    loss7, _ = grpo_loss(logp, old, adv, mask, normalizer=7)
    assert float(loss7) == pytest.approx(-1.4 / 7, abs=1e-12)


def test_grpo_loss_sequence_and_constant_golden() -> None:
    logp, old, adv, mask = _golden_batch()
    seq, _ = grpo_loss(logp, old, adv, mask, normalization="sequence")
    # per sequence: 3.2 / 3 and -1.8 / 2, then the mean over the two sequences
    assert float(seq) == pytest.approx(-(3.2 / 3 - 0.9) / 2, abs=1e-12)
    const, _ = grpo_loss(logp, old, adv, mask, normalization="constant", normalizer=10.0)
    assert float(const) == pytest.approx(-1.4 / 10, abs=1e-12)
    with pytest.raises(ValueError, match="normalizer"):
        grpo_loss(logp, old, adv, mask, normalization="constant")
    with pytest.raises(ValueError, match="normalization"):
        grpo_loss(logp, old, adv, mask, normalization="batch")


def test_grpo_loss_with_kl_golden() -> None:
    logp, old, adv, mask = _golden_batch()
    delta = torch.tensor([[0.0, 1.0, -1.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    ref = logp + delta
    # k3 per token: row 0 (0, e - 2, e^-1), row 1 (e^0.5 - 1.5, 0, 0)
    kl = [[0.0, math.e - 2.0, math.exp(-1.0)], [math.exp(0.5) - 1.5, 0.0, 0.0]]
    surrogate = [[1.0, 1.2, 1.0], [-1.0, -1.0, -0.8]]
    beta = 0.1
    total = sum(
        surrogate[b][n] - beta * kl[b][n] for b in range(2) for n in range(3) if _MASK[b][n]
    )
    loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=ref, beta=beta)
    assert float(loss) == pytest.approx(-total / 5, abs=1e-12)
    assert float(loss) == pytest.approx(-0.25530235, abs=1e-7)  # the same number, written out
    assert stats.kl == pytest.approx((math.e - 2 + math.exp(-1) + math.exp(0.5) - 1.5) / 5)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, adv, mask, beta=0.1)


def test_grpo_loss_gradient_matches_hand_derivation() -> None:
    logp, old, adv, mask = _golden_batch()
    logp.requires_grad_(True)
    loss, _ = grpo_loss(logp, old, adv, mask)
    loss.backward()
    # d loss / d logp = -mask * (clip active ? 0 : ratio * A) / 5; clipped: row 0 position 1
    # (e^0.5 > 1.2, A > 0) and row 1 position 2 (e^-1 < 0.8, A < 0); row 1 position 1 unscored
    expected = -torch.tensor([[1.0, 0.0, 1.0], [-1.0, 0.0, 0.0]], dtype=torch.float64) / 5
    torch.testing.assert_close(logp.grad, expected)
