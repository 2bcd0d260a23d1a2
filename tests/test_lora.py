"""LoRA through peft: one MaskGRPO step on a bidirectional Llama and a LLaDA-shaped model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hf_tiny import make_tokenizer, params, tiny_llada, tiny_llama

from maskgrpo.config import TrainConfig
from maskgrpo.lora import (
    LORA_PRESETS,
    AdapterDisabled,
    apply_lora,
    autocast_context,
    enable_gradient_checkpointing,
    is_lora,
    reference_logprobs,
    resolve_targets,
)
from maskgrpo.modalities.base import SamplerSettings
from maskgrpo.modalities.hf_text import HFTextModality
from maskgrpo.models.hf import probe_head_split, token_spec_from
from maskgrpo.rewards.combine import RewardSet
from maskgrpo.trainer.grpo import build_parts, inner_update, make_rollout


def char_sum(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    return [float(sum(map(ord, c)) % 7) for c in completions]


def _setup(kind: str) -> tuple[torch.nn.Module, HFTextModality]:
    tok = make_tokenizer()
    base = tiny_llama(len(tok), seed=3) if kind == "llama" else tiny_llada(len(tok), seed=3)
    probe_head_split(base)
    spec = token_spec_from(tok, base.config, vocab_size=len(tok))
    model = apply_lora(
        base,
        r=4,
        alpha=8,
        targets=kind if kind == "llama" else "llada",
        generator=torch.Generator().manual_seed(7),
    )
    return model, HFTextModality(tok, spec, prompt_width=10)


def _cfg(**kw: Any) -> TrainConfig:
    cfg = TrainConfig(
        max_steps=1, per_device_train_batch_size=8, num_generations=4, num_iterations=2,
        beta=0.05, learning_rate=5e-2, **kw,
    )  # fmt: skip
    cfg.validate()
    return cfg


def test_presets_and_targets() -> None:
    assert resolve_targets("llada") == list(LORA_PRESETS["llada"])
    assert resolve_targets("q_proj, v_proj") == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="lora_targets"):
        resolve_targets(" , ")
    with pytest.raises(ValueError, match="none of lora_targets"):
        apply_lora(tiny_llada(16), targets="o_proj")


def test_llada_preset_wraps_blocks_not_the_head() -> None:
    state = torch.random.get_rng_state()
    model, _ = _setup("llada")
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    names = {n for n, _ in model.named_modules()}
    for target in LORA_PRESETS["llada"]:
        assert any(n.endswith(f"blocks.0.{target}.lora_A") for n in names), target
    assert not any("transformer.ff_out.lora" in n for n in names)  # LM head shares the name
    assert is_lora(model) and not is_lora(tiny_llada(16))


@pytest.mark.parametrize("kind", ["llama", "llada"])
def test_lora_step_kl_zero_first_adapters_change_base_fixed(kind: str) -> None:
    model, modality = _setup(kind)
    cfg = _cfg()
    settings = SamplerSettings(8, 8, 4, 1.0, "low_confidence")
    rows = [{"prompt": "1+1=?"}, {"prompt": "2+3=?"}]
    parts = build_parts(cfg, model)
    assert isinstance(parts.ref_model, AdapterDisabled)  # no copy of the weights
    before_lora, before_base = params(model, True), params(model, False)
    rollout = make_rollout(
        cfg,
        0,
        model=model,
        ref_model=parts.ref_model,
        modality=modality,
        rows=rows,
        rewards=RewardSet([char_sum]),
        settings=settings,
    )
    assert float(rollout.advantages.abs().sum()) > 0
    for old, ref in zip(rollout.old_logp, rollout.ref_logp, strict=True):
        assert ref is not None and torch.equal(old, ref)  # B = 0: adapter off == adapter on
    first = inner_update(
        cfg, 0, model, rollout, optimizer=parts.optimizer, scheduler=parts.scheduler
    )
    assert first.kl == 0.0 and first.skipped_updates == 0
    after_lora, after_base = params(model, True), params(model, False)
    assert any(not torch.equal(before_lora[n], after_lora[n]) for n in before_lora)
    assert all(torch.equal(before_base[n], after_base[n]) for n in before_base)
    second = inner_update(
        cfg, 1, model, rollout, optimizer=parts.optimizer, scheduler=parts.scheduler
    )
    assert second.kl > 0.0  # the adapter moved the policy away from the reference


def test_reference_logprobs_context_is_the_base_model() -> None:
    model, _ = _setup("llama")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with reference_logprobs(model) as ref:
            base = ref(input_ids=ids).logits
        wrapped = AdapterDisabled(model)(ids).logits
        plain = model.get_base_model()
        with model.disable_adapter():
            expected = plain(input_ids=ids).logits
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(base, expected, rtol=0, atol=0)
    torch.testing.assert_close(wrapped, expected, rtol=0, atol=0)
    torch.testing.assert_close(model(input_ids=ids).logits, adapted)  # adapter back on


def test_gradient_checkpointing_same_gradients_in_eval_mode() -> None:
    grads = []
    for checkpointed in (False, True):
        model, _ = _setup("llada")
        if checkpointed:
            assert enable_gradient_checkpointing(model) == 2
        model.eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(0.1)
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        model(input_ids=ids).logits.float().log_softmax(-1)[..., 3].sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n])


def test_autocast_float32_on_cpu() -> None:
    with autocast_context(torch.device("cpu"), "auto"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        autocast_context(torch.device("cpu"), "fp8")
