"""The block KV cache and confidence-threshold parallel decoding on the built-in tiny model."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from maskgrpo.models.calls import model_call
from maskgrpo.models.layers import BlockCache, KVCache, TinyLayers, run_span
from maskgrpo.models.tiny import MaskedLMOutput
from maskgrpo.sampling.llada import generate

MASK = 2


def _prompts(batch: int = 4, width: int = 5, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 12, (batch, width), generator=gen)


def _sequence(prompts: Tensor, gen_length: int = 12) -> Tensor:
    return torch.cat([prompts, torch.full((prompts.shape[0], gen_length), MASK)], dim=1)


KW = dict(mask_id=MASK, gen_length=12, steps=6, block_length=4)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cache_refreshed_at_every_step_decodes_exactly(
    make_tiny, mode: str, temperature: float, positions: str
) -> None:
    model = make_tiny(seed=3, std=0.3, head_std=1.0, positions=positions)
    prompts = _prompts()

    def run(**options: object) -> Tensor:
        gen = torch.Generator().manual_seed(5)
        return generate(model, prompts, temperature=temperature, generator=gen, **KW, **options)

    exact = run()
    cached = run(kv_cache=mode, kv_cache_refresh=1)
    assert torch.equal(cached.sequences, exact.sequences)
    assert cached.forward_passes == cached.full_passes == exact.forward_passes == 6


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_passes_per_block(make_tiny, mode: str) -> None:
    model = make_tiny(seed=3, std=0.3, head_std=1.0)
    out = generate(model, _prompts(), kv_cache=mode, **KW)
    assert (out.forward_passes, out.full_passes) == (6, 3)  # one refresh per block of 2 steps
    every_other = generate(
        model, _prompts(), kv_cache=mode, kv_cache_refresh=2, **{**KW, "steps": 12}
    )
    assert (every_other.forward_passes, every_other.full_passes) == (12, 6)
    assert not (out.completions == MASK).any()


def test_cached_greedy_decoding_stays_close_to_exact(make_tiny) -> None:
    # an approximation, so not equal; but far from independent tokens
    model = make_tiny(seed=3, std=0.3, head_std=1.0)
    prompts = _prompts(batch=16)
    exact = generate(model, prompts, **KW).completions
    for mode in ("prefix", "dual"):
        cached = generate(model, prompts, kv_cache=mode, **KW).completions
        assert float((cached == exact).float().mean()) > 0.7, mode


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_fresh_cache_reproduces_the_full_pass(make_tiny, positions: str) -> None:
    model = make_tiny(seed=4, std=0.3, positions=positions)
    call = model_call(model)
    x = _sequence(_prompts())
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[0, :2] = False  # an explicit key-padding mask is honoured
    full = call.hidden_states(x, keep)
    for mode in ("prefix", "dual"):
        cache = call.block_cache(x, keep, mode)
        assert cache is not None
        torch.testing.assert_close(cache.refresh(x), full, rtol=0, atol=1e-6)
        torch.testing.assert_close(cache.block(x, 9, 13), full[:, 9:13], rtol=0, atol=1e-6)


def test_cached_positions_are_read_from_the_cache(make_tiny) -> None:
    """Dual: a change outside the block after the refresh is not seen; prefix: a change after
    the block is seen, one before it is not; a change inside the block is always seen."""
    model = make_tiny(seed=4, std=0.3)
    call = model_call(model)
    x = _sequence(_prompts())
    lo, hi = 9, 13
    before, after, inside = x.clone(), x.clone(), x.clone()
    before[:, 1] = 7
    after[:, 15] = 7
    inside[:, 10] = 7
    for mode, sees_after in (("dual", False), ("prefix", True)):
        cache = call.block_cache(x, None, mode)
        assert cache is not None
        cache.refresh(x)
        base = cache.block(x, lo, hi)
        assert torch.equal(cache.block(before, lo, hi), base), mode
        assert torch.equal(cache.block(after, lo, hi), base) is not sees_after, mode
        assert not torch.equal(cache.block(inside, lo, hi), base), mode


def test_run_span_matches_the_module_forward_and_checks_the_first_pass(make_tiny) -> None:
    model = make_tiny(seed=4, std=0.3)
    x = _sequence(_prompts())
    positions = torch.arange(x.shape[1]).expand_as(x)
    layers = TinyLayers(model)
    with torch.no_grad():
        torch.testing.assert_close(
            model.lm_head(run_span(layers, x, positions)), model(x).logits, rtol=0, atol=1e-6
        )
        with pytest.raises(ValueError, match="whole sequence first"):
            run_span(layers, x[:, 3:], positions[:, 3:], lo=3, length=x.shape[1], cache=KVCache())
    cache = BlockCache(layers, None, batch=4, length=x.shape[1], device=x.device)
    with pytest.raises(ValueError, match="refresh"):
        cache.block(x, 5, 9)
    with pytest.raises(ValueError, match="cache mode"):
        BlockCache(layers, None, batch=4, length=x.shape[1], device=x.device, mode="full")


class Wrapped(nn.Module):
    """A module of unknown layout: no native layers, so no cache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, input_ids: Tensor, **kwargs: Tensor) -> MaskedLMOutput:
        return self.inner(input_ids, **kwargs)


def test_a_model_without_native_layers_decodes_exactly_and_says_so(
    make_tiny, caplog: pytest.LogCaptureFixture
) -> None:
    model = Wrapped(make_tiny(seed=3, std=0.3, head_std=1.0))
    assert model_call(model).block_cache(_sequence(_prompts()), None, "dual") is None
    with caplog.at_level(logging.WARNING, logger="maskgrpo.sampling.llada"):
        out = generate(model, _prompts(), kv_cache="dual", **KW)
    assert torch.equal(out.sequences, generate(model.inner, _prompts(), **KW).sequences)
    assert out.full_passes == out.forward_passes == 6


# ------------------------------------------------------------------ parallel decoding


def test_threshold_commits_every_confident_position_and_keeps_the_pace(make_tiny) -> None:
    model = make_tiny(seed=6, std=0.3, head_std=2.0)  # peaked: many confident positions
    prompts = _prompts(batch=8)
    kw = {**KW, "steps": 12}
    fixed = generate(model, prompts, **kw)
    fast = generate(model, prompts, parallel_threshold=0.9, **kw)
    assert fast.forward_passes < fixed.forward_passes == 12
    assert not (fast.completions == MASK).any()
    # nothing reaches the threshold: the fixed schedule, token for token
    weak = make_tiny(seed=6, std=0.02, head_std=0.02)  # near-uniform outputs
    assert torch.equal(
        generate(weak, prompts, parallel_threshold=0.9, **kw).sequences,
        generate(weak, prompts, **kw).sequences,
    )
    # everything reaches a tiny threshold: one pass per block
    assert generate(model, prompts, parallel_threshold=1e-9, **kw).forward_passes == 3


def test_threshold_commits_exactly_the_confident_positions(make_tiny) -> None:
    """One step checked against the rule: commit masked positions whose confidence reaches the
    threshold, at least ceil(masked / steps left)."""
    model = make_tiny(seed=6, std=0.3, head_std=2.0)
    prompts = _prompts(batch=8)
    call = model_call(model)
    out = generate(
        model, prompts, parallel_threshold=0.8, mask_id=MASK, gen_length=4, steps=4, block_length=4
    )
    x = _sequence(prompts, 4)
    with torch.no_grad():
        probs = torch.softmax(call.logits(x).double(), dim=-1)
    probs[..., MASK] = 0
    probs = probs / probs.sum(-1, keepdim=True)
    conf, token = probs[:, 5:].max(dim=-1)  # (B, 4): the greedy first step
    first = torch.where(conf >= 0.8, token, MASK)
    rows_with_none = (first == MASK).all(dim=1)
    best = conf.argmax(dim=1)
    first[rows_with_none, best[rows_with_none]] = token[rows_with_none, best[rows_with_none]]
    committed = first != MASK
    assert torch.equal(out.completions[committed], first[committed])
    assert int(committed.sum()) > 8  # some rows committed several positions in one step


def test_fast_options_are_validated(tiny_model) -> None:
    prompts = _prompts()
    with pytest.raises(ValueError, match="cache="):
        generate(tiny_model, prompts, kv_cache="full", **KW)
    with pytest.raises(ValueError, match="threshold"):
        generate(tiny_model, prompts, parallel_threshold=1.5, **KW)
    with pytest.raises(ValueError, match="threshold"):
        generate(tiny_model, prompts, parallel_threshold=0.0, **KW)
    with pytest.raises(ValueError, match="low_confidence"):
        generate(tiny_model, prompts, parallel_threshold=0.9, remasking="emerge", **KW)
    with pytest.raises(ValueError, match="kv_cache_refresh"):
        generate(tiny_model, prompts, kv_cache="dual", kv_cache_refresh=-1, **KW)


def test_config_fields_are_validated_and_reach_the_sampler() -> None:
    from maskgrpo.config import DemoConfig, EvalConfig, GenerateConfig, TrainConfig
    from maskgrpo.trainer.grpo import sampler_settings

    for cls in (TrainConfig, GenerateConfig, EvalConfig):
        with pytest.raises(ValueError, match="kv_cache='full'"):
            cls(kv_cache="full").validate()
        with pytest.raises(ValueError, match="parallel_threshold"):
            cls(parallel_threshold=1.5).validate()
        with pytest.raises(ValueError, match="remasking=low_confidence"):
            cls(parallel_threshold=0.9, remasking="emerge").validate()
        with pytest.raises(ValueError, match="kv_cache_refresh"):
            cls(kv_cache_refresh=-1).validate()
    with pytest.raises(ValueError, match="kv_cache"):
        DemoConfig(kv_cache="full").validate()
    cfg = TrainConfig(kv_cache="dual", parallel_threshold=0.9, kv_cache_refresh=2)
    cfg.validate()
    settings = sampler_settings(cfg, 4)
    assert (settings.kv_cache, settings.parallel_threshold, settings.kv_cache_refresh) == (
        "dual",
        0.9,
        2,
    )


def test_the_demo_and_the_modality_pass_the_options_on(
    tiny_model, spec, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maskgrpo.modalities.text as modality_module
    from maskgrpo.config import DemoConfig
    from maskgrpo.modalities.text import TextModality
    from maskgrpo.recipes.text_demo import demo_train_config
    from maskgrpo.trainer.grpo import sampler_settings

    train = demo_train_config(DemoConfig(kv_cache="dual", parallel_threshold=0.9))
    settings = sampler_settings(train, 4)
    seen: dict[str, object] = {}
    real = modality_module.generate

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(modality_module, "generate", spy)
    text = TextModality(tokenizer, spec, prompt_width=5)
    ids = text.encode_prompts(["1+2=", "3="], torch.device("cpu"))
    text.rollout(tiny_model, ids, settings, torch.Generator().manual_seed(0))
    assert (seen["kv_cache"], seen["parallel_threshold"], seen["kv_cache_refresh"]) == (
        "dual",
        0.9,
        0,
    )
    exact = sampler_settings(demo_train_config(DemoConfig()), 4)
    text.rollout(tiny_model, ids, exact, torch.Generator().manual_seed(0))
    assert (seen["kv_cache"], seen["parallel_threshold"]) == ("none", None)
