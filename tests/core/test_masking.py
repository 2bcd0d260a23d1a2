"""Re-masking views: empirical mask frequencies against the formulas, layouts, seeds, errors."""

from __future__ import annotations

import pytest
import torch

from maskgrpo import completion_span, remask, upto_first_eos

MASK = 2
EOS = 1
SIGMAS = 5.0


def _ids(batch: int, width: int, seed: int = 0) -> torch.Tensor:
    """Content ids (never the mask id) from an explicit generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 16, (batch, width), generator=gen)


def _fading_mask_prob(length: int, ratio: float) -> torch.Tensor:
    """``1 - min(1, 2 (1 - r) (1 - n / (L - 1)))``, written out independently of the library."""
    probs = []
    for n in range(length):
        d = 1.0 - n / (length - 1) if length > 1 else 1.0
        probs.append(1.0 - min(1.0, 2.0 * (1.0 - ratio) * d))
    return torch.tensor(probs, dtype=torch.float64)


def _assert_frequencies(masked: torch.Tensor, expected: torch.Tensor) -> None:
    """Per-column frequency of ``masked`` ``(N, L)`` within 5 binomial sigmas of ``expected``."""
    n = masked.shape[0]
    freq = masked.double().mean(dim=0)
    sigma = (expected * (1 - expected) / n).sqrt()
    exact = (expected == 0) | (expected == 1)
    assert torch.equal(freq[exact], expected[exact]), (freq, expected)
    assert bool(((freq - expected).abs() <= SIGMAS * sigma + 1e-12).all()), (freq, expected)


# ---------------------------------------------------------------------------- fading


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7, 0.9])
def test_fading_per_position_frequency(ratio: float) -> None:
    batch, prompt, length = 4000, 3, 9
    ids = _ids(batch, prompt + length)
    gen = torch.Generator().manual_seed(11)
    view = remask(ids, prompt, ratio, "fading", mask_id=MASK, generator=gen)
    masked = view.scored[0, :, prompt:]
    _assert_frequencies(masked, _fading_mask_prob(length, ratio))
    # the noisy ids carry the mask exactly where a position is scored, the clean id elsewhere
    noisy = view.noisy_ids[0]
    assert torch.equal(noisy == MASK, view.scored[0])
    assert torch.equal(noisy[~view.scored[0]], ids[~view.scored[0]])


@pytest.mark.parametrize("ratio", [0.5, 0.6, 0.8, 0.95])
def test_fading_mean_mask_fraction_is_ratio(ratio: float) -> None:
    batch, prompt, length = 3000, 4, 12
    ids = _ids(batch, prompt + length, seed=1)
    gen = torch.Generator().manual_seed(12)
    view = remask(ids, prompt, ratio, "fading", mask_id=MASK, generator=gen)
    frac = float(view.scored[0, :, prompt:].double().mean())
    p = _fading_mask_prob(length, ratio)
    sigma = float((p * (1 - p)).sum().sqrt()) / (length * batch**0.5)
    assert abs(frac - ratio) <= SIGMAS * sigma


def test_fading_ramp_spans_the_completion_for_per_row_prompts() -> None:
    # Right-padded rows: prompts of length 1, 4, 7, each followed by a 6-token completion,
    # then pads. The ramp must start at each row's completion, whatever its prompt length.
    prompts = torch.tensor([1, 4, 7] * 1200)
    length, width = 6, 16
    seq = prompts + length
    ids = _ids(prompts.shape[0], width, seed=2)
    gen = torch.Generator().manual_seed(13)
    view = remask(ids, prompts, 0.7, "fading", mask_id=MASK, generator=gen, seq_length=seq)
    scored = view.scored[0]
    expected = _fading_mask_prob(length, 0.7)
    for p in (1, 4, 7):
        rows = scored[prompts == p]
        assert not rows[:, :p].any(), "prompt positions were masked"
        assert not rows[:, p + length :].any(), "positions after seq_length were masked"
        _assert_frequencies(rows[:, p : p + length], expected)


# --------------------------------------------------------------- prompt is never masked


@pytest.mark.parametrize("strategy", ["fading", "random", "coupled", "d1"])
@pytest.mark.parametrize("prompt", [0, 1, 5, 11])
def test_prompt_never_masked_left_padded(strategy: str, prompt: int) -> None:
    width = 12
    ids = _ids(64, width, seed=3)
    gen = torch.Generator().manual_seed(4)
    view = remask(ids, prompt, 0.9, strategy, mask_id=MASK, generator=gen)
    assert not view.scored[:, :, :prompt].any(), "prompt tokens must never be scored"
    if strategy != "d1":
        assert torch.equal(
            view.noisy_ids[:, :, :prompt], ids[None, :, :prompt].expand(view.num_views, -1, -1)
        )
    if prompt < width:
        assert view.scored[:, :, prompt:].any(), "nothing in the completion was masked"


@pytest.mark.parametrize("strategy", ["fading", "random", "coupled", "d1"])
def test_per_row_prompt_and_seq_length(strategy: str) -> None:
    prompts = torch.tensor([0, 2, 5, 9])
    seq = torch.tensor([6, 10, 8, 9])  # the last row has an empty completion
    ids = _ids(4, 10, seed=5)
    gen = torch.Generator().manual_seed(6)
    view = remask(ids, prompts, 0.999, strategy, mask_id=MASK, generator=gen, seq_length=seq)
    inside, position = completion_span(ids, prompts, seq)
    for b in range(4):
        p, s = int(prompts[b]), int(seq[b])
        assert inside[b].tolist() == [p <= n < s for n in range(10)]
        assert position[b, p:s].tolist() == list(range(s - p))
        assert not view.scored[:, b, :p].any() and not view.scored[:, b, s:].any()
        # after seq_length (right padding) nothing is ever touched, even by d1
        assert torch.equal(view.noisy_ids[:, b, s:], ids[b, s:].expand(view.num_views, -1))
    assert not view.scored[:, 3].any()


# ------------------------------------------------------------------------- random, d1


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.65, 1.0])
def test_random_frequency_matches_ratio(ratio: float) -> None:
    batch, prompt, length = 2000, 2, 8
    ids = _ids(batch, prompt + length, seed=7)
    gen = torch.Generator().manual_seed(8)
    view = remask(ids, prompt, ratio, "random", mask_id=MASK, generator=gen)
    expected = torch.full((length,), ratio, dtype=torch.float64)
    _assert_frequencies(view.scored[0, :, prompt:], expected)


def test_d1_masks_whole_completion_and_prompt_at_rate() -> None:
    batch, prompt, length = 2000, 5, 4
    ids = _ids(batch, prompt + length, seed=9)
    gen = torch.Generator().manual_seed(10)
    view = remask(ids, prompt, 0.3, "d1", mask_id=MASK, generator=gen)
    assert view.num_views == 1
    noisy, scored = view.noisy_ids[0], view.scored[0]
    assert bool((noisy[:, prompt:] == MASK).all())
    assert bool(scored[:, prompt:].all()) and not scored[:, :prompt].any()
    prompt_masked = (noisy[:, :prompt] == MASK).reshape(-1, 1)
    _assert_frequencies(prompt_masked, torch.tensor([0.15], dtype=torch.float64))
    custom = remask(ids, prompt, 0.3, "d1", mask_id=MASK, generator=gen, d1_prompt_prob=0.0)
    assert torch.equal(custom.noisy_ids[0, :, :prompt], ids[:, :prompt])


# --------------------------------------------------------------------------- coupled


def test_coupled_views_are_disjoint_and_cover_the_completion() -> None:
    batch, prompt, length = 400, 3, 40
    ids = _ids(batch, prompt + length, seed=14)
    gen = torch.Generator().manual_seed(15)
    view = remask(ids, prompt, 0.5, "coupled", mask_id=MASK, generator=gen)
    assert view.num_views == 2
    first, second = view.scored
    inside = torch.zeros_like(first)
    inside[:, prompt:] = True
    assert not (first & second).any()
    assert torch.equal(first | second, inside)
    for v in range(2):
        assert torch.equal(view.noisy_ids[v] == MASK, view.scored[v])
    # t ~ U(0.2, 0.8) per row: the first view masks half the completion on average
    frac = first[:, prompt:].double().mean(dim=1)
    assert abs(float(frac.mean()) - 0.5) < 0.05
    assert float(frac.std()) > 0.1  # t varies from row to row
    narrow = remask(
        ids, prompt, 0.5, "coupled", mask_id=MASK, generator=gen, coupled_range=(0.3, 0.3)
    )
    _assert_frequencies(
        narrow.scored[0, :, prompt:].reshape(-1, 1), torch.tensor([0.3], dtype=torch.float64)
    )


# ------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("strategy", ["fading", "random", "coupled", "d1"])
def test_same_seed_same_view_different_seed_different_view(strategy: str) -> None:
    ids = _ids(16, 20, seed=16)

    def view(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return remask(ids, 4, 0.7, strategy, mask_id=MASK, generator=gen)

    a, b, c = view(123), view(123), view(124)
    assert torch.equal(a.noisy_ids, b.noisy_ids) and torch.equal(a.scored, b.scored)
    assert not torch.equal(a.noisy_ids, c.noisy_ids)


# ------------------------------------------------------------------------ validation


def test_remask_rejects_bad_inputs() -> None:
    ids = _ids(2, 8)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="strategy"):
        remask(ids, 2, 0.5, "linear", mask_id=MASK, generator=gen)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            remask(ids, 2, bad, "fading", mask_id=MASK, generator=gen)
    with pytest.raises(ValueError, match="prompt_length"):
        remask(ids, 9, 0.5, "fading", mask_id=MASK, generator=gen)
    with pytest.raises(ValueError, match="prompt_length"):
        remask(ids, -1, 0.5, "random", mask_id=MASK, generator=gen)
    with pytest.raises(ValueError):
        remask(ids, 5, 0.5, "fading", mask_id=MASK, generator=gen, seq_length=4)
    with pytest.raises(ValueError):
        remask(ids, torch.tensor([1, 2, 3]), 0.5, "fading", mask_id=MASK, generator=gen)
    with pytest.raises(ValueError, match="per-row"):
        remask(ids, torch.tensor([[1, 2]]), 0.5, "fading", mask_id=MASK, generator=gen)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        remask(ids[0], 2, 0.5, "fading", mask_id=MASK, generator=gen)
    with pytest.raises(ValueError, match="d1_prompt_prob"):
        remask(ids, 2, 0.5, "d1", mask_id=MASK, generator=gen, d1_prompt_prob=1.5)
    with pytest.raises(ValueError, match="coupled_range"):
        remask(ids, 2, 0.5, "coupled", mask_id=MASK, generator=gen, coupled_range=(0.8, 0.2))


# --------------------------------------------------------------------- upto_first_eos


def test_upto_first_eos_golden() -> None:
    ids = torch.tensor(
        [
            [5, 1, 6, 1, 7, 1],  # EOS in the prompt is ignored; the first completion EOS counts
            [5, 5, 6, 7, 8, 9],  # no EOS: the whole completion
            [5, 5, 1, 6, 7, 8],  # EOS first: only the EOS itself
            [5, 5, 6, 7, 1, 1],  # EOS last-but-one: included, the second EOS excluded
        ]
    )
    got = upto_first_eos(ids, 2, EOS)
    expected = [
        [False, False, True, True, False, False],
        [False, False, True, True, True, True],
        [False, False, True, False, False, False],
        [False, False, True, True, True, False],
    ]
    assert got.tolist() == expected


def test_upto_first_eos_per_row_lengths() -> None:
    ids = torch.tensor([[5, 6, 1, 7, 0, 0], [5, 1, 6, 7, 8, 0]])
    got = upto_first_eos(ids, torch.tensor([1, 2]), EOS, seq_length=torch.tensor([4, 5]))
    expected = [
        [False, True, True, False, False, False],  # completion 6 1 7: stops after the EOS
        [False, False, True, True, True, False],  # prompt (5, 1) holds an EOS, ignored
    ]
    assert got.tolist() == expected
