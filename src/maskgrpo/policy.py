"""Building or loading the policy: the built-in tiny model with a character tokenizer.

Hugging Face models load through :func:`maskgrpo.models.hf.load_hf_policy`; a model name that
is neither ``tiny`` nor a saved tiny-model folder (:func:`is_tiny_model`) is one of those.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import TinyConfig, TinyDiffusionLM
from .tokenizer import CharTokenizer
from .tokens import TokenSpec

__all__ = [
    "Policy",
    "build_tiny",
    "is_tiny_model",
    "load_policy",
    "resolve_device",
    "save_policy",
]

log = logging.getLogger(__name__)


@dataclass
class Policy:
    model: nn.Module
    tokenizer: Any  # CharTokenizer for the tiny model, a transformers tokenizer otherwise
    spec: TokenSpec


def is_tiny_model(model: str) -> bool:
    """``'tiny'`` or a folder saved by :func:`save_policy` (a character ``tokenizer.json``)."""
    if model == "tiny":
        return True
    file = Path(model) / "tokenizer.json"
    if not file.is_file():
        return False
    try:
        return bool(json.loads(file.read_text()).get("type") == "char")
    except (json.JSONDecodeError, AttributeError):
        return False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use device=cpu")
    return device


def load_policy(
    model: str,
    *,
    alphabet: str,
    max_length: int,
    dim: int = 128,
    n_layers: int = 4,
    n_heads: int = 4,
    positions: str = "learned",
    device: torch.device | None = None,
    init_generator: torch.Generator | None = None,
) -> Policy:
    """``model='tiny'`` builds a fresh tiny model over ``alphabet``; a folder loads a saved one."""
    device = device or torch.device("cpu")
    if model == "tiny":
        tokenizer = CharTokenizer(alphabet)
        cfg = TinyConfig(
            vocab_size=len(tokenizer),
            dim=dim,
            n_layers=n_layers,
            n_heads=n_heads,
            max_length=max_length,
            positions=positions,
        )
        net = build_tiny(cfg, init_generator)
    else:
        path = Path(model)
        if not (path / "tokenizer.json").is_file():
            raise ValueError(
                f"model={model!r} is neither 'tiny' nor a saved maskgrpo model folder "
                "(with config.json, model.safetensors, tokenizer.json)"
            )
        tokenizer = CharTokenizer.from_pretrained(path)
        net = TinyDiffusionLM.from_pretrained(path)
        missing = set(alphabet) - set(tokenizer.alphabet)
        if missing:
            raise ValueError(
                f"the saved tokenizer lacks characters {sorted(missing)} the task uses"
            )
    return Policy(net.to(device), tokenizer, TokenSpec.from_objects(tokenizer))


def build_tiny(cfg: TinyConfig, generator: torch.Generator | None) -> TinyDiffusionLM:
    """Build the tiny model with weights drawn from ``generator``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        net = TinyDiffusionLM(cfg)  # module constructors draw from the global RNG: restored after
    if generator is not None:
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.dim() >= 2:
                    p.normal_(0.0, 0.02, generator=generator)
                else:
                    p.fill_(1.0)  # LayerNorm weights
    return net


def save_policy(policy: Policy, path: str | Path) -> None:
    """The tiny model's folder, or ``save_pretrained`` of a Hugging Face model (with LoRA: the
    adapter only, loadable with peft on top of the base model) and its tokenizer."""
    save: Any = getattr(policy.model, "save_pretrained", None)
    if not callable(save):
        raise TypeError(f"{type(policy.model).__name__} has no save_pretrained; cannot save it")
    save(path)
    policy.tokenizer.save_pretrained(path)
