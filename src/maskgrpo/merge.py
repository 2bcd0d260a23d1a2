"""``maskgrpo merge``: a LoRA output folder -> a plain model folder with the adapter merged in.

The merged folder holds the base model's weights plus ``B @ A * alpha / r`` of every adapted
layer, its config, tokenizer and (for models that ship code) the modeling files, so it loads
anywhere the base loads -- ``maskgrpo generate/eval --model DIR``, or
``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` -- without peft. It is written to a
temporary folder and renamed into place; an existing non-empty folder is never overwritten.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DTYPES
from .config_io import field_with_help as _f

__all__ = ["MergeConfig", "run_merge"]

log = logging.getLogger(__name__)


@dataclass
class MergeConfig:
    """Merge a LoRA output folder (e.g. <run>/checkpoints/final) into a plain model folder."""

    model: str = _f("", "The LoRA output folder (with adapter_config.json) to merge.")
    output_dir: str = _f("", "Folder to write the merged model to (must not exist or be empty).")
    trust_remote_code: bool = _f(
        False, "Load a base model that ships its own code (LLaDA, Dream, MMaDA); review it first."
    )
    dtype: str = _f("float32", "Dtype of the merged weights: float32, bfloat16, float16.")
    family: str = _f("auto", "Model family of the base (auto = from its config.json).")

    def validate(self) -> None:
        from .models.lora_folder import read_adapter_config
        from .models.registry import family_named

        if not self.model or read_adapter_config(self.model) is None:
            raise ValueError(
                f"model={self.model!r} is not a LoRA output folder (no adapter_config.json); "
                "pass the checkpoints/final folder of a LoRA run"
            )
        if not self.output_dir:
            raise ValueError("output_dir is empty; name the folder to write the merged model to")
        out = Path(self.output_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"output_dir={self.output_dir!r} exists and is not an empty folder; choose a new "
                "folder (nothing is overwritten)"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown; choose one of {list(DTYPES)}")
        if self.family != "auto":
            family_named(self.family)


def run_merge(cfg: MergeConfig) -> dict[str, Any]:
    """Write the merged model of ``cfg.model`` to ``cfg.output_dir``; returns a summary."""
    from .models.hf import TORCH_DTYPES, load_hf_policy
    from .models.lora_folder import base_of, read_adapter_config

    adapter = read_adapter_config(cfg.model) or {}
    policy = load_hf_policy(
        cfg.model,
        trust_remote_code=cfg.trust_remote_code,
        dtype=TORCH_DTYPES[cfg.dtype],
        family=cfg.family,
    )
    out = Path(cfg.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.merge-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save: Any = policy.model.save_pretrained
    save(str(tmp))
    policy.tokenizer.save_pretrained(str(tmp))
    if out.exists():
        out.rmdir()  # validated empty
    tmp.rename(out)
    log.info("merged %s into %s", cfg.model, out)
    return {
        "model": str(out),
        "adapter": cfg.model,
        "base": base_of(cfg.model, adapter),
        "parameters": sum(p.numel() for p in policy.model.parameters()),
    }
