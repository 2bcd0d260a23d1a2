"""Each published family loads on the installed transformers, with the right family conventions."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from families_support import FIXTURES
from safetensors.torch import load_file

from maskgrpo.lora import LORA_PRESETS, resolve_targets
from maskgrpo.models.calls import model_call
from maskgrpo.models.hf import HFPolicy, load_hf_policy, tokenizer_size

FAMILY = {
    "llada": "llada",
    "llada_legacy": "llada",
    "dream": "dream",
    "dream_fasttok": "dream",
    "mmada": "mmada",
}
MASK_TOKEN = {"llada": "<|mdm_mask|>", "mmada": "<|mdm_mask|>", "dream": "<|mask|>"}

Loaded = Callable[[str], HFPolicy]


def test_installed_transformers_is_in_the_supported_range() -> None:
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    assert (4, 46) <= (major, minor) < (6, 0), transformers.__version__
    expected = os.environ.get("MASKGRPO_EXPECT_TRANSFORMERS")  # set by the low-end run
    assert expected in (None, transformers.__version__), transformers.__version__


@pytest.mark.parametrize("name", FIXTURES)
def test_loads_with_its_family(name: str, loaded: Loaded, remote_models: Path) -> None:
    policy = loaded(name)
    binding = policy.model.maskgrpo_binding
    family = FAMILY[name]
    assert binding.family.name == family and policy.family is binding.family
    # the mask token is the family's, found on the tokenizer or the config
    assert policy.spec.mask_id == policy.tokenizer.convert_tokens_to_ids(MASK_TOKEN[family])
    # ids beyond the tokenizer (embedding padding, MMaDA's image codes) are never sampled
    assert binding.vocab_limit == tokenizer_size(policy.tokenizer) < policy.spec.vocab_size
    # the legacy LLaDA code ignores attention masks: the load-time probe found it
    assert binding.honours_padding is (name != "llada_legacy")
    assert binding.lean  # hidden states reachable: the head runs at chosen positions only
    assert policy.model.config.use_cache is False  # cache flag off
    # the weights are the file's (loading did not re-initialise anything)
    saved = load_file(str(remote_models / name / "model.safetensors"))
    state = policy.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert resolve_targets("auto", policy.model) == list(LORA_PRESETS[family])


@pytest.mark.parametrize("name", ["dream", "dream_fasttok"])
def test_dream_rotary_frequencies_are_the_standard_ones(name: str, loaded: Loaded) -> None:
    """transformers 5 leaves non-persistent buffers uninitialised; the loader recomputes them."""
    model = loaded(name).model
    config = model.config
    dim = config.hidden_size // config.num_attention_heads
    expected = 1.0 / config.rope_theta ** (torch.arange(0, dim, 2).float() / dim)
    rotaries = [m for m in model.modules() if hasattr(m, "inv_freq")]
    assert rotaries
    for module in rotaries:
        torch.testing.assert_close(module.inv_freq, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_hidden_states_and_head_reproduce_the_forward(name: str, loaded: Loaded) -> None:
    model = loaded(name).model
    call = model_call(model)
    ids = torch.randint(3, 250, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        hidden = call.hidden_states(ids)
        picked = call.head(hidden[:, 4:7])  # the head applied at three positions only
    if call.family.shift:  # Dream: the output at i - 1 predicts token i
        full = torch.cat([full[:, :1], full[:, :-1]], dim=1)
    width = getattr(model.config, "d_model", None) or model.config.hidden_size
    assert hidden.shape == (2, 11, width)
    torch.testing.assert_close(call.head(hidden), full, rtol=0, atol=1e-5)
    torch.testing.assert_close(picked, full[:, 4:7], rtol=0, atol=1e-5)


def test_family_override_and_a_bad_family(remote_models: Path) -> None:
    # Forced to the generic family, LLaDA still loads and computes the same logits (LLaDA's
    # base model returns no hidden states, so the probe falls back to the full forward).
    policy = load_hf_policy(str(remote_models / "llada"), trust_remote_code=True, family="generic")
    binding = policy.model.maskgrpo_binding
    assert binding.family.name == "generic" and not binding.lean
    ids = torch.randint(3, 250, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model_call(policy.model).logits(ids), policy.model(ids).logits)
    with pytest.raises(ValueError, match=r"family='qwen' is unknown; choose one of"):
        load_hf_policy(str(remote_models / "llada"), trust_remote_code=True, family="qwen")


def test_remote_code_needs_trust(remote_models: Path) -> None:
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_hf_policy(str(remote_models / "dream"))


def test_a_model_loaded_by_the_user_is_bound_on_first_use(remote_models: Path) -> None:
    """A remote-code model loaded without the loader (here through the compatibility layer
    alone) gets its family when first called: Dream's shift applies."""
    from maskgrpo.models.compat import load_remote_model

    folder = str(remote_models / "dream")
    model = load_remote_model(
        folder, "modeling_dream.DreamModel", "AutoModel", dtype=torch.float32
    ).eval()
    assert not hasattr(model, "maskgrpo_binding")
    ids = torch.randint(3, 250, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model_call(model).logits(ids)
        raw = model(ids).logits
    assert model.maskgrpo_binding.family.name == "dream"
    torch.testing.assert_close(logits[:, 1:], raw[:, :-1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_the_trainer_binds_a_module_the_user_loaded(
    name: str, remote_models: Path, tmp_path: Path
) -> None:
    """``MaskGRPOTrainer(model=<loaded module>, processing_class=tokenizer)`` binds the module as
    the loader does: its family from the config, the tokenizer's size, the pad id."""
    from maskgrpo import MaskGRPOConfig, MaskGRPOTrainer

    policy = load_hf_policy(str(remote_models / name), trust_remote_code=True)  # changed below
    del policy.model.maskgrpo_binding  # as a model loaded with AutoModel arrives
    args = MaskGRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=4, device="cpu",
    )  # fmt: skip
    trainer = MaskGRPOTrainer(
        policy.model, lambda prompts, completions, **_: [0.0] * len(completions), args=args,
        train_dataset=[{"prompt": "1+1=?"}], processing_class=policy.tokenizer,
    )  # fmt: skip
    binding = trainer.model.maskgrpo_binding
    assert binding.family.name == FAMILY[name]
    assert binding.vocab_limit == tokenizer_size(policy.tokenizer) < policy.spec.vocab_size
    assert binding.pad_id == policy.spec.pad_id is not None
    assert trainer.policy.spec.mask_id == policy.spec.mask_id
