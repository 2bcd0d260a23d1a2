"""The native LLaDA/Dream architectures and the block KV cache on the published fixtures.

- :class:`NativeLLaDA` / :class:`NativeDream` load each fixture's published weights by their
  state-dict names and give the published code's logits (within 1e-4), padded rows included;
- the cache's full pass (run natively on the loaded model's own modules) reproduces the
  published hidden states, and a block pass on a fresh cache reproduces the full pass;
- a cached sampler refreshed at every step decodes exactly like the sampler without a cache
  (greedy and at temperature 1, a padded batch), and a LoRA adapter inside is honoured.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from families_support import FIXTURES, left_pad, prompt_rows

from maskgrpo.lora import apply_lora
from maskgrpo.models.calls import bind_family, model_call
from maskgrpo.models.hf import HFPolicy, load_hf_policy
from maskgrpo.models.native_dream import NativeDream
from maskgrpo.models.native_llada import NativeLLaDA
from maskgrpo.sampling.llada import generate

Loaded = Callable[[str], HFPolicy]
GEN = 8


def _native(name: str, folder: Path) -> torch.nn.Module:
    cls: Any = NativeDream if name.startswith("dream") else NativeLLaDA
    return cls.from_pretrained(folder)


def _ids(policy: HFPolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of chat prompts followed by masks, and its key padding."""
    ids, attention = left_pad(prompt_rows(policy), policy.spec.pad_id, extra=2)
    batch = ids.shape[0]
    masks = torch.full((batch, GEN), policy.spec.mask_id)
    keep = torch.cat([attention.bool(), torch.ones(batch, GEN, dtype=torch.bool)], dim=1)
    return torch.cat([ids, masks], dim=1), keep


@pytest.mark.parametrize("name", FIXTURES)
def test_native_architecture_gives_the_published_logits(
    name: str, loaded: Loaded, remote_models: Path
) -> None:
    policy = loaded(name)
    native = _native(name, remote_models / name)
    assert set(native.state_dict()) == set(policy.model.state_dict())  # the published names
    ids, keep = _ids(policy)
    rows = prompt_rows(policy)
    with torch.no_grad():
        # unpadded: the public forwards
        alone = torch.tensor([rows[0]])
        gap = (native(alone).logits - policy.model(alone).logits).abs().max()
        assert float(gap) < 1e-4
        # padded: through the family (Dream's shift, LLaDA's padding rules) on both sides
        bind_family(native, pad_id=policy.spec.pad_id, tokenizer=policy.tokenizer)
        want = model_call(policy.model).logits(ids, keep)
        got = model_call(native).logits(ids, keep)
    assert float((got - want)[keep].abs().max()) < 1e-4
    # a native model is a policy like the published one: the same greedy tokens
    prompts, attention = left_pad(rows, policy.spec.pad_id, extra=2)
    kw: dict[str, Any] = {"gen_length": GEN, "steps": GEN, "block_length": 4}
    kw |= {"mask_id": policy.spec.mask_id, "attention_mask": attention}
    assert torch.equal(
        generate(native, prompts, **kw).sequences, generate(policy.model, prompts, **kw).sequences
    )


def test_native_loading_names_what_does_not_fit(remote_models: Path, tmp_path: Path) -> None:
    # LLaDA's config with Dream's weights: every name differs
    config = json.loads((remote_models / "llada" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(remote_models / "dream" / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="do not fit NativeLLaDA"):
        NativeLLaDA.from_pretrained(tmp_path)
    # a configuration the native code does not implement is refused, naming it
    (tmp_path / "config.json").write_text(json.dumps({**config, "block_type": "sequential"}))
    with pytest.raises(ValueError, match="block_type != llama"):
        NativeLLaDA.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no config.json"):
        NativeDream.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("name", FIXTURES)
def test_cache_passes_reproduce_the_published_hidden_states(name: str, loaded: Loaded) -> None:
    policy = loaded(name)
    call = model_call(policy.model)
    ids, keep = _ids(policy)
    width = ids.shape[1] - GEN
    with torch.no_grad():
        exact = call.hidden_states(ids, keep)  # the published code, with the family's padding
        for mode in ("prefix", "dual"):
            cache = call.block_cache(ids, keep, mode)
            assert cache is not None, (name, mode)
            full = cache.refresh(ids)  # natively, on the loaded model's modules
            assert float((full - exact)[keep].abs().max()) < 1e-4
            block = cache.block(ids, width, width + 4)
            torch.testing.assert_close(block, full[:, width : width + 4], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cache_refreshed_every_step_decodes_exactly(
    name: str, temperature: float, loaded: Loaded
) -> None:
    policy = loaded(name)
    prompts, attention = left_pad(prompt_rows(policy), policy.spec.pad_id, extra=2)
    kw: dict[str, Any] = {"gen_length": GEN, "steps": GEN, "block_length": 4}
    kw |= {"mask_id": policy.spec.mask_id, "attention_mask": attention}
    kw["temperature"] = temperature

    def run(**options: Any) -> torch.Tensor:
        gen = torch.Generator().manual_seed(11)
        return generate(policy.model, prompts, generator=gen, **kw, **options).sequences

    exact = run()
    for mode in ("prefix", "dual"):
        assert torch.equal(run(kv_cache=mode, kv_cache_refresh=1), exact), mode
        once = run(kv_cache=mode)  # refreshed once per block: an approximation, still decodable
        assert not bool((once == policy.spec.mask_id).any())
        limit = policy.model.maskgrpo_binding.vocab_limit
        assert limit is None or int(once.max()) < limit


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_cache_runs_the_lora_adapter(name: str, remote_models: Path) -> None:
    policy = load_hf_policy(str(remote_models / name), trust_remote_code=True)
    model = apply_lora(policy.model, r=4, alpha=8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    ids, keep = _ids(policy)
    call = model_call(model)
    with torch.no_grad():
        adapted = call.hidden_states(ids, keep)
        cache = call.block_cache(ids, keep, "dual")
        assert cache is not None
        full = cache.refresh(ids)
        with model.disable_adapter():
            base = model_call(model).hidden_states(ids, keep)
    assert float((full - adapted)[keep].abs().max()) < 1e-4
    assert float((adapted - base)[keep].abs().max()) > 1e-3  # the adapter changes something
