"""The text modality for Hugging Face tokenizers: chat-templated, left-padded prompts.

Implements the :class:`maskgrpo.modalities.base.Modality` protocol. Prompts are wrapped in the
tokenizer's chat template (user turn plus the generation prompt, as LLaDA-Instruct expects),
tokenised without extra special tokens and left-padded with the pad id to a fixed
``prompt_width``, so a row's ids do not depend on the other rows of its batch (the same
rollouts on any number of processes). Completions are cut at the first end-of-sequence token
and decoded with special tokens skipped.

The padding never reaches the model: the sampler and the log-prob code treat each row's
leading pad tokens as padding and express it in the form the model's family expects
(:mod:`maskgrpo.models.calls`), so a row computes what it computes alone, unpadded.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..tokens import TokenSpec
from .text import TextModality

__all__ = ["HFTextModality"]


class HFTextModality(TextModality):
    """Prompts through ``tokenizer``'s chat template, completions of ``gen_length`` after them.

    Padding, the prompt-width check and sampling are :class:`TextModality`'s.
    """

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
        super().__init__(tokenizer, spec, prompt_width)
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

    def decode(self, completions: Tensor) -> list[str]:
        """Text of each completion up to its first end-of-sequence token."""
        out = []
        for row in completions.tolist():
            if self.spec.eos_id in row:
                row = row[: row.index(self.spec.eos_id)]
            out.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return out
