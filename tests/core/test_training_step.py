"""Tiny-model end-to-end checks: on-policy ratio, the all-masked-out batch, a few GRPO updates,
and that library calls never touch the global RNG."""

from __future__ import annotations

import pytest
import torch

from maskgrpo import (
    emerge_reveal,
    generate,
    group_advantages,
    grpo_loss,
    gumbel_sample,
    remask,
    upto_first_eos,
    view_logprobs,
)

MASK, EOS = 2, 1
PROMPT = 3


def _rollouts(batch: int = 4, length: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, 16, (batch, PROMPT + length), generator=gen)


def _view(ids: torch.Tensor, seed: int, iteration: int, strategy: str = "fading"):
    # the mask seed is a stable function of (seed, iteration): old and new passes share it
    gen = torch.Generator().manual_seed(1000 * seed + iteration)
    return remask(ids, PROMPT, 0.8, strategy, mask_id=MASK, generator=gen)


@pytest.mark.parametrize("strategy", ["fading", "random", "coupled", "d1"])
def test_on_policy_ratio_is_exactly_one(make_tiny, strategy: str) -> None:
    model = make_tiny(seed=1, std=0.2, dropout=0.3)  # eval mode: dropout inactive
    ids = _rollouts()
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0])
    old_view, new_view = _view(ids, 7, 2, strategy), _view(ids, 7, 2, strategy)
    assert torch.equal(old_view.noisy_ids, new_view.noisy_ids)
    with torch.no_grad():
        old, scored = view_logprobs(model, old_view, ids)
    logp, _ = view_logprobs(model, new_view, ids)
    mask = scored & upto_first_eos(ids, PROMPT, EOS)
    loss, stats = grpo_loss(logp, old, adv, mask)
    assert stats.ratio_mean == 1.0 and stats.clip_fraction == 0.0 and stats.tokens > 0
    # ratio 1 everywhere: the loss is minus the token-weighted mean advantage
    expected = -(adv[:, None] * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    # dropout on in the "old" pass (a trap of the public code) breaks this
    model.train()
    with torch.no_grad():
        noisy_old, _ = view_logprobs(model, old_view, ids)
    assert not torch.equal(noisy_old, old)


def test_different_iterations_give_different_views() -> None:
    ids = _rollouts()
    assert not torch.equal(_view(ids, 7, 1).scored, _view(ids, 7, 2).scored)


def test_all_masked_out_batch_is_a_no_op(make_tiny) -> None:
    model = make_tiny(seed=2, std=0.2)
    model.train()
    ids = _rollouts()
    view = _view(ids, 3, 1)
    with torch.no_grad():
        old, _ = view_logprobs(model, view, ids)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    logp, scored = view_logprobs(model, view, ids)  # the view scores tokens; the loss none
    assert scored.any() and logp.requires_grad
    nothing = torch.zeros_like(scored)
    for normalization, normalizer in (("token", None), ("sequence", None), ("constant", 8.0)):
        loss, stats = grpo_loss(
            logp, old, adv, nothing, normalization=normalization, normalizer=normalizer
        )
        assert float(loss.detach()) == 0.0 and stats.tokens == 0
        assert stats.kl == 0.0 and stats.clip_fraction == 0.0
    loss, stats = grpo_loss(logp, old, adv, nothing, ref_logp=old - 0.3, beta=0.5)
    assert float(loss.detach()) == 0.0 and not torch.isnan(loss)
    loss.backward()
    # the gradient is exactly zero for every parameter
    for name, p in model.named_parameters():
        assert p.grad is not None and bool((p.grad == 0).all()), name
    # what the trainer does: no step when no token is scored, so the parameters stay put
    # (an AdamW step would still move them through weight decay)
    if stats.tokens > 0:
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # and with nothing scored at all, the log-probs are exactly zero
    empty_view = _view(ids, 3, 1)
    empty_view = type(empty_view)(empty_view.noisy_ids, torch.zeros_like(empty_view.scored))
    logp0, _ = view_logprobs(model, empty_view, ids)
    loss0, _ = grpo_loss(logp0, torch.zeros_like(logp0), adv, nothing)
    assert float(loss0.detach()) == 0.0 and torch.equal(logp0, torch.zeros_like(logp0))


def test_grpo_updates_raise_the_rewarded_completion(make_tiny) -> None:
    """Tier 3: a group of two completions of one prompt, only the first one rewarded."""
    model = make_tiny(seed=3, std=0.1)
    model.train()
    ids = _rollouts(batch=2, length=8, seed=4)
    ids[:, :PROMPT] = ids[0, :PROMPT]  # one prompt, two completions
    adv = group_advantages([1.0, 0.0], group_size=2)
    assert float(adv[0]) > 0 > float(adv[1])
    view = _view(ids, 5, 1)
    mask = view.scored[0] & upto_first_eos(ids, PROMPT, EOS)
    with torch.no_grad():
        old, _ = view_logprobs(model, view, ids)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    for _ in range(4):
        logp, _ = view_logprobs(model, view, ids)
        loss, stats = grpo_loss(logp, old, adv, mask, eps=0.2)
        assert stats.tokens == int(mask.sum()) > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, _ = view_logprobs(model, view, ids)
    gain = ((after - old) * mask).sum(dim=1)
    assert float(gain[0]) > 0, "the rewarded completion's log-prob should rise"
    assert float(gain[1]) < 0, "the penalised completion's log-prob should fall"
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_library_calls_leave_the_global_rng_alone(make_tiny) -> None:
    model = make_tiny(seed=6, dropout=0.0)
    ids = _rollouts()
    state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    for strategy in ("fading", "random", "coupled", "d1"):
        view = remask(ids, PROMPT, 0.7, strategy, mask_id=MASK, generator=gen)
        with torch.no_grad():
            view_logprobs(model, view, ids, chunk_size=3)
    for remasking in ("low_confidence", "random", "emerge"):
        generate(
            model,
            ids[:, :PROMPT],
            mask_id=MASK,
            gen_length=4,
            steps=2,
            block_length=4,
            temperature=0.9,
            remasking=remasking,
            generator=gen,
        )
    gumbel_sample(torch.zeros(3, 5), 1.0, gen)
    emerge_reveal(torch.ones(3, 5, dtype=torch.bool), 0.9, 0.5, last=False, generator=gen)
    group_advantages([1.0, None, 0.0, 2.0], 2, method="rank")
    assert torch.equal(torch.get_rng_state(), state)
