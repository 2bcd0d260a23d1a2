"""CLIP score as a reward: cosine similarity of CLIP image and text embeddings (Radford et al.
2021; used as an image reward by MaskGRPO, arXiv 2510.02880, Sec. 5).

Preprocessing is done in torch (no torchvision, no image processor): scale to [0, 1], bicubic
resize of the shorter side to the vision tower's input size, centre crop, normalise with CLIP's
mean and std. Simplifications: the reward is the raw cosine times ``scale`` (CLIPScore's clamp
at 0 is left out, since negative values still rank rollouts); ``image_mean``/``image_std`` are
CLIP's published values unless passed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .geneval import as_image

__all__ = ["CLIP_MEAN", "CLIP_STD", "CharTokenizer", "ClipScorer", "preprocess"]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CharTokenizer:
    """A character-level fallback tokenizer for small or test CLIP models.

    Ids: 0 pad, ``1 .. vocab_size - 3`` characters (code point modulo the range),
    ``vocab_size - 2`` start, ``vocab_size - 1`` end (set the text config's ``eos_token_id``
    to it: CLIP pools the text at the end token).
    """

    def __init__(self, vocab_size: int, max_length: int) -> None:
        if vocab_size < 4 or max_length < 3:
            raise ValueError(
                f"need vocab_size >= 4 and max_length >= 3, got {vocab_size}, {max_length}"
            )
        self.vocab_size, self.max_length = vocab_size, max_length
        self.bos_token_id, self.eos_token_id = vocab_size - 2, vocab_size - 1

    def __call__(self, texts: Sequence[str], **_: Any) -> dict[str, Tensor]:
        rows = []
        for text in texts:
            chars = [1 + ord(ch) % (self.vocab_size - 3) for ch in text][: self.max_length - 2]
            rows.append([self.bos_token_id, *chars, self.eos_token_id])
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)  # (B, L)
        mask = torch.zeros(len(rows), width, dtype=torch.long)  # (B, L)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def preprocess(
    images: Sequence[np.ndarray | Tensor],
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> Tensor:
    """uint8 ``(H, W, 3)`` images -> normalised pixel values ``(B, 3, size, size)`` float32."""
    out = []
    for img in images:
        x = torch.from_numpy(np.ascontiguousarray(as_image(img))).permute(2, 0, 1)[None].float()
        x = x / 255.0  # (1, 3, H, W)
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        out.append(x[..., top : top + size, left : left + size].clamp(0.0, 1.0))
    pix = torch.cat(out)  # (B, 3, size, size)
    m = torch.tensor(mean, dtype=pix.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=pix.dtype).view(1, 3, 1, 1)
    return (pix - m) / s


class ClipScorer:
    """Reward callable ``(prompts, completions, **_) -> list[float | None]`` from a CLIP model.

    ``model`` is a ``transformers.CLIPModel`` (eval mode is set here); ``tokenizer`` any callable
    returning ``input_ids``/``attention_mask`` tensors (a Hugging Face tokenizer or
    :class:`CharTokenizer`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        scale: float = 1.0,
        batch_size: int = 32,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.scale, self.batch_size = scale, batch_size
        self.mean, self.std = tuple(image_mean), tuple(image_std)
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, device: str = "cpu", tokenizer: Any = None, **kwargs: Any
    ) -> ClipScorer:
        """Load a CLIP model by hub id or local path; the tokenizer from the same place unless
        given (pass a :class:`CharTokenizer` for models saved without one)."""
        from transformers import AutoTokenizer, CLIPModel

        model: Any = CLIPModel.from_pretrained(name_or_path)
        model.to(device)
        tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(name_or_path)
        return cls(model, tok, **kwargs)

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], images: Sequence[np.ndarray | Tensor]) -> Tensor:
        """Cosine similarity times ``scale`` per (prompt, image) pair: ``(B,)`` float32."""
        if len(prompts) != len(images):
            raise ValueError(f"got {len(prompts)} prompts but {len(images)} images")
        dev = next(self.model.parameters()).device
        out = []
        for i in range(0, len(prompts), self.batch_size):
            texts = list(prompts[i : i + self.batch_size])
            tok = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            pix = preprocess(images[i : i + self.batch_size], self.image_size, self.mean, self.std)
            res = self.model(
                input_ids=tok["input_ids"].to(dev),
                attention_mask=tok["attention_mask"].to(dev),
                pixel_values=pix.to(dev),
            )
            img = F.normalize(res.image_embeds.float(), dim=-1)  # (b, D)
            txt = F.normalize(res.text_embeds.float(), dim=-1)  # (b, D)
            out.append((img * txt).sum(-1).cpu())
        return torch.cat(out) * self.scale

    def __call__(
        self, prompts: Sequence[object], completions: Sequence[np.ndarray | Tensor], **_: object
    ) -> list[float | None]:
        texts = [p if isinstance(p, str) else None for p in prompts]
        keep = [i for i, t in enumerate(texts) if t is not None]
        if len(keep) < len(texts):
            logger.warning("%d prompts are not plain strings; unscorable", len(texts) - len(keep))
        scores: list[float | None] = [None] * len(texts)
        if keep:
            vals = self.score([texts[i] for i in keep], [completions[i] for i in keep])  # type: ignore[misc]
            for i, v in zip(keep, vals.tolist(), strict=True):
                scores[i] = float(v)
        return scores
