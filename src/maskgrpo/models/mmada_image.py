"""An MMaDA-style unified model for the image modality: ``<eoi>`` after the image codes.

A checkpoint pretrained on the layout ``[prompt][<soi>][image][<eoi>]`` (MMaDA) is wrapped so
it sees ``<eoi>`` after the image in every forward pass, while the trainer works on the
``[prompt][<soi>][image]`` layout that :class:`~maskgrpo.modalities.image.ImageModality` builds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .tiny import MaskedLMOutput

__all__ = ["WithEndOfImage"]


class WithEndOfImage(nn.Module):
    """``model`` fed ``[ids][<eoi>]`` on every call, returning the logits of ``ids`` only.

    For checkpoints pretrained with an end-of-image token after the image codes (MMaDA). The
    wrapper is transparent to the trainer: it takes and returns the ``(B, L)`` layout the
    modality builds, so views, old/reference log-probs and rollouts all see the same ``<eoi>``.
    It never splits its head (the appended position would be scored otherwise), and saving
    writes the wrapped model, so the checkpoint stays loadable without the wrapper.
    """

    maskgrpo_head_split = False

    def __init__(self, model: nn.Module, eoi_id: int) -> None:
        super().__init__()
        if eoi_id < 0:
            raise ValueError(f"eoi_id={eoi_id} must be a token id; take it from spec.eoi_id")
        self.model = model
        self.eoi_id = eoi_id

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> MaskedLMOutput:
        end = input_ids.new_full((input_ids.shape[0], 1), self.eoi_id)
        ids = torch.cat([input_ids, end], dim=1)
        if attention_mask is None:
            out = self.model(ids)
        else:
            ones = attention_mask.new_ones((attention_mask.shape[0], 1))
            out = self.model(ids, attention_mask=torch.cat([attention_mask, ones], dim=1))
        return MaskedLMOutput(out.logits[:, :-1])

    def save_pretrained(self, path: str, **kwargs: object) -> None:
        self.model.save_pretrained(path, **kwargs)  # type: ignore[operator]
