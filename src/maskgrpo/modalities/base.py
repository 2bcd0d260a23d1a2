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

    @classmethod
    def from_config(
        cls, cfg: SamplingFields, default_length: int, *, greedy: bool = False
    ) -> SamplerSettings:
        """The sampler a config asks for: ``max_completion_length`` 0 = ``default_length``;
        ``diffusion_steps``, ``block_length`` 0 = that length; ``greedy`` = temperature 0."""
        gen_length = cfg.max_completion_length or default_length
        return cls(
            gen_length=gen_length,
            steps=cfg.diffusion_steps or gen_length,
            block_length=cfg.block_length or gen_length,
            temperature=0.0 if greedy else cfg.temperature,
            remasking=cfg.remasking,
            kv_cache=cfg.kv_cache,
            kv_cache_refresh=cfg.kv_cache_refresh,
            parallel_threshold=cfg.parallel_threshold,
        )


class SamplingFields(Protocol):
    """The sampling fields of the train, SFT and evaluation configurations."""

    max_completion_length: int
    diffusion_steps: int
    block_length: int
    temperature: float
    remasking: str
    kv_cache: str
    kv_cache_refresh: int
    parallel_threshold: float


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
