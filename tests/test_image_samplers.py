"""Emerge and MaskGIT image samplers: schedules, guidance, determinism, RNG hygiene."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from maskgrpo.sampling import emerge, maskgit
from maskgrpo.sampling.common import cosine_schedule
from maskgrpo.sampling.guidance import with_guidance

K = 12  # codebook size of the toy model
MASK = K  # the mask id sits just past the codebook


def toy_logits(seed: int, n: int) -> Any:
    """A deterministic logits callable that depends on the partially decoded codes."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(n, K, generator=gen) * 2.0  # (N, K)
    mix = torch.randn(K + 1, K, generator=gen)  # (K+1, K): effect of each visible code

    def fn(codes: Tensor) -> Tensor:
        context = mix[codes].mean(dim=1, keepdim=True)  # (B, 1, K)
        return table[None] + context  # (B, N, K)

    return fn


def run(module: Any, seed: int = 0, **kw: Any) -> Any:
    args: dict = dict(mask_id=MASK, steps=8, temperature=1.0, guidance_scale=0.0)
    args.update(kw)
    gen = torch.Generator().manual_seed(seed)
    fn = args.pop("fn", toy_logits(1, args.pop("n", 16)))
    b = args.pop("b", 4)
    n = args.pop("num_tokens", 16)
    return module.sample(fn, b, n, generator=gen, **args)


def test_emerge_unmask_rate_matches_schedule() -> None:
    steps, rows = 8, 3000
    res = run(emerge, b=rows, steps=steps)
    masked = res.masked_per_step  # (T+1, B)
    assert masked.shape == (steps + 1, rows)
    for s in range(steps - 1):
        k_t, k_s = cosine_schedule(s / steps), cosine_schedule((s + 1) / steps)
        p = (k_t - k_s) / k_t
        n = int(masked[s].sum())
        revealed = int((masked[s] - masked[s + 1]).sum())
        std = math.sqrt(p * (1 - p) / n)
        assert abs(revealed / n - p) < 5 * std + 1e-9, (s, revealed / n, p)
    assert int(masked[-1].sum()) == 0


def test_maskgit_follows_schedule_exactly() -> None:
    n, steps = 64, 8
    res = run(maskgit, num_tokens=n, n=n, steps=steps, b=5)
    sched = maskgit.maskgit_schedule(n, steps)
    # without clamping the schedule is floor(N cos(pi/2 (s+1)/T)) with 0 at the end
    raw = [math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps)) for s in range(steps - 1)]
    assert sched == raw + [0]
    assert (res.masked_per_step[1:] == torch.tensor(sched)[:, None]).all()


def test_maskgit_schedule_clamps() -> None:
    sched = maskgit.maskgit_schedule(6, 6)
    assert sched == [5, 4, 3, 2, 1, 0]  # one revealed per step, one kept until the last
    with pytest.raises(ValueError, match="steps"):
        maskgit.maskgit_schedule(4, 5)


@pytest.mark.parametrize("module", [emerge, maskgit])
def test_zero_guidance_is_the_conditional_model(module: Any) -> None:
    def forbidden(codes: Tensor) -> Tensor:
        raise AssertionError("the unconditional branch must not run at w = 0")

    plain = run(module, seed=3)
    guided = run(module, seed=3, uncond_logits_fn=forbidden)
    assert torch.equal(plain.codes, guided.codes)


@pytest.mark.parametrize("module", [emerge, maskgit])
def test_guidance_changes_samples(module: Any) -> None:
    uncond = toy_logits(7, 16)
    a = run(module, seed=3, b=64)
    b = run(module, seed=3, b=64, guidance_scale=3.0, uncond_logits_fn=uncond)
    assert not torch.equal(a.codes, b.codes)


def test_with_guidance_formula() -> None:
    cond, uncond = toy_logits(1, 16), toy_logits(2, 16)
    codes = torch.full((2, 16), MASK)
    got = with_guidance(cond, uncond, 3.0)(codes)
    want = 4.0 * cond(codes) - 3.0 * uncond(codes)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="uncond"):
        with_guidance(cond, None, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        with_guidance(cond, uncond, -1.0)


@pytest.mark.parametrize("module", [emerge, maskgit])
def test_same_seed_same_codes_and_rng_hygiene(module: Any) -> None:
    before = torch.get_rng_state()
    a, b = run(module, seed=11, b=8), run(module, seed=11, b=8)
    c = run(module, seed=12, b=8)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.codes, b.codes)
    assert not torch.equal(a.codes, c.codes)
    for res in (a, c):
        assert res.codes.dtype == torch.long and res.codes.shape == (8, 16)
        assert not (res.codes == MASK).any()
        assert int(res.codes.min()) >= 0 and int(res.codes.max()) < K


@pytest.mark.parametrize("module", [emerge, maskgit])
def test_mask_id_inside_vocab_is_never_drawn(module: Any) -> None:
    def favours_mask(codes: Tensor) -> Tensor:
        logits = torch.zeros(*codes.shape, K)  # (B, N, K)
        logits[..., 0] = 10.0
        return logits

    res = run(module, fn=favours_mask, mask_id=0, b=4)
    assert not (res.codes == 0).any()


@pytest.mark.parametrize("module", [emerge, maskgit])
def test_greedy_takes_the_argmax(module: Any) -> None:
    table = torch.randn(16, K, generator=torch.Generator().manual_seed(5))  # (N, K)
    res = run(module, fn=lambda codes: table.expand(codes.shape[0], -1, -1), temperature=0.0)
    assert torch.equal(res.codes, table.argmax(-1).expand(4, -1))


def test_emerge_skips_forward_passes_that_reveal_nothing() -> None:
    res = run(emerge, b=1, steps=16)
    changed = int((res.masked_per_step[:-1] != res.masked_per_step[1:]).sum())
    assert res.forward_passes == changed
