"""The text modality: how prompts become ids, where the completion sits, how it is decoded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..sampling.llada import generate
from ..tokens import TokenSpec
from .base import SamplerSettings

__all__ = ["TextModality"]


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
