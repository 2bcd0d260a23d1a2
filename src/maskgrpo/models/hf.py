"""Loading Hugging Face masked diffusion models (LLaDA, Dream, MMaDA) and bidirectional encoders.

A model is named by hub id or local folder. Models that ship their own modeling code (LLaDA,
Dream, MMaDA: an ``auto_map`` in ``config.json``) load only with ``trust_remote_code=True``, an
explicit opt-in; without it the loader stops with an error naming the flag. Their code is
imported by ``transformers`` and patched in memory where the installed release needs it
(:mod:`maskgrpo.models.compat`). Native ``transformers`` models load through
``AutoModelForMaskedLM`` (ModernBERT, BERT) or ``AutoModelForCausalLM`` with bidirectional
attention (e.g. ``LlamaConfig(is_causal=False)``).

Every loaded model gets its family (:mod:`maskgrpo.models.registry`, ``family="auto"``: from
``config.json``) and a binding measured at load time (:func:`maskgrpo.models.calls.bind_family`):
pad id, tokenizer size (ids beyond it are never sampled), whether its code honours padding,
whether its hidden states are reachable. A LoRA output folder (``adapter_config.json``) loads as
its base model with the adapter merged in (:mod:`maskgrpo.models.lora_folder`).

The :class:`~maskgrpo.tokens.TokenSpec` is read from the tokenizer and config; the mask token is
also looked up by its string (the family's first: LLaDA's ``<|mdm_mask|>``, Dream's ``<|mask|>``).
Offline failures (``HF_HUB_OFFLINE=1``, no cache) become one ``ValueError`` sentence instead of
a traceback.

Left out: quantised loading and model-parallel placement (``device_map``); use accelerate's
FSDP/DeepSpeed configs for models that do not fit one device.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..tokens import TokenSpec
from .calls import bind_family
from .compat import dtype_kwargs, load_remote_model
from .family import Family, tokenizer_size
from .registry import detect_family

__all__ = [
    "MASK_TOKEN_STRINGS",
    "TORCH_DTYPES",
    "HFPolicy",
    "find_mask_id",
    "probe_head_split",
    "load_hf_policy",
    "read_config_dict",
    "remote_class",
    "token_spec_from",
    "tokenizer_size",
]

log = logging.getLogger(__name__)

# The ``dtype`` names the configurations accept (``maskgrpo.config.DTYPES``).
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Mask tokens by string, in the order tried: LLaDA/MMaDA, Dream, BERT-style, RoBERTa-style.
MASK_TOKEN_STRINGS = ("<|mdm_mask|>", "<|mask|>", "[MASK]", "<mask>")


@dataclass
class HFPolicy:
    """A loaded model, its tokenizer and the validated token spec."""

    model: nn.Module
    tokenizer: Any
    spec: TokenSpec
    family: Family | None = None


def _offline_error(name: str, err: BaseException) -> ValueError:
    return ValueError(
        f"model={name!r} is not a local folder and could not be fetched from the hub "
        f"({type(err).__name__}); with HF_HUB_OFFLINE=1 or no network, download it first "
        "(huggingface-cli download) or pass the path of a local copy"
    )


def read_config_dict(name: str) -> dict[str, Any]:
    """``config.json`` of ``name`` as a dict, without running any remote code."""
    path = Path(name)
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise ValueError(f"model={name!r} is a folder without config.json; point to a model")
        data: dict[str, Any] = json.loads(file.read_text())
        return data
    from transformers import PretrainedConfig

    try:
        data, _ = PretrainedConfig.get_config_dict(name)
    except OSError as err:  # LocalEntryNotFoundError and connection errors are OSErrors
        raise _offline_error(name, err) from None
    return data


def _check_remote_code(name: str, config: dict[str, Any], trust_remote_code: bool) -> bool:
    """True when the model ships its own code; raises when that code is not trusted."""
    needs = bool(config.get("auto_map"))
    if needs and not trust_remote_code:
        raise ValueError(
            f"model={name!r} ships its own modeling code (auto_map in config.json, as LLaDA, "
            "Dream and MMaDA do); review it and pass trust_remote_code=True "
            "(--trust-remote-code true) to load it"
        )
    return needs


_REMOTE_CLASSES = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM")


def remote_class(config: dict[str, Any]) -> tuple[str, str]:
    """``(class reference, auto class name)`` of the model class in ``auto_map``."""
    auto_map = config["auto_map"]
    for cls in _REMOTE_CLASSES:
        ref = auto_map.get(cls)
        if isinstance(ref, str):
            return ref, cls
    raise ValueError(f"auto_map {sorted(auto_map)} names no model class maskgrpo can load")


def _native_class(config: dict[str, Any]) -> Any:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return transformers.AutoModelForMaskedLM
    if config.get("is_causal", True) is not False:
        log.warning(
            "model_type=%r loads as a causal LM; a masked diffusion policy needs bidirectional "
            "attention (set is_causal=False in its config)",
            config.get("model_type"),
        )
    return transformers.AutoModelForCausalLM


def _load_model(name: str, config: dict[str, Any], remote: bool, dtype: torch.dtype) -> nn.Module:
    """The model of ``name``; what remote code prints while loading goes to the debug log."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # MMaDA's __init__ prints its config
        if remote:
            ref, auto = remote_class(config)
            model = load_remote_model(name, ref, auto, dtype=dtype)
        else:
            model = _native_class(config).from_pretrained(name, **dtype_kwargs(dtype))
    if printed.getvalue():
        log.debug("output of %s while loading: %s", name, printed.getvalue().strip())
    return model


def find_mask_id(
    tokenizer: Any, config: Any, mask_token: str | None = None, preferred: tuple[str, ...] = ()
) -> int | None:
    """The mask id: ``mask_token`` if given, else the tokenizer/config attribute, else by string
    (``preferred`` strings first: the family's)."""
    candidates: tuple[str, ...] = (mask_token,) if mask_token else ()
    if not mask_token:
        for src in (tokenizer, config):
            value = getattr(src, "mask_token_id", None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        candidates = (*preferred, *MASK_TOKEN_STRINGS)
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    for text in candidates:
        if text in vocab:
            return int(vocab[text])
    return None


def token_spec_from(
    tokenizer: Any,
    config: Any,
    *,
    vocab_size: int,
    mask_token: str | None = None,
    preferred: tuple[str, ...] = (),
) -> TokenSpec:
    """Build the spec; raises ``ValueError`` naming what was tried when no mask token exists."""
    mask_id = find_mask_id(tokenizer, config, mask_token, preferred)
    if mask_id is None:
        tried = [mask_token] if mask_token else ["mask_token_id", *MASK_TOKEN_STRINGS]
        raise ValueError(
            f"no mask token found on the tokenizer or config (tried {tried}); this model is not "
            "a masked diffusion model, or name its mask token with mask_token='<...>'"
        )
    found = SimpleNamespace(mask_token_id=mask_id)
    return TokenSpec.from_objects(found, tokenizer, config, vocab_size=vocab_size)


def probe_head_split(model: nn.Module) -> None:
    """Attach the family binding to a model built in code (the loader does it for you).

    Kept for code written against earlier releases: it probes whether the trunk/head split
    reproduces the forward and turns it off otherwise.
    """
    bind_family(model)


def load_hf_policy(
    name: str,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    mask_token: str | None = None,
    family: str = "auto",
    merge_lora: bool = True,
) -> HFPolicy:
    """Load model, tokenizer and token spec of ``name`` (hub id, local folder, LoRA folder).

    A LoRA output folder loads as its base with the adapter merged in, or with
    ``merge_lora=False`` as a peft model whose adapter is trainable.
    """
    from transformers import AutoTokenizer

    from .lora_folder import load_lora_folder, read_adapter_config

    if read_adapter_config(name) is not None:
        return load_lora_folder(
            name,
            load_base=lambda base: load_hf_policy(
                base,
                trust_remote_code=trust_remote_code,
                dtype=dtype,
                device=device,
                mask_token=mask_token,
                family=family,
            ),
            merge=merge_lora,
        )
    config_dict = read_config_dict(name)
    remote = _check_remote_code(name, config_dict, trust_remote_code)
    fam = detect_family(config_dict, family)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        loaded: Any = _load_model(name, config_dict, remote, dtype)
    except OSError as err:
        raise _offline_error(name, err) from None
    if Path(name).is_dir():  # adapters trained on it record where the base lives
        loaded.name_or_path = str(Path(name).resolve())
    model: Any = loaded.to(device or torch.device("cpu")).eval()
    vocab = model.get_input_embeddings().weight.shape[0]
    spec = token_spec_from(
        tokenizer, model.config, vocab_size=vocab, mask_token=mask_token, preferred=fam.mask_tokens
    )
    bind_family(model, family=fam, pad_id=spec.pad_id, tokenizer=tokenizer)
    log.info("loaded %s (%s, mask id %d)", name, type(model).__name__, spec.mask_id)
    return HFPolicy(model, tokenizer, spec, fam)
