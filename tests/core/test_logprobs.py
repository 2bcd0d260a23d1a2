"""Log-probs on masked views: fast paths against plain references, and a Hugging Face model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskgrpo import remask, split_head, token_logprobs, view_logprobs
from maskgrpo.masking import MaskedView

MASK = 2


def _batch(seed: int = 0, batch: int = 5, prompt: int = 3, length: int = 9, strategy="random"):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 16, (batch, prompt + length), generator=gen)
    view = remask(ids, prompt, 0.6, strategy, mask_id=MASK, generator=gen)
    return ids, view


def _reference_logprobs(model: nn.Module, noisy: torch.Tensor, targets, scored) -> torch.Tensor:
    """Loop over every scored position: full logits, float64 log-softmax, pick the target."""
    logits = model(noisy).logits.double()
    out = torch.zeros(scored.shape, dtype=torch.float64)
    for b, n in scored.nonzero().tolist():
        out[b, n] = torch.log_softmax(logits[b, n], dim=-1)[targets[b, n]]
    return out


def _assert_grads_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    # float32 sums in a different order: compare relative to each tensor's gradient scale
    for a, b in zip(got, want, strict=True):
        scale = float(b.abs().max()) + 1e-12
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * scale)


def _grads(model: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_token_logprobs_matches_loop_reference(tiny_model) -> None:
    ids, view = _batch()
    noisy, scored = view.noisy_ids[0], view.scored[0]
    with torch.no_grad():
        got = token_logprobs(tiny_model, noisy, ids, scored)
        ref = _reference_logprobs(tiny_model, noisy, ids, scored)
    assert got.dtype == torch.float32 and got.shape == ids.shape
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5)
    assert bool((got[scored] < 0).all())
    assert bool((got[~scored] == 0).all()), "positions not scored must be exactly 0"


@pytest.mark.parametrize("chunk_size", [1, 3, 7])
def test_chunked_equals_plain_values_and_gradients(make_tiny, chunk_size: int) -> None:
    model = make_tiny(seed=1, std=0.2)
    ids, view = _batch(seed=1)
    noisy, scored = view.noisy_ids[0], view.scored[0]
    weights = torch.linspace(-1.0, 2.0, ids.numel()).view(ids.shape)  # a non-trivial loss

    plain = token_logprobs(model, noisy, ids, scored)
    (plain * weights).sum().backward()
    g_plain = _grads(model)
    chunked = token_logprobs(model, noisy, ids, scored, chunk_size=chunk_size)
    (chunked * weights).sum().backward()
    g_chunked = _grads(model)

    assert int(scored.sum()) > chunk_size  # the chunked path is really taken
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-6)
    _assert_grads_close(g_chunked, g_plain)
    assert any(float(g.abs().sum()) > 0 for g in g_plain)


def test_full_logits_path_equals_split_path(make_tiny) -> None:
    model = make_tiny(seed=2, std=0.2)
    ids, view = _batch(seed=2)
    noisy, scored = view.noisy_ids[0], view.scored[0]
    split = token_logprobs(model, noisy, ids, scored)
    full = token_logprobs(model, noisy, ids, scored, use_head_split=False)
    torch.testing.assert_close(full, split, rtol=0, atol=1e-6)
    split.sum().backward()
    g_split = _grads(model)
    full.sum().backward()
    _assert_grads_close(_grads(model), g_split)


@pytest.mark.parametrize("use_head_split", [True, False])
def test_vocab_range_is_log_softmax_over_the_slice(tiny_model, use_head_split: bool) -> None:
    lo, hi = 4, 16
    ids, view = _batch(seed=3)  # targets all in [4, 16)
    noisy, scored = view.noisy_ids[0], view.scored[0]
    with torch.no_grad():
        got = token_logprobs(
            tiny_model, noisy, ids, scored, vocab_range=(lo, hi), use_head_split=use_head_split
        )
        logits = tiny_model(noisy).logits[..., lo:hi].double()
        manual = logits.log_softmax(-1).gather(-1, (ids - lo).unsqueeze(-1)).squeeze(-1)
        full = token_logprobs(tiny_model, noisy, ids, scored)
    torch.testing.assert_close(got[scored].double(), manual[scored], rtol=0, atol=1e-5)
    assert bool((got[~scored] == 0).all())
    # renormalising over a sub-vocabulary raises every log-prob
    assert bool((got[scored] > full[scored]).all())


def test_micro_batches_equal_full_batch_and_views_merge(make_tiny) -> None:
    model = make_tiny(seed=4, std=0.2)
    ids, view = _batch(seed=4, batch=5, strategy="coupled")
    with torch.no_grad():
        full, scored = view_logprobs(model, view, ids)
        micro, scored_micro = view_logprobs(model, view, ids, micro_batch_size=2)
        chunked, _ = view_logprobs(model, view, ids, micro_batch_size=3, chunk_size=4)
        per_view = [token_logprobs(model, view.noisy_ids[v], ids, view.scored[v]) for v in range(2)]
    torch.testing.assert_close(micro, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    assert torch.equal(scored, scored_micro)
    assert torch.equal(scored, view.scored[0] | view.scored[1])
    # coupled views are disjoint: the merged row is the sum of the two views' rows, and each
    # position's value comes from the view in which it was masked
    torch.testing.assert_close(full, per_view[0] + per_view[1], rtol=0, atol=0)
    assert bool((full[view.scored[0]] == per_view[0][view.scored[0]]).all())


def test_micro_batches_equal_full_batch_under_autograd(make_tiny) -> None:
    model = make_tiny(seed=6, std=0.2)
    ids, view = _batch(seed=6, batch=5, strategy="fading")
    full, _ = view_logprobs(model, view, ids)
    full.sum().backward()
    g_full = _grads(model)
    micro, _ = view_logprobs(model, view, ids, micro_batch_size=2, chunk_size=5)
    micro.sum().backward()
    torch.testing.assert_close(micro, full, rtol=0, atol=1e-6)
    _assert_grads_close(_grads(model), g_full)


def test_nothing_scored_gives_zeros(tiny_model) -> None:
    ids, _ = _batch()
    none = torch.zeros_like(ids, dtype=torch.bool)
    out = token_logprobs(tiny_model, ids, ids, none)
    assert torch.equal(out, torch.zeros(ids.shape))
    view = MaskedView(ids.unsqueeze(0), none.unsqueeze(0))
    logp, scored = view_logprobs(tiny_model, view, ids, micro_batch_size=2)
    assert torch.equal(logp, torch.zeros(ids.shape)) and not scored.any()


def test_split_head_of_tiny_model_reproduces_logits(tiny_model) -> None:
    ids, _ = _batch()
    pair = split_head(tiny_model)
    assert pair is not None
    trunk, head = pair
    with torch.no_grad():
        torch.testing.assert_close(head(trunk(ids)), tiny_model(ids).logits, rtol=0, atol=0)
    assert split_head(nn.Linear(2, 2)) is None


# ------------------------------------------------------------------- Hugging Face Llama


def _bidirectional_llama(vocab_size: int):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    # Recent transformers build a bidirectional mask for decoder models when is_causal is False.
    config.is_causal = False
    model = transformers.LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def test_llama_is_bidirectional() -> None:
    model = _bidirectional_llama(16)
    ids, _ = _batch()
    changed = ids.clone()
    changed[:, -1] = torch.where(changed[:, -1] == 5, 6, 5)
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    # a later token changes the prediction at position 0: attention is not causal
    assert not torch.allclose(a[:, 0], b[:, 0])


def test_llama_split_head_and_logprobs() -> None:
    model = _bidirectional_llama(16)
    ids, view = _batch(seed=5)
    noisy, scored = view.noisy_ids[0], view.scored[0]
    pair = split_head(model)
    assert pair is not None, "split_head should find Llama's trunk and lm_head"
    trunk, head = pair
    with torch.no_grad():
        torch.testing.assert_close(head(trunk(ids)), model(ids).logits, rtol=0, atol=1e-5)
        split = token_logprobs(model, noisy, ids, scored, chunk_size=4)
        full = token_logprobs(model, noisy, ids, scored, use_head_split=False)
        ref = _reference_logprobs(model, noisy, ids, scored)
    torch.testing.assert_close(split, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(split.double(), ref, rtol=0, atol=1e-5)
    assert bool((split[~scored] == 0).all())
    # gradients flow into the Llama trunk through the split path
    token_logprobs(model, noisy, ids, scored, chunk_size=4).sum().backward()
    assert float(model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum()) > 0
