"""Block-local sampling against the full computation it replaced.

``full_generate`` below is the sampler as it was before block-local sampling: the LM head over
every position of every row, float64 Gumbel noise over the whole ``(B, P + L, V)`` logits, the
softmax everywhere, commit draws over the whole sequence. It is kept here as the reference:
block-local sampling must give the same tokens at temperature 0 where nothing random is drawn,
and the same per-position distribution of tokens at temperature > 0 (and for the commit rules
that draw at any temperature).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from maskgrpo.models.calls import model_call
from maskgrpo.sampling.common import (
    Generators,
    cosine_schedule,
    emerge_reveal,
    gumbel_noise,
    gumbel_sample,
    linear_transfer,
    reveal_masked,
    uniform,
)
from maskgrpo.sampling.draw import draw_masked, gumbel_, masked_uniforms
from maskgrpo.sampling.llada import _topk_by_row, generate, transfer_schedule

MASK = 2
MODES = ("low_confidence", "random", "emerge", "origin")


@torch.inference_mode()
def full_generate(
    model: nn.Module,
    prompt_ids: Tensor,
    *,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float,
    remasking: str,
    generator: Generators,
) -> Tensor:
    """The previous sampler: head, noise and softmax over every position (the reference)."""
    blocks = gen_length // block_length
    per_block = steps // blocks
    batch, width = prompt_ids.shape
    call = model_call(model)
    x = torch.cat([prompt_ids, torch.full((batch, gen_length), MASK)], dim=1)
    counts = transfer_schedule(block_length, per_block)
    origin = linear_transfer(per_block)
    for blk in range(blocks):
        lo, hi = width + blk * block_length, width + (blk + 1) * block_length
        in_block = torch.zeros_like(x, dtype=torch.bool)
        in_block[:, lo:hi] = True
        for s in range(per_block):
            masked = (x == MASK) & in_block  # (B, P + L)
            logits = call.logits(x, None)  # (B, P + L, V)
            logits[..., MASK] = float("-inf")
            drawn, conf = gumbel_sample(logits, temperature, generator)
            if remasking == "emerge":
                k_t, k_s = cosine_schedule(s / per_block), cosine_schedule((s + 1) / per_block)
                commit = emerge_reveal(
                    masked, k_t, k_s, last=s == per_block - 1, generator=generator
                )
            elif remasking == "origin":
                commit = reveal_masked(masked, origin[s], generator)
            else:
                if remasking == "random":
                    conf = uniform(conf.shape, generator, device=x.device)
                score = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
                commit = _topk_by_row(score, torch.full((batch,), counts[s])) & masked
            x = torch.where(commit, drawn, x)
    return x


def _prompts(batch: int, width: int = 4, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 12, (batch, width), generator=gen)


SETTINGS = [
    # (gen_length, block_length, steps): two blocks of two steps; one block, uneven split
    (6, 3, 4),
    (8, 8, 3),
]


@pytest.mark.parametrize("remasking", ["low_confidence", "origin"])
@pytest.mark.parametrize(("gen_length", "block_length", "steps"), SETTINGS)
def test_greedy_tokens_are_those_of_the_full_computation(
    make_tiny, remasking: str, gen_length: int, block_length: int, steps: int
) -> None:
    # the commit rules that draw nothing (low_confidence) or draw only at masked positions
    # (origin) keep their random stream: identical tokens at temperature 0
    model = make_tiny(seed=3, std=0.3, head_std=1.0)
    prompts = _prompts(16)
    kw = dict(gen_length=gen_length, steps=steps, block_length=block_length, temperature=0.0)
    for seed in range(3):
        new = generate(
            model,
            prompts,
            mask_id=MASK,
            remasking=remasking,
            generator=torch.Generator().manual_seed(seed),
            **kw,
        ).sequences
        old = full_generate(
            model, prompts, remasking=remasking, generator=torch.Generator().manual_seed(seed), **kw
        )
        assert torch.equal(new, old)
        assert not (new == MASK).any()


def _frequencies(tokens: Tensor, vocab: int) -> Tensor:
    """``(L, V)`` frequency of each token at each completion position."""
    one_hot = torch.nn.functional.one_hot(tokens, vocab).double()  # (N, L, V)
    return one_hot.mean(dim=0)


def _max_z(a: Tensor, b: Tensor, rows: int) -> float:
    """Largest two-sample z score over the cells of two ``(L, V)`` frequency tables."""
    pooled = (a + b) / 2
    sigma = (pooled * (1 - pooled) * 2 / rows).sqrt().clamp_min(1 / rows)
    return float(((a - b).abs() / sigma).max())


def _sample(sampler, model, rows: int, seed: int, temperature: float, remasking: str) -> Tensor:
    prompt = _prompts(1, seed=5).expand(rows, -1)  # one prompt: rows are i.i.d. samples
    kw = dict(gen_length=6, steps=4, block_length=3, temperature=temperature)
    gen = torch.Generator().manual_seed(seed)
    if sampler is generate:
        out = generate(model, prompt, mask_id=MASK, remasking=remasking, generator=gen, **kw)
        return out.completions
    return sampler(model, prompt, remasking=remasking, generator=gen, **kw)[:, 4:]


# every commit rule at temperature > 0, and the rules whose commit draw is random (its stream
# changed: uniforms over the block, no longer over the whole sequence) at temperature 0
RANDOM_CASES = [(r, t) for r in MODES for t in (0.8, 1.0)] + [("random", 0.0), ("emerge", 0.0)]


@pytest.mark.parametrize(("remasking", "temperature"), RANDOM_CASES)
def test_per_position_frequencies_match_the_full_computation(
    make_tiny, remasking: str, temperature: float
) -> None:
    model = make_tiny(seed=11, std=0.3, head_std=0.6)  # spread-out distributions
    vocab, rows = model.config.vocab_size, 2500
    new = _frequencies(_sample(generate, model, rows, 1, temperature, remasking), vocab)
    old = _frequencies(_sample(full_generate, model, rows, 2, temperature, remasking), vocab)
    assert _max_z(new, old, rows) < 5.0
    # the positions are really random (else the comparison shows nothing)
    assert int(((new > 0.05) & (new < 0.95)).sum()) >= 4


def test_the_frequency_comparison_sees_a_wrong_temperature(make_tiny) -> None:
    # power of the test above: the same sampler at temperature 1.0 and 1.4 is told apart
    model = make_tiny(seed=11, std=0.3, head_std=0.6)
    vocab, rows = model.config.vocab_size, 2500
    a = _frequencies(_sample(generate, model, rows, 1, 1.0, "low_confidence"), vocab)
    b = _frequencies(_sample(full_generate, model, rows, 2, 1.4, "low_confidence"), vocab)
    assert _max_z(a, b, rows) > 8.0


# ------------------------------------------------------------------ the documented random stream


def test_gumbel_in_place_is_bitwise_the_shared_noise() -> None:
    shape = torch.Size((5, 33))
    expected = gumbel_noise(shape, torch.Generator().manual_seed(4), torch.device("cpu"))
    u = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(gumbel_(u), expected)
    tiny = torch.tensor([0.0, 1e-320, 1.0 - 2**-53], dtype=torch.float64)
    assert bool(torch.isfinite(gumbel_(tiny)).all())


def test_masked_uniforms_follow_row_major_order_and_per_row_generators() -> None:
    where = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    one = masked_uniforms(where, 7, torch.Generator().manual_seed(1))
    assert torch.equal(
        one, torch.rand((5, 7), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    gens = [torch.Generator().manual_seed(10 + b) for b in range(3)]
    rows = masked_uniforms(where, 7, gens)
    expected = [
        torch.rand((n, 7), dtype=torch.float64, generator=torch.Generator().manual_seed(10 + b))
        for b, n in enumerate((2, 0, 3))
    ]
    assert torch.equal(rows, torch.cat(expected))
    with pytest.raises(ValueError, match="per-row generators"):
        masked_uniforms(where, 7, gens[:2])


def test_draw_masked_golden() -> None:
    # hidden states are logits (identity head); position 1 of row 0 is not drawn
    logits = torch.tensor(
        [[[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1]], [[0.5, 0.3, 0.1, 0.1]] * 2]
    )
    where = torch.tensor([[True, False], [True, True]])
    tokens, conf = draw_masked(
        logits.log(), where, lambda h: h, temperature=0.0, generator=None, mask_id=2
    )
    assert tokens.tolist() == [[1, 2], [0, 0]]  # the mask id (2) is never drawn
    torch.testing.assert_close(conf, torch.tensor([[0.2 / 0.4, -math.inf], [0.5 / 0.9] * 2]))
    tokens, _ = draw_masked(
        logits.log(), where, lambda h: h, temperature=0.0, generator=None, mask_id=2, vocab_limit=1
    )
    assert tokens[where].tolist() == [0, 0, 0]  # ids at or beyond the limit are never drawn


def test_rows_with_their_own_generators_do_not_depend_on_the_batch(make_tiny) -> None:
    model = make_tiny(seed=8, std=0.3, head_std=0.6)
    prompts = _prompts(5)
    kw = dict(mask_id=MASK, gen_length=6, steps=4, block_length=3, temperature=1.0)

    def gens(rows: range) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(100 + b) for b in rows]

    for remasking in MODES:
        batch = generate(model, prompts, remasking=remasking, generator=gens(range(5)), **kw)
        part = generate(model, prompts[2:4], remasking=remasking, generator=gens(range(2, 4)), **kw)
        assert torch.equal(batch.sequences[2:4], part.sequences), remasking
