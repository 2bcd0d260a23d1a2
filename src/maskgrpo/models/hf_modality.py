"""The text modality for Hugging Face tokenizers: chat-templated, left-padded prompts.

Implements the :class:`maskgrpo.modality.Modality` protocol. Prompts are wrapped in the
tokenizer's chat template (user turn plus the generation prompt, as LLaDA-Instruct expects),
tokenised without extra special tokens and left-padded with the pad id to a fixed
``prompt_width``, so a row's ids do not depend on the other rows of its batch (the same
rollouts on any number of processes). Completions are cut at the first end-of-sequence token
and decoded with special tokens skipped.

Simplified: no attention mask is passed; pad tokens are visible to the model, as in LLaDA's own
sampling code, which pads with its end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..modality import SamplerSettings
from ..sampling.llada import generate
from ..tokens import TokenSpec

__all__ = ["HFTextModality"]


class HFTextModality:
    """Prompts through ``tokenizer``'s chat template, completions of ``gen_length`` after them."""

    per_row_generators = True  # rollout() accepts one generator per row (process-invariant)

    def __init__(
        self,
        tokenizer: Any,
        spec: TokenSpec,
        prompt_width: int,
        *,
        use_chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> None:
        if prompt_width < 1:
            raise ValueError(f"prompt_width={prompt_width} must be >= 1")
        self.tokenizer = tokenizer
        self.spec = spec
        self.prompt_width = prompt_width
        self.vocab_range: tuple[int, int] | None = None
        self.use_chat_template = use_chat_template and bool(
            getattr(tokenizer, "chat_template", None)
        )
        self.system_prompt = system_prompt

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of one prompt (chat-templated when the tokenizer has a template)."""
        if self.use_chat_template:
            messages = [{"role": "user", "content": prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return [int(i) for i in ids]

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
        ).sequences

    def decode(self, completions: Tensor) -> list[str]:
        """Text of each completion up to its first end-of-sequence token."""
        out = []
        for row in completions.tolist():
            if self.spec.eos_id in row:
                row = row[: row.index(self.spec.eos_id)]
            out.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return out
