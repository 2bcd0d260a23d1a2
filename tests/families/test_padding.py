"""Padding invariance: a row's log-probs and greedy tokens do not depend on its batch.

For every family, including the legacy LLaDA code that ignores attention masks, a left-padded
row scores and decodes exactly as it does alone and unpadded. The raw forward without any
padding handling is shown to move by much more, so the checks can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from families_support import FIXTURES, left_pad, prompt_rows

from maskgrpo.logprobs import token_logprobs, view_logprobs
from maskgrpo.masking import remask
from maskgrpo.models.calls import model_call
from maskgrpo.models.hf import HFPolicy
from maskgrpo.sampling.llada import generate

Loaded = Callable[[str], HFPolicy]
GEN = 8


def _rollouts(policy: HFPolicy) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    """Greedy rollouts of the padded batch ``(B, W + GEN)`` and of each row alone."""
    rows = prompt_rows(policy)
    ids, _ = left_pad(rows, policy.spec.pad_id, extra=2)
    settings: dict[str, Any] = {"gen_length": GEN, "steps": GEN, "block_length": 4}
    batch = generate(policy.model, ids, mask_id=policy.spec.mask_id, **settings)
    alone = [
        generate(policy.model, torch.tensor([r]), mask_id=policy.spec.mask_id, **settings)
        for r in rows
    ]
    return batch.sequences, ids.shape[1], [a.sequences[0] for a in alone]


@pytest.mark.parametrize("name", FIXTURES)
def test_greedy_tokens_do_not_depend_on_the_batch(name: str, loaded: Loaded) -> None:
    policy = loaded(name)
    batch, width, alone = _rollouts(policy)
    for row, single in zip(batch, alone, strict=True):
        assert torch.equal(row[width:], single[-GEN:])
        assert not bool((row == policy.spec.mask_id).any())
        limit = policy.model.maskgrpo_binding.vocab_limit
        assert int(row[width:].max()) < limit  # only ids the tokenizer can decode
    # the completions decode (Dream's remote tokenizer crashes on ids beyond its vocabulary)
    policy.tokenizer.batch_decode(batch[:, width:].tolist())


@pytest.mark.parametrize("name", FIXTURES)
def test_logprobs_do_not_depend_on_the_batch(name: str, loaded: Loaded) -> None:
    policy = loaded(name)
    model, spec = policy.model, policy.spec
    batch, width, alone = _rollouts(policy)
    gen = torch.Generator().manual_seed(3)
    view = remask(batch, width, 0.7, "random", mask_id=spec.mask_id, generator=gen)
    with torch.no_grad():
        padded, scored = view_logprobs(model, view, batch, chunk_size=5)
        worst, naive_worst = 0.0, 0.0
        for b, single in enumerate(alone):
            cut = width - single.shape[0] + GEN  # this row's padding
            noisy = view.noisy_ids[0, b : b + 1, cut:]
            mask = scored[b : b + 1, cut:]
            own = token_logprobs(model, noisy, single[None], mask)
            worst = max(worst, float((padded[b : b + 1, cut:] - own)[mask].abs().max()))
            # pads visible and no mask (aligned logits): what padding used to cost
            raw = model_call(model).logits(view.noisy_ids[0, b : b + 1], None)
            lp = raw.float().log_softmax(-1).gather(-1, batch[b : b + 1, :, None])[..., 0]
            naive_worst = max(naive_worst, float((lp[:, cut:] - own)[mask].abs().max()))
    assert bool(scored.any())
    assert worst < 1e-4, worst
    assert naive_worst > 1e-2, naive_worst  # padding does move the numbers without the fix


def test_legacy_llada_runs_one_pass_per_padding_width(loaded: Loaded) -> None:
    policy = loaded("llada_legacy")
    model = policy.model
    rows = prompt_rows(policy)
    ids, attention = left_pad(rows + rows[:1], policy.spec.pad_id)  # 4 widths over 5 rows
    calls = []
    handle = model.model.transformer.ln_f.register_forward_hook(
        lambda m, a, out: calls.append(tuple(a[0].shape))
    )
    try:
        with torch.no_grad():
            out = model_call(model).hidden_states(ids, attention)
    finally:
        handle.remove()
    assert sorted(c[0] for c in calls) == [1, 1, 1, 2]  # rows grouped by padding width
    assert all(c[1] in {len(r) for r in rows} for c in calls)  # each pass unpadded
    assert bool((out[attention == 0] == 0).all())


def test_dream_hub_code_rejects_a_2d_mask_but_the_adapter_pads_it(loaded: Loaded) -> None:
    policy = loaded("dream")
    ids, attention = left_pad(prompt_rows(policy)[:2], policy.spec.pad_id)
    with torch.no_grad(), pytest.raises(RuntimeError):
        policy.model(ids, attention_mask=attention)
    with torch.no_grad():
        logits = model_call(policy.model).logits(ids, attention)
    assert bool(torch.isfinite(logits[attention.bool()]).all())


class DistributedDataParallel(torch.nn.Module):
    """Stands in for torch's DDP: ``module`` inside, a ``forward`` that must run (and counts)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.module(*args, **kwargs)


@pytest.mark.parametrize("name", FIXTURES)
def test_full_forward_path_keeps_alignment_and_padding(name: str, loaded: Loaded) -> None:
    """Under a distributed wrapper the public forward runs (padding in the family's own form,
    Dream's shift applied after it) and gives what the hidden-state path gives."""
    policy = loaded(name)
    ids, attention = left_pad(prompt_rows(policy), policy.spec.pad_id, extra=1)
    wrapper = DistributedDataParallel(policy.model)
    wrapped = model_call(wrapper)
    assert not wrapped.lean and wrapped.family is policy.family
    with torch.no_grad():
        lean = model_call(policy.model).logits(ids, attention)
        full = wrapped.logits(ids, attention)
    assert wrapper.calls >= 1
    real = attention.bool()
    assert float((full - lean)[real].abs().max()) < 1e-4
