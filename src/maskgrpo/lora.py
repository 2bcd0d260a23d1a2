"""LoRA through peft, the adapter-disabled reference policy, checkpointing and precision.

MaskGRPO (arXiv 2510.02880) trains LLaDA-8B / MMaDA-8B with LoRA r=128, alpha=64. With LoRA the
reference policy of the KL term is the same network with the adapter switched off, so no second
copy of the weights is kept (:class:`AdapterDisabled`, :func:`reference_policy`).

Target presets name the linear layers of one architecture; the output head is always excluded
(LLaDA calls both its MLP down-projection and its LM head ``ff_out``). ``auto`` takes the preset
of the model's family (:mod:`maskgrpo.models.registry`): LLaDA's names for LLaDA, MMaDA's for
MMaDA, the Qwen2 names for Dream, the Llama names for other ``transformers`` models.

Gradient checkpointing here wraps each transformer block in ``torch.utils.checkpoint`` and works
in eval mode: the trainer keeps the policy in eval mode (dropout off, so the ratio is exactly 1
at the first update), where the ``transformers`` switch would not act.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "LORA_PRESETS",
    "AdapterDisabled",
    "apply_lora",
    "autocast_context",
    "enable_gradient_checkpointing",
    "is_lora",
    "reference_logprobs",
    "reference_policy",
    "resolve_targets",
    "validate_targets",
]

log = logging.getLogger(__name__)

_LLADA_BLOCK = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
_LLAMA_BLOCK = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

LORA_PRESETS: dict[str, tuple[str, ...]] = {
    # LLaDA's blocks (modeling_llada.py, LLaDALlamaBlock): attention q/k/v, attn_out, and the
    # SwiGLU MLP ff_proj (gate), up_proj, ff_out (down).
    "llada": _LLADA_BLOCK,
    # MMaDA's text backbone is LLaDA's (its modeling_llada.py): the same module names.
    "mmada": _LLADA_BLOCK,
    # Dream (modeling_dream.py): Qwen2 attention q/k/v/o_proj and MLP gate/up/down_proj.
    "dream": _LLAMA_BLOCK,
    # Llama-style names (Llama, Qwen2, Mistral, bidirectional Llama).
    "llama": _LLAMA_BLOCK,
}


def validate_targets(targets: str) -> None:
    """Check ``lora_targets`` before any model exists (``auto`` is resolved at load time)."""
    if targets != "auto":
        resolve_targets(targets)


def resolve_targets(targets: str | Sequence[str], model: nn.Module | None = None) -> list[str]:
    """A preset (``llada``, ``mmada``, ``dream``, ``llama``), ``auto`` (the preset of
    ``model``'s family) or comma-separated module names -> module names."""
    if isinstance(targets, str):
        if targets == "auto":
            return list(LORA_PRESETS[_family_preset(model)])
        if targets in LORA_PRESETS:
            return list(LORA_PRESETS[targets])
        names = [t.strip() for t in targets.split(",") if t.strip()]
    else:
        names = [t for t in targets if t]
    if not names:
        raise ValueError(
            f"lora_targets={targets!r} names no module; use auto, a preset "
            f"{sorted(LORA_PRESETS)} or comma-separated module names such as 'q_proj,v_proj'"
        )
    return names


def _family_preset(model: nn.Module | None) -> str:
    from .models.calls import model_call

    family = model_call(model).family if model is not None else None
    if family is None or family.lora_preset is None:
        raise ValueError(
            f"lora_targets='auto' needs a model of a known family (got {family}); name a preset "
            f"{sorted(LORA_PRESETS)} or comma-separated linear-layer names"
        )
    return family.lora_preset


def _target_paths(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Full paths of the linear layers called ``names``, the output head left out.

    Full paths (rather than peft's ``exclude_modules``) keep the head out on every supported
    peft release and record in the adapter config exactly which layers were adapted.
    """
    head = set(_head_names(model))
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear) and path.rsplit(".", 1)[-1] in names and path not in head
    ]


def _head_names(model: nn.Module) -> list[str]:
    get_head: Any = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return [name for name, mod in model.named_modules() if head is not None and mod is head]


def apply_lora(
    model: nn.Module,
    *,
    r: int = 128,
    alpha: int = 64,
    targets: str | Sequence[str] = "auto",
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Wrap ``model`` in a peft LoRA adapter; base weights are frozen, adapters trainable.

    ``A`` is drawn from ``generator`` (uniform in ``+-1/sqrt(fan_in)``, peft's default range),
    ``B`` is zero, so the adapted model starts equal to the base. The global RNG is left as it
    was (peft's own initialisation draws from it inside ``fork_rng``).
    """
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0:
        raise ValueError(f"lora_r={r} must be >= 1 and lora_alpha={alpha} > 0")
    names = resolve_targets(targets, model)
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [n for n in names if n not in linear]
    if len(missing) == len(names):
        raise ValueError(
            f"none of lora_targets={names} is a linear layer of {type(model).__name__} "
            f"(its linear layers: {sorted(linear)}); pick a matching preset or names"
        )
    if missing:
        log.warning("LoRA targets %s match no linear layer; ignored", missing)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=_target_paths(model, names),
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        peft_model = get_peft_model(model, config)
    if generator is not None:
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_A" in name:
                    bound = 1.0 / math.sqrt(p.shape[1])
                    p.uniform_(-bound, bound, generator=generator)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA r=%d alpha=%s: %d of %d parameters trainable", r, alpha, trainable, total)
    return peft_model


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP/FSDP wrapper (``.module``), else the model itself."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def is_lora(model: nn.Module) -> bool:
    return callable(getattr(_unwrap(model), "disable_adapter", None))


class AdapterDisabled(nn.Module):
    """The reference policy of a LoRA model: the same weights with the adapter switched off.

    :func:`maskgrpo.models.calls.model_call` recognises it (``maskgrpo_reference_of``) and
    runs the policy's trunk and head with the adapter disabled, so the reference pass keeps the
    family's conventions and the memory savings of :func:`maskgrpo.logprobs.token_logprobs`.
    """

    maskgrpo_reference_of: Any

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        peft_model = _unwrap(model)
        object.__setattr__(self, "maskgrpo_reference_of", peft_model)  # not registered: shared

    def forward(self, input_ids: Tensor, **kwargs: Any) -> Any:
        peft_model = self.maskgrpo_reference_of
        with peft_model.disable_adapter():
            return peft_model(input_ids=input_ids, **kwargs)


def reference_policy(model: nn.Module) -> nn.Module | None:
    """The adapter-disabled view of a LoRA model, or None when ``model`` has no adapter."""
    return AdapterDisabled(model).eval() if is_lora(model) else None


@contextlib.contextmanager
def reference_logprobs(model: nn.Module) -> Iterator[nn.Module]:
    """``with reference_logprobs(policy) as ref:`` -- ``ref`` scores under the reference policy.

    For a LoRA model the adapter is off inside the block; otherwise ``ref`` is ``model`` itself
    (the caller keeps a frozen copy when it needs one).
    """
    if not is_lora(model):
        yield model
        return
    inner: Any = _unwrap(model)
    with inner.disable_adapter():
        yield inner


def _blocks(model: nn.Module) -> nn.ModuleList | None:
    """The largest ``nn.ModuleList`` of the model: its transformer blocks."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    return max(lists, key=len) if lists else None


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute each transformer block in backward (also in eval mode); returns blocks wrapped."""
    blocks = _blocks(model)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no list of blocks to checkpoint")
    for block in blocks:
        if getattr(block, "maskgrpo_checkpointed", False):
            continue
        original = block.forward

        def forward(*args: Any, _fn: Any = original, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(_fn, *args, use_reentrant=False, **kwargs)
            return _fn(*args, **kwargs)

        block.forward = forward  # type: ignore[method-assign]
        block.maskgrpo_checkpointed = True  # type: ignore[assignment]
    return len(blocks)


def autocast_context(
    device: torch.device, mixed_precision: str
) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on GPU (``mixed_precision`` ``auto`` or ``bf16``); float32 on CPU.

    Log-softmax stays float32 either way (:mod:`maskgrpo.logprobs` upcasts the logits).
    """
    if mixed_precision not in ("auto", "bf16", "no"):
        raise ValueError(f"mixed_precision={mixed_precision!r}; choose auto, bf16 or no")
    if device.type == "cuda" and mixed_precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if mixed_precision == "bf16":
        log.warning("mixed_precision=bf16 is applied on GPU only; %s runs in float32", device)
    return contextlib.nullcontext()
