"""Hugging Face policies in the commands: LoRA, LoRA folders, checkpoint state, synthetic tasks.

:func:`prepare_model` applies LoRA (MaskGRPO, arXiv 2510.02880: r=128, alpha=64; the target
layers default to the model family's preset) and gradient checkpointing to a loaded model; the
trainer and ``maskgrpo sft`` load through :mod:`maskgrpo.trainer.model_setup` and
:mod:`maskgrpo.trainer.sft_data`, which call it. :func:`load_for_task` turns ``--model <hub id
or folder>`` into the policy, modality and answer length of a synthetic task for ``generate``
and ``eval``: chat-templated prompts of one fixed width (the longest prompt of the task, so
every row fits; padding is hidden from the model exactly, so rollouts do not depend on batch
composition).

``--model`` may be a LoRA output folder. Generation, evaluation and full fine-tuning use its
base with the adapter merged in; LoRA training (``lora_r > 0``) continues that adapter (its own
rank, alpha and layers), the reference policy staying the base model, so ``train --resume
<LoRA folder>`` (:func:`lora_resume`) picks a LoRA run up from its exported adapter. (To train a
new adapter on top of a LoRA result, ``maskgrpo merge`` it first.)

A synthetic task works with any tokenizer that encodes its characters and decodes them back
unchanged; the check runs before generation. Checkpoints hold the trainable tensors only with
LoRA (the base weights are the hub's), the whole state dict otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from ..config import MaskGRPOConfig, ModelConfig, SFTConfig
from ..lora import apply_lora, enable_gradient_checkpointing, is_lora
from ..modalities.hf_text import HFTextModality
from ..models.hf import TORCH_DTYPES, load_hf_policy
from ..models.lora_folder import base_of, read_adapter_config
from ..policy import Policy, is_tiny_model
from ..rng import derive_generator
from ..tasks import SyntheticTask

__all__ = [
    "TORCH_DTYPES",
    "check_encodable",
    "load_for_task",
    "lora_resume",
    "prepare_model",
    "save_state",
]

log = logging.getLogger(__name__)

C = TypeVar("C", bound=MaskGRPOConfig)

_LENGTH_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def check_encodable(tokenizer: Any, task: SyntheticTask, model: str) -> None:
    """Raise when the tokenizer cannot round-trip the task's characters or sample answers."""
    texts = list(task.alphabet) + [r["answer"] for r in task.train[:32]]
    bad = sorted(
        {t for t in texts if tokenizer.decode(_ids(tokenizer, t), skip_special_tokens=True) != t}
    )
    if bad:
        raise ValueError(
            f"the tokenizer of model={model!r} does not encode and decode {bad[:8]} of task "
            f"{task.name} unchanged; pick a model whose vocabulary covers {task.alphabet!r}"
        )


def _context_limit(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in _LENGTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def lora_resume(cfg: C, model: str | nn.Module) -> tuple[str | nn.Module, C]:
    """``resume=<LoRA output folder>``: a new run continuing that adapter (the folder becomes
    the model); returns ``(model, cfg)``, both unchanged when ``cfg.resume`` is no LoRA folder.

    The folder holds no optimizer state or position, so the run starts at step 0 with a fresh
    optimizer; the adapter, its rank and alpha, and the base model come from the folder.
    """
    adapter = read_adapter_config(cfg.resume) if cfg.resume else None
    if adapter is None:
        return model, cfg
    if not isinstance(model, str):
        raise ValueError(
            f"resume={cfg.resume!r} is a LoRA output folder, which loads from its own files; pass "
            f"model={cfg.resume!r} (a name, not a loaded {type(model).__name__}) and resume=''"
        )
    base = base_of(cfg.resume, adapter)
    named = {cfg.resume, base, str(Path(base).resolve()), str(Path(cfg.resume).resolve())}
    if not is_tiny_model(model) and model not in named:
        log.warning(
            "model=%s is not the base of LoRA folder %s (%s); its base is used",
            model,
            cfg.resume,
            base,
        )
    log.info("continuing the LoRA adapter of %s as a new run (step 0, fresh optimizer)", cfg.resume)
    changes: dict[str, Any] = {
        "resume": "",
        "lora_r": int(adapter.get("r") or cfg.lora_r or 8),
        "lora_alpha": int(adapter.get("lora_alpha") or cfg.lora_alpha),
    }
    if hasattr(cfg, "model"):  # the command line's config names the model too
        changes["model"] = cfg.resume
    resumed = dataclasses.replace(cfg, **changes)
    resumed.validate()
    return cfg.resume, resumed


def prepare_model(cfg: MaskGRPOConfig | SFTConfig, model: nn.Module) -> nn.Module:
    """LoRA when ``lora_r > 0`` (adapter A from the run's seed; an adapter loaded from a LoRA
    folder, or a peft model passed to the trainer, is trained as it is), then gradient
    checkpointing."""
    if is_lora(model):
        config = getattr(model, "peft_config", {}).get("default")
        r, alpha = getattr(config, "r", None), getattr(config, "lora_alpha", None)
        if cfg.lora_r > 0 and (r, alpha) != (cfg.lora_r, cfg.lora_alpha):
            log.warning(
                "continuing a LoRA adapter with r=%s alpha=%s (lora_r=%d lora_alpha=%d ignored)",
                r,
                alpha,
                cfg.lora_r,
                cfg.lora_alpha,
            )
    elif cfg.lora_r > 0:
        model = apply_lora(
            model,
            r=cfg.lora_r,
            alpha=cfg.lora_alpha,
            targets=cfg.lora_targets,
            generator=derive_generator(cfg.seed, "lora"),
        )
    elif cfg.dtype != "float32":
        log.warning(
            "full fine-tuning with dtype=%s keeps AdamW state in %s; float32 weights with "
            "mixed_precision=bf16 are more accurate",
            cfg.dtype,
            cfg.dtype,
        )
    if cfg.gradient_checkpointing:
        blocks = enable_gradient_checkpointing(model)
        log.info("gradient checkpointing on %d blocks", blocks)
    return model


def load_for_task(
    cfg: ModelConfig, task: SyntheticTask, device: torch.device, gen_length: int
) -> tuple[Policy, HFTextModality, int]:
    """Policy, modality and answer length in tokens of ``task`` for Hugging Face ``cfg.model``.

    ``gen_length`` 0 means the longest answer in tokens plus one (end of sequence).
    """
    training_lora = isinstance(cfg, MaskGRPOConfig) and cfg.lora_r > 0
    hf = load_hf_policy(
        cfg.model,
        trust_remote_code=cfg.trust_remote_code,
        dtype=TORCH_DTYPES[cfg.dtype],
        device=device,
        mask_token=cfg.mask_token or None,
        family=cfg.family,
        merge_lora=not training_lora,  # a LoRA run continues a loaded adapter
    )
    tokenizer = hf.tokenizer
    check_encodable(tokenizer, task, cfg.model)
    rows = task.train + task.heldout
    probe = HFTextModality(tokenizer, hf.spec, 1)
    width = max(len(probe.prompt_ids(r["prompt"])) for r in rows)
    answer_tokens = max(len(_ids(tokenizer, r["answer"])) for r in rows)
    gen_length = gen_length or answer_tokens + 1
    if gen_length <= answer_tokens:
        raise ValueError(
            f"max_completion_length={gen_length} cannot hold the {task.name} answers "
            f"({answer_tokens} tokens of this tokenizer) plus EOS; use max_completion_length "
            f">= {answer_tokens + 1} or 0"
        )
    limit = _context_limit(hf.model)
    if limit is not None and width + gen_length > limit:
        raise ValueError(
            f"prompts ({width} tokens with the chat template) + max_completion_length "
            f"({gen_length}) exceed the model's {limit} positions; lower max_completion_length"
        )
    model = hf.model  # its family turned the KV cache off (checkpointed blocks must not use one)
    if isinstance(cfg, MaskGRPOConfig):
        model = prepare_model(cfg, model)
    log.info("task %s: prompt width %d, answers up to %d tokens", task.name, width, answer_tokens)
    return (
        Policy(model, tokenizer, hf.spec),
        HFTextModality(tokenizer, hf.spec, width),
        answer_tokens,
    )


def save_state(model: nn.Module, folder: Path) -> None:
    """``model.safetensors``: the trainable tensors with LoRA, else the whole state dict.

    Tensors are copied to the CPU first, so tied weights are saved as separate tensors.
    """
    if is_lora(model):
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {n: t for n, t in model.state_dict().items() if n in names}
    else:
        state = model.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.detach().to("cpu", copy=True).contiguous() for n, t in state.items()}
    save_file(tensors, str(folder / "model.safetensors"))
