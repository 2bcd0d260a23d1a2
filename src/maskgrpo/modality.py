"""The text modality: how prompts become ids, where the completion sits, how it is decoded.

The trainer talks to a modality through this small protocol only (build the input sequence,
locate the completion span, decode for the reward), so text and image are two implementations
of one interface chosen at start-up, never ``if task == ...`` branches in the algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .sampling.llada import generate
from .tokens import TokenSpec

__all__ = ["Modality", "SamplerSettings", "TextModality"]


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


class TextModality:
    """Left-padded prompts of a fixed width, completions of ``gen_length`` tokens after them."""

    per_row_generators = True  # rollout() accepts one generator per row (process-invariant)

    def __init__(self, tokenizer: Any, spec: TokenSpec, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.prompt_width = prompt_width
        self.vocab_range: tuple[int, int] | None = None

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of one prompt."""
        return list(self.tokenizer.encode(prompt))

    def encode_prompts(self, prompts: list[str], device: torch.device) -> Tensor:
        """``(B, prompt_width)`` ids, left-padded with the pad id."""
        rows = [self.prompt_ids(p) for p in prompts]
        longest = max(len(r) for r in rows)
        if longest > self.prompt_width:
            raise ValueError(
                f"a prompt of {longest} tokens exceeds prompt_width={self.prompt_width}; "
                "raise the width or shorten the prompt"
            )
        ids = [[self.spec.pad_id] * (self.prompt_width - len(r)) + r for r in rows]
        return torch.tensor(ids, dtype=torch.long, device=device)

    def encode_completions(
        self, answers: list[str], gen_length: int, device: torch.device
    ) -> Tensor:
        """``(B, gen_length)`` ids: the answer, then EOS to the end (LLaDA pads with EOS)."""
        rows = [self.tokenizer.encode(a) for a in answers]
        if max(len(r) for r in rows) >= gen_length:
            raise ValueError(
                f"an answer of {max(len(r) for r in rows)} tokens leaves no room for EOS in "
                f"max_completion_length={gen_length}; raise max_completion_length"
            )
        ids = [r + [self.spec.eos_id] * (gen_length - len(r)) for r in rows]
        return torch.tensor(ids, dtype=torch.long, device=device)

    def rollout(
        self,
        model: nn.Module,
        prompt_ids: Tensor,
        settings: SamplerSettings,
        generator: torch.Generator | Sequence[torch.Generator],
    ) -> Tensor:
        """Full sequences ``(B, prompt_width + gen_length)``; one generator or one per row."""
        return generate(
            model,
            prompt_ids,
            mask_id=self.spec.mask_id,
            gen_length=settings.gen_length,
            steps=settings.steps,
            block_length=settings.block_length,
            temperature=settings.temperature,
            remasking=settings.remasking,
            generator=generator,
            kv_cache=settings.kv_cache,
            kv_cache_refresh=settings.kv_cache_refresh,
            parallel_threshold=settings.parallel_threshold or None,
        ).sequences

    def decode(self, completions: Tensor) -> list[str]:
        return [self.tokenizer.decode(row) for row in completions.tolist()]
