"""Shared fixtures: a seeded tiny model factory, the character tokenizer, the shared-data path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from maskgrpo import CharTokenizer, TinyConfig, TinyDiffusionLM, TokenSpec

ALPHABET = "0123456789+="
REPO_ROOT = Path(__file__).resolve().parents[1]

# The test tensors are tiny: intra-op threads only add synchronisation cost, which on a busy
# machine made a forward pass of the tiny model ~100x slower. OMP_NUM_THREADS still overrides.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# Remote modeling code (LLaDA, Dream, MMaDA fixtures) is imported by transformers from its
# modules cache; a private one per session keeps runs on one machine from sharing files.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="maskgrpo-hf-modules-"))

TinyFactory = Callable[..., TinyDiffusionLM]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def build_tiny_model(
    vocab_size: int,
    *,
    seed: int = 0,
    dim: int = 32,
    n_layers: int = 2,
    n_heads: int = 2,
    max_length: int = 64,
    dropout: float = 0.0,
    std: float = 0.02,
    head_std: float | None = None,
    positions: str = "learned",
) -> TinyDiffusionLM:
    """A tiny model in eval mode whose weights come from an explicit generator (reproducible).

    ``head_std`` > ``std`` makes the output distributions peaked, which samplers tests want.
    """
    cfg = TinyConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        max_length=max_length,
        dropout=dropout,
        positions=positions,
    )
    model = TinyDiffusionLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                scale = head_std if (name == "lm_head.weight" and head_std) else std
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model.eval()


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer(ALPHABET)


@pytest.fixture
def spec(tokenizer: CharTokenizer) -> TokenSpec:
    return tokenizer.token_spec()


@pytest.fixture
def make_tiny(tokenizer: CharTokenizer) -> TinyFactory:
    """Factory ``make_tiny(seed=..., head_std=..., dropout=...)`` sized for the tokenizer."""

    def factory(**kwargs: object) -> TinyDiffusionLM:
        return build_tiny_model(tokenizer.vocab_size, **kwargs)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def tiny_model(make_tiny: TinyFactory) -> TinyDiffusionLM:
    return make_tiny(seed=0)


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder: ``$MASKGRPO_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("MASKGRPO_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_file(shared_data: Path) -> Callable[..., Path]:
    """``shared_file("gsm8k", "test.jsonl")``: that file of the shared data folder; the test is
    skipped when it is not there."""

    def find(*parts: str) -> Path:
        path = shared_data.joinpath(*parts)
        if not path.is_file():
            pytest.skip(f"shared data file {path} is missing")
        return path

    return find
