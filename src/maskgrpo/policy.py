"""Building or loading the policy: the built-in tiny model with a character tokenizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .models import TinyConfig, TinyDiffusionLM
from .tokenizer import CharTokenizer
from .tokens import TokenSpec

__all__ = ["Policy", "load_policy", "resolve_device", "save_policy"]

log = logging.getLogger(__name__)


@dataclass
class Policy:
    model: nn.Module
    tokenizer: CharTokenizer
    spec: TokenSpec


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
        )
        net = _build_tiny(cfg, init_generator)
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


def _build_tiny(cfg: TinyConfig, generator: torch.Generator | None) -> TinyDiffusionLM:
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
    if not isinstance(policy.model, TinyDiffusionLM):
        raise TypeError(
            "save_policy handles the built-in tiny model; use save_pretrained for others"
        )
    policy.model.save_pretrained(path)
    policy.tokenizer.save_pretrained(path)
