"""Loading Hugging Face masked diffusion models (LLaDA, Dream, MMaDA) and bidirectional encoders.

A model is named by hub id or local folder. Models that ship their own modeling code (LLaDA,
Dream, MMaDA: an ``auto_map`` in ``config.json``) load only with ``trust_remote_code=True``, an
explicit opt-in; without it the loader stops with an error naming the flag. Native
``transformers`` models load through ``AutoModelForMaskedLM`` (ModernBERT, BERT) or
``AutoModelForCausalLM`` with bidirectional attention (e.g. ``LlamaConfig(is_causal=False)``).

The :class:`~maskgrpo.tokens.TokenSpec` is read from the tokenizer and config; the mask token is
also looked up by its string (LLaDA's ``<|mdm_mask|>``). Offline failures (``HF_HUB_OFFLINE=1``,
no cache) become one ``ValueError`` sentence instead of a traceback.

Left out: quantised loading and model-parallel placement (``device_map``); use accelerate's
FSDP/DeepSpeed configs for models that do not fit one device.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..tokens import TokenSpec

__all__ = [
    "MASK_TOKEN_STRINGS",
    "HFPolicy",
    "find_mask_id",
    "probe_head_split",
    "load_hf_policy",
    "read_config_dict",
    "token_spec_from",
]

log = logging.getLogger(__name__)

# Mask tokens by string, in the order tried: LLaDA/MMaDA, Dream, BERT-style, RoBERTa-style.
MASK_TOKEN_STRINGS = ("<|mdm_mask|>", "<|mask|>", "[MASK]", "<mask>")


@dataclass
class HFPolicy:
    """A loaded model, its tokenizer and the validated token spec."""

    model: nn.Module
    tokenizer: Any
    spec: TokenSpec


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


def _auto_class(config: dict[str, Any], remote: bool) -> Any:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if remote:
        auto_map = config["auto_map"]
        for cls in ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM"):
            if cls in auto_map:
                return getattr(transformers, cls)
        raise ValueError(f"auto_map {sorted(auto_map)} names no model class maskgrpo can load")
    if config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return transformers.AutoModelForMaskedLM
    if config.get("is_causal", True) is not False:
        log.warning(
            "model_type=%r loads as a causal LM; a masked diffusion policy needs bidirectional "
            "attention (set is_causal=False in its config)",
            config.get("model_type"),
        )
    return transformers.AutoModelForCausalLM


def find_mask_id(tokenizer: Any, config: Any, mask_token: str | None = None) -> int | None:
    """The mask id: ``mask_token`` if given, else the tokenizer/config attribute, else by string."""
    candidates: tuple[str, ...] = (mask_token,) if mask_token else ()
    if not mask_token:
        for src in (tokenizer, config):
            value = getattr(src, "mask_token_id", None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        candidates = MASK_TOKEN_STRINGS
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    for text in candidates:
        if text in vocab:
            return int(vocab[text])
    return None


def token_spec_from(
    tokenizer: Any, config: Any, *, vocab_size: int, mask_token: str | None = None
) -> TokenSpec:
    """Build the spec; raises ``ValueError`` naming what was tried when no mask token exists."""
    mask_id = find_mask_id(tokenizer, config, mask_token)
    if mask_id is None:
        tried = [mask_token] if mask_token else ["mask_token_id", *MASK_TOKEN_STRINGS]
        raise ValueError(
            f"no mask token found on the tokenizer or config (tried {tried}); this model is not "
            "a masked diffusion model, or name its mask token with mask_token='<...>'"
        )
    found = SimpleNamespace(mask_token_id=mask_id)
    return TokenSpec.from_objects(found, tokenizer, config, vocab_size=vocab_size)


def probe_head_split(model: nn.Module) -> None:
    """Turn off the trunk/head split of :mod:`maskgrpo.logprobs` when the base model lacks it."""
    from ..logprobs import split_head

    split = split_head(model)
    if split is None:
        return
    trunk, _ = split
    try:
        with torch.no_grad():
            trunk(torch.zeros((1, 1), dtype=torch.long, device=_device_of(model)))
    except (AttributeError, TypeError) as err:
        log.info("head split unavailable (%s); log-probs use the full logits", err)
        model.maskgrpo_head_split = False  # type: ignore[assignment]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_hf_policy(
    name: str,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    mask_token: str | None = None,
) -> HFPolicy:
    """Load model, tokenizer and token spec of ``name`` (hub id or local folder)."""
    from transformers import AutoTokenizer

    config_dict = read_config_dict(name)
    remote = _check_remote_code(name, config_dict, trust_remote_code)
    auto = _auto_class(config_dict, remote)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = auto.from_pretrained(name, trust_remote_code=trust_remote_code, dtype=dtype)
    except OSError as err:
        raise _offline_error(name, err) from None
    model = model.to(device or torch.device("cpu")).eval()
    vocab = model.get_input_embeddings().weight.shape[0]
    spec = token_spec_from(tokenizer, model.config, vocab_size=vocab, mask_token=mask_token)
    probe_head_split(model)
    log.info("loaded %s (%s, mask id %d)", name, type(model).__name__, spec.mask_id)
    return HFPolicy(model, tokenizer, spec)
