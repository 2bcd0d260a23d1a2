"""LoRA output folders as models: ``--model runs/x/checkpoints/final`` on every command.

A LoRA run's ``final`` folder holds the adapter only (``adapter_config.json`` +
``adapter_model.safetensors``, peft's format) and the tokenizer. Loading it loads the base model
named in ``adapter_config.json`` (``base_model_name_or_path``: a hub id, or a folder given as
an absolute path, relative to the working directory or relative to the LoRA folder) with the
same options, then either merges the adapter into the base weights (generation, evaluation,
full fine-tuning: the base model's speed, no peft at run time) or keeps it as a trainable
adapter (``merge=False``: LoRA training continues that adapter, the reference policy staying
the base). ``maskgrpo merge`` writes the merged model as a plain model folder
(:mod:`maskgrpo.merge`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hf import HFPolicy

__all__ = ["base_of", "load_lora_folder", "read_adapter_config"]

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def read_adapter_config(name: str) -> dict[str, Any] | None:
    """``adapter_config.json`` of a local folder as a dict, or None when ``name`` is not one."""
    file = Path(name) / ADAPTER_CONFIG
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); re-export the adapter") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object (peft's adapter config)")
    return data


def base_of(folder: str, adapter: dict[str, Any]) -> str:
    """Where the base model of the LoRA ``folder`` is, from its ``base_model_name_or_path``."""
    base = adapter.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"{Path(folder) / ADAPTER_CONFIG} names no base_model_name_or_path; set it to the "
            "hub id or folder of the model the adapter was trained on"
        )
    path = Path(base)
    if path.is_absolute() or path.exists():
        if not path.exists():
            raise ValueError(
                f"the base model {base!r} of LoRA folder {folder!r} does not exist; copy it there "
                f"or set base_model_name_or_path in {Path(folder) / ADAPTER_CONFIG}"
            )
        return base
    beside = Path(folder) / base
    if beside.exists():
        return str(beside)
    return base  # a hub id


def load_lora_folder(
    name: str, *, load_base: Callable[[str], HFPolicy], merge: bool = True
) -> HFPolicy:
    """The base model of LoRA folder ``name`` (``load_base(base)``) with the adapter merged in,
    or (``merge=False``) as a peft model whose adapter is trainable."""
    from peft import PeftModel

    adapter = read_adapter_config(name)
    assert adapter is not None
    base = base_of(name, adapter)
    policy = load_base(base)
    peft_model = PeftModel.from_pretrained(policy.model, name, is_trainable=not merge)
    if not merge:
        log.info("loaded LoRA folder %s on base %s (adapter trainable)", name, base)
        policy.model = peft_model
        return policy
    model = peft_model.merge_and_unload()
    for param in model.parameters():  # peft froze the base; the merged model is a plain model
        param.requires_grad_(True)
    model.name_or_path = str(Path(name).resolve())  # a new LoRA on top names this folder
    model.eval()
    log.info("loaded LoRA folder %s on base %s (adapter merged)", name, base)
    policy.model = model
    return policy
