"""Evaluation parity and Dream's alignment: the project's sampler and log-probs against each
family's own code, at temperature 0, token for token.

- LLaDA (current and legacy code): LLaDA's low-confidence semi-autoregressive ``generate``,
  written out from the published algorithm (:func:`families_support.llada_reference`);
- MMaDA: its own ``mmu_generate`` (``modeling_mmada.py``);
- Dream: its own ``diffusion_generate`` with the default algorithm (``alg="origin"``), its
  global-RNG draws seeded like the project's generator.

Both sides exclude the ids the project never samples (the mask token, rows beyond the
tokenizer): the references through a logits hook (Dream's own ``generation_logits_hook_func``,
a forward hook for MMaDA). Dream's alignment is checked against the logits its own sampler uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from families_support import (
    ban_in_forward,
    banned_ids,
    left_pad,
    llada_reference,
    prompt_rows,
)

from maskgrpo.logprobs import token_logprobs
from maskgrpo.masking import remask
from maskgrpo.models.calls import model_call
from maskgrpo.models.hf import HFPolicy
from maskgrpo.sampling.llada import generate

Loaded = Callable[[str], HFPolicy]
# Dream's diffusion_generate is given the model's generation config (loaded from the fixture's
# generation_config.json: alg origin, eps 1e-3, its token ids). Without it Dream rebuilds one with
# GenerationConfig.from_model_config, which transformers 5 cannot do for a subclass with extra
# fields (eps, steps, alg); the project's sampler does not use that code path.
# (gen_length, steps, block_length): one block; semi-autoregressive blocks; fewer steps than
# tokens (several tokens committed per step)
SETTINGS = [(8, 8, 8), (12, 12, 4), (12, 6, 6)]


@pytest.mark.parametrize("name", ["llada", "llada_legacy"])
@pytest.mark.parametrize("gen_length, steps, block_length", SETTINGS)
def test_llada_matches_its_published_decoder(
    name: str, gen_length: int, steps: int, block_length: int, loaded: Loaded
) -> None:
    policy = loaded(name)
    settings = {"gen_length": gen_length, "steps": steps, "block_length": block_length}
    for row in prompt_rows(policy):
        prompt = torch.tensor([row])
        ours = generate(policy.model, prompt, mask_id=policy.spec.mask_id, **settings)
        with torch.no_grad():
            ref = llada_reference(
                policy.model,
                prompt,
                mask_id=policy.spec.mask_id,
                banned=banned_ids(policy),
                **settings,
            )
        assert torch.equal(ours.sequences, ref), (ours.completions, ref[:, len(row) :])


def test_llada_batched_decoder_with_attention_mask(loaded: Loaded) -> None:
    """LLaDA's generate on a left-padded batch with its attention mask (the current hub code
    honours it) gives the same tokens as the project's sampler."""
    policy = loaded("llada")
    ids, attention = left_pad(prompt_rows(policy), policy.spec.pad_id, extra=1)
    settings = {"gen_length": 12, "steps": 12, "block_length": 4}
    ours = generate(policy.model, ids, mask_id=policy.spec.mask_id, **settings)
    with torch.no_grad():
        ref = llada_reference(
            policy.model,
            ids,
            mask_id=policy.spec.mask_id,
            banned=banned_ids(policy),
            attention_mask=attention,
            **settings,
        )
    assert torch.equal(ours.sequences, ref)


@pytest.mark.parametrize("gen_length, steps, block_length", SETTINGS)
def test_mmada_matches_its_mmu_generate(
    gen_length: int, steps: int, block_length: int, loaded: Loaded
) -> None:
    policy = loaded("mmada")
    settings = {"steps": steps, "block_length": block_length}
    handle = ban_in_forward(policy.model, banned_ids(policy))
    try:
        for row in prompt_rows(policy):
            prompt = torch.tensor([row])
            with torch.no_grad():
                ref = policy.model.mmu_generate(
                    prompt, max_new_tokens=gen_length, mask_id=policy.spec.mask_id, **settings
                )
            ours = generate(
                policy.model,
                prompt,
                mask_id=policy.spec.mask_id,
                gen_length=gen_length,
                **settings,
            )
            assert torch.equal(ours.sequences, ref)
    finally:
        handle.remove()


def _dream_generate(policy: HFPolicy, prompt: torch.Tensor, steps: int, seed: int) -> Any:
    banned = banned_ids(policy)

    def hook(step: Any, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits[..., banned] = float("-inf")
        return logits

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)  # diffusion_generate draws from the global RNG
        return policy.model.diffusion_generate(
            prompt,
            generation_config=policy.model.generation_config,  # see the note at the top
            max_new_tokens=12,
            steps=steps,
            temperature=0.0,
            alg="origin",
            generation_logits_hook_func=hook,
        )


@pytest.mark.parametrize("name", ["dream", "dream_fasttok"])
@pytest.mark.parametrize("steps", [12, 4])
def test_dream_matches_its_diffusion_generate(name: str, steps: int, loaded: Loaded) -> None:
    policy = loaded(name)
    rows = prompt_rows(policy)
    same_length = [r for r in rows if len(r) == len(rows[0])]
    cases = [[r] for r in rows] + [same_length * 2]  # single rows, and a batch of equal rows
    for seed, case in enumerate(cases):
        prompt = torch.tensor(case)
        ref = _dream_generate(policy, prompt, steps, seed)
        ours = generate(
            policy.model,
            prompt,
            mask_id=policy.spec.mask_id,
            gen_length=12,
            steps=steps,
            block_length=12,
            remasking="origin",
            generator=torch.Generator().manual_seed(seed),
        )
        assert torch.equal(ours.sequences, ref)


@pytest.mark.parametrize("name", ["dream", "dream_fasttok"])
def test_dream_alignment_follows_its_own_sampler(name: str, loaded: Loaded) -> None:
    """The logits Dream's own sampler decides with are the project's aligned logits, and the
    log-prob of token ``i`` is read from the output at ``i - 1``."""
    policy = loaded(name)
    model = policy.model
    prompt = torch.tensor([prompt_rows(policy)[1]])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(step: Any, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen.append((x.clone(), logits.clone()))
        return logits

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        model.diffusion_generate(
            prompt,
            generation_config=model.generation_config,  # see the note at the top
            max_new_tokens=8,
            steps=4,
            generation_logits_hook_func=hook,
        )
    assert len(seen) == 4
    call = model_call(model)
    with torch.no_grad():
        for x, theirs in seen:
            torch.testing.assert_close(call.logits(x), theirs, rtol=0, atol=1e-5)
    # per-token log-probs: token i scored from the forward's output at position i - 1
    x = seen[-1][0]
    view = remask(
        x,
        prompt.shape[1],
        0.8,
        "random",
        mask_id=policy.spec.mask_id,
        generator=torch.Generator().manual_seed(1),
    )
    noisy, scored = view.noisy_ids[0], view.scored[0]
    with torch.no_grad():
        got = token_logprobs(model, noisy, x, scored)
        raw = model(noisy).logits.float().log_softmax(-1)  # (1, L, V), position i -> token i+1
    expected = raw[:, :-1].gather(-1, x[:, 1:, None])[..., 0]  # token i from position i - 1
    assert bool(scored[:, 1:].any())
    torch.testing.assert_close(
        got[:, 1:][scored[:, 1:]], expected[scored[:, 1:]], atol=1e-5, rtol=0
    )
