"""Samplers: the batched LLaDA/emerge sampler against a per-row loop, seeds, schedule, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from maskgrpo import cosine_schedule, emerge_reveal, generate, gumbel_sample
from maskgrpo.models.tiny import MaskedLMOutput
from maskgrpo.sampling.llada import transfer_schedule

MASK = 2
MODES = ("low_confidence", "random", "emerge")


class Recorder(nn.Module):
    """Wraps a model: counts forward passes, keeps each input, optionally favours one token."""

    def __init__(self, model: nn.Module, favour: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.favour = favour
        self.inputs: list[Tensor] = []

    def forward(self, input_ids: Tensor, **kwargs: Tensor) -> MaskedLMOutput:
        self.inputs.append(input_ids.clone())
        logits = self.model(input_ids, **kwargs).logits
        if self.favour is not None:
            logits = logits.clone()
            logits[..., self.favour] += 1e4
        return MaskedLMOutput(logits)


def _prompts(batch: int = 3, width: int = 4, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 16, (batch, width), generator=gen)


def reference_generate(
    model: nn.Module,
    prompt: Tensor,
    *,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float,
    remasking: str,
    generator: torch.Generator,
) -> Tensor:
    """Row-by-row, position-by-position LLaDA / emerge sampling.

    It takes the batched forward pass and the random draws in the order the library documents
    (one vector of float64 uniforms per masked position of the block, row-major, then the
    commit draw over the block's positions), and does the token choice and the commit
    selection for each row and position separately.
    """
    batch, width = prompt.shape
    x = torch.cat([prompt, torch.full((batch, gen_length), MASK)], dim=1)
    per_block = steps // (gen_length // block_length)
    counts = [block_length // per_block] * per_block
    for i in range(block_length % per_block):
        counts[i] += 1
    for blk in range(gen_length // block_length):
        lo = width + blk * block_length
        for s in range(per_block):
            logits = model(x).logits.double()
            logits[..., MASK] = -math.inf
            order = [
                (b, n)
                for b in range(batch)
                for n in range(lo, lo + block_length)
                if x[b, n] == MASK
            ]
            noise = {}
            if temperature > 0:
                u = torch.rand(
                    (len(order), logits.shape[-1]), dtype=torch.float64, generator=generator
                )
                noise = {key: u[i] for i, key in enumerate(order)}
            last = s == per_block - 1
            draw = None
            if remasking == "random" or (remasking == "emerge" and not last):
                draw = torch.rand((batch, block_length), generator=generator)
            new_x = x.clone()
            for b in range(batch):
                tokens, conf = {}, {}
                masked = [n for n in range(lo, lo + block_length) if int(x[b, n]) == MASK]
                for n in masked:
                    row = logits[b, n]
                    if not noise:
                        tok = int(row.argmax())
                    else:
                        gumbel = -torch.log(-torch.log(noise[b, n]))
                        tok = int((row / temperature + gumbel).argmax())
                    tokens[n] = tok
                    conf[n] = float(torch.softmax(row, dim=0)[tok])
                if remasking == "low_confidence":
                    chosen = sorted(masked, key=lambda n: (-conf[n], n))[: counts[s]]
                elif remasking == "random":
                    chosen = sorted(masked, key=lambda n: (-float(draw[b, n - lo]), n))[: counts[s]]
                elif last:
                    chosen = masked
                else:
                    k_t = math.cos(math.pi / 2 * s / per_block)
                    k_s = math.cos(math.pi / 2 * (s + 1) / per_block)
                    chosen = [n for n in masked if bool(draw[b, n - lo] < (k_t - k_s) / k_t)]
                for n in chosen:
                    new_x[b, n] = tokens[n]
            x = new_x
    return x


CASES = [
    # (gen_length, block_length, steps): two blocks of two steps; one block with an uneven
    # split (8 tokens over 3 steps: 3, 3, 2); one step per token
    (8, 4, 4),
    (8, 8, 3),
    (6, 3, 6),
]


@pytest.mark.parametrize("remasking", MODES)
@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize(("gen_length", "block_length", "steps"), CASES)
def test_batched_generate_equals_per_row_reference(
    make_tiny, remasking: str, temperature: float, gen_length: int, block_length: int, steps: int
) -> None:
    model = make_tiny(seed=3, std=0.3, head_std=1.0)
    prompt = _prompts()
    kwargs = dict(gen_length=gen_length, steps=steps, block_length=block_length)
    out = generate(
        model,
        prompt,
        mask_id=MASK,
        temperature=temperature,
        remasking=remasking,
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    )
    with torch.no_grad():
        ref = reference_generate(
            model,
            prompt,
            temperature=temperature,
            remasking=remasking,
            generator=torch.Generator().manual_seed(7),
            **kwargs,
        )
    assert torch.equal(out.sequences, ref)
    assert torch.equal(out.sequences[:, :4], prompt)
    assert torch.equal(out.completions, out.sequences[:, 4:])
    assert out.prompt_width == 4


@pytest.mark.parametrize("remasking", MODES)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_no_mask_token_survives(make_tiny, remasking: str, temperature: float) -> None:
    model = Recorder(make_tiny(seed=4), favour=MASK)
    with torch.no_grad():
        assert bool((model(_prompts()).logits.argmax(-1) == MASK).all())  # really biased
    out = generate(
        model,
        _prompts(batch=4),
        mask_id=MASK,
        gen_length=8,
        steps=4,
        block_length=4,
        temperature=temperature,
        remasking=remasking,
        generator=torch.Generator().manual_seed(1),
    )
    assert not (out.completions == MASK).any()


@pytest.mark.parametrize("remasking", MODES)
def test_forward_passes_equal_steps(make_tiny, remasking: str) -> None:
    model = Recorder(make_tiny(seed=5))
    out = generate(
        model,
        _prompts(),
        mask_id=MASK,
        gen_length=8,
        steps=6,
        block_length=4,
        temperature=1.0,
        remasking=remasking,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(model.inputs) == 6 == out.forward_passes
    # blocks are decoded left to right: the second block is fully masked during the first
    # block's steps, and the first block is finished before the second starts
    for x in model.inputs[:3]:
        assert bool((x[:, 8:] == MASK).all())
    for x in model.inputs[3:]:
        assert not (x[:, 4:8] == MASK).any()


def test_low_confidence_commits_the_scheduled_count(make_tiny) -> None:
    model = Recorder(make_tiny(seed=6, std=0.3, head_std=1.0))
    generate(
        model,
        _prompts(batch=5),
        mask_id=MASK,
        gen_length=8,
        steps=3,
        block_length=8,
        temperature=0.7,
        generator=torch.Generator().manual_seed(0),
    )
    masked = [int((x[:, 4:] == MASK).sum(dim=1).unique().item()) for x in model.inputs]
    assert masked == [8, 5, 2]  # schedule (3, 3, 2), identical for every row


def test_transfer_schedule_golden() -> None:
    assert transfer_schedule(8, 3) == [3, 3, 2]
    assert transfer_schedule(4, 4) == [1, 1, 1, 1]
    assert transfer_schedule(7, 2) == [4, 3]
    assert transfer_schedule(16, 1) == [16]


@pytest.mark.parametrize("remasking", MODES)
def test_temperature_zero_low_confidence_is_deterministic(make_tiny, remasking: str) -> None:
    model = make_tiny(seed=7, std=0.3, head_std=1.0)

    def run(seed: int) -> Tensor:
        return generate(
            model,
            _prompts(),
            mask_id=MASK,
            gen_length=8,
            steps=4,
            block_length=4,
            remasking=remasking,
            generator=torch.Generator().manual_seed(seed),
        ).sequences

    first = run(0)
    assert torch.equal(first, run(0))  # same seed, same tokens (every mode)
    if remasking == "low_confidence":
        # greedy decoding with confidence ordering draws nothing: any seed, the same tokens
        assert torch.equal(first, run(1)) and torch.equal(first, run(12345))
        assert torch.equal(
            first,
            generate(
                model, _prompts(), mask_id=MASK, gen_length=8, steps=4, block_length=4
            ).sequences,
        )


@pytest.mark.parametrize("remasking", MODES)
def test_seed_controls_sampling_at_positive_temperature(make_tiny, remasking: str) -> None:
    model = make_tiny(seed=8, std=0.1)

    def run(seed: int) -> Tensor:
        return generate(
            model,
            _prompts(batch=6),
            mask_id=MASK,
            gen_length=8,
            steps=4,
            block_length=4,
            temperature=1.0,
            remasking=remasking,
            generator=torch.Generator().manual_seed(seed),
        ).sequences

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_emerge_reveal_fractions_follow_the_cosine_schedule(make_tiny) -> None:
    model = Recorder(make_tiny(seed=9))
    steps, length, batch = 4, 16, 64
    generate(
        model,
        _prompts(batch=batch, width=2),
        mask_id=MASK,
        gen_length=length,
        steps=steps,
        block_length=length,
        temperature=1.0,
        remasking="emerge",
        generator=torch.Generator().manual_seed(2),
    )
    still = [(x[:, 2:] == MASK).sum(dim=1) for x in model.inputs]  # (B,) per step
    assert len(still) == steps and bool((still[0] == length).all())
    for s in range(steps - 1):
        k_t, k_s = math.cos(math.pi / 2 * s / steps), math.cos(math.pi / 2 * (s + 1) / steps)
        p = (k_t - k_s) / k_t
        n = int(still[s].sum())
        frac = float((still[s] - still[s + 1]).sum()) / n
        assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n), (s, frac, p)
    # no fixed count per step: rows reveal different numbers of tokens at the same step
    assert len(torch.unique(still[2])) > 1


def test_generate_rejects_bad_configurations(tiny_model) -> None:
    prompt = _prompts()

    def call(**kwargs):
        args = dict(mask_id=MASK, gen_length=8, steps=4, block_length=4)
        args.update(kwargs)
        return generate(tiny_model, prompt, **args)

    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        call(steps=3)
    with pytest.raises(ValueError, match="multiple of block_length"):
        call(gen_length=10)
    with pytest.raises(ValueError, match="exceed block_length"):
        call(steps=16)
    with pytest.raises(ValueError, match="remasking"):
        call(remasking="topk")
    with pytest.raises(ValueError):
        call(steps=0)
    with pytest.raises(ValueError, match="temperature"):
        call(temperature=-1.0)


def test_attention_mask_of_ones_changes_nothing(make_tiny) -> None:
    model = make_tiny(seed=10, std=0.3, head_std=1.0)
    prompt = _prompts()
    args = dict(mask_id=MASK, gen_length=8, steps=4, block_length=4)
    plain = generate(model, prompt, **args).sequences
    ones = generate(model, prompt, attention_mask=torch.ones_like(prompt), **args).sequences
    assert torch.equal(plain, ones)


# ----------------------------------------------------------------------- primitives


def test_gumbel_sample_greedy_golden() -> None:
    logits = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]).log()
    tokens, probs = gumbel_sample(logits, 0.0, None)
    assert tokens.tolist() == [1, 0]
    torch.testing.assert_close(probs, torch.tensor([0.6, 0.5]))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_gumbel_sample_frequencies_match_tempered_softmax(temperature: float) -> None:
    probs = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    draws = 20000
    logits = probs.log().float().expand(draws, 3)
    tokens, conf = gumbel_sample(logits, temperature, torch.Generator().manual_seed(0))
    expected = torch.softmax(probs.log() / temperature, dim=0)
    freq = torch.bincount(tokens, minlength=3).double() / draws
    sigma = (expected * (1 - expected) / draws).sqrt()
    assert bool(((freq - expected).abs() <= 5 * sigma).all()), (freq, expected)
    # confidence is the temperature-1 probability of the drawn token
    torch.testing.assert_close(conf, probs.float()[tokens])


def test_cosine_schedule_golden() -> None:
    assert cosine_schedule(0.0) == 1.0
    assert cosine_schedule(1.0) == pytest.approx(0.0, abs=1e-12)
    assert cosine_schedule(0.5) == pytest.approx(math.sqrt(0.5))
    assert cosine_schedule(1 / 3) == pytest.approx(math.sqrt(3) / 2)
    assert cosine_schedule(-1.0) == 1.0 and cosine_schedule(2.0) == cosine_schedule(1.0)


def test_emerge_reveal_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    still = torch.rand((400, 50), generator=gen) < 0.7
    assert torch.equal(emerge_reveal(still, 0.5, 0.2, last=True, generator=gen), still)
    revealed = emerge_reveal(still, 0.8, 0.2, last=False, generator=gen)
    assert not (revealed & ~still).any()
    n = int(still.sum())
    frac = float(revealed.sum()) / n
    assert abs(frac - 0.75) <= 5 * math.sqrt(0.75 * 0.25 / n)
    assert torch.equal(emerge_reveal(still, 0.0, 0.0, last=False, generator=gen), still)
