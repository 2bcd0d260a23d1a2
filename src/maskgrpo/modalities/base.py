"""What the trainer needs of a modality, and the sampler settings it hands to one.

The trainer talks to a modality through this small protocol only (build the input sequence,
locate the completion span, decode for the reward), so text and image are two implementations
of one interface chosen at start-up, never ``if task == ...`` branches in the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..tokens import TokenSpec

__all__ = ["Modality", "SamplerSettings"]


@dataclass(frozen=True)
class SamplerSettings:
    gen_length: int
    steps: int
    block_length: int
    temperature: float
    remasking: str
    kv_cache: str = "none"  # block KV cache: none (exact), prefix or dual
    kv_cache_refresh: int = 0  # steps between cache refreshes in a block; 0 = once per block
    parallel_threshold: float = 0.0  # parallel decoding threshold; 0 = the fixed schedule


class Modality(Protocol):
    """What the trainer needs of a modality. ``vocab_range`` restricts the softmax (image codes)."""

    spec: TokenSpec
    prompt_width: int
    vocab_range: tuple[int, int] | None

    def encode_prompts(self, prompts: list[str], device: torch.device) -> Tensor: ...

    def rollout(
        self,
        model: nn.Module,
        prompt_ids: Tensor,
        settings: SamplerSettings,
        generator: torch.Generator,
    ) -> Tensor: ...

    def decode(self, completions: Tensor) -> list[Any]: ...
