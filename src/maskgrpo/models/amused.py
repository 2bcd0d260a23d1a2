"""MaskGRPO on aMUSEd / MUSE-style models: diffusers' ``UVit2DModel`` + ``VQModel``.

aMUSEd (Patil et al. 2024) predicts VQGAN codes on an ``h x w`` latent grid from text
conditioning: CLIP hidden states (``encoder_hidden_states``), a pooled text embedding and
micro-conditioning (original size, crop offsets, aesthetic score; five numbers per image). The
mask token id is ``codebook_size`` (the first id past the codes).

:func:`amused_policy` wraps the transformer as a model over the image modality's sequences
(:class:`AmusedPolicy`) and builds that :class:`~maskgrpo.modalities.image.ImageModality` with the
VQ model as its image tokenizer, so aMUSEd trains through the same loop as every other model
(``train_grpo`` / ``MaskGRPOTrainer``): emerge or MaskGIT rollouts with guidance, random
re-masking with truncation 0.8, log-probs over the codes, pixels decoded for the reward.
:func:`amused_logits_fn` gives the samplers a ``logits_fn`` over the flattened grid directly.

Left to the caller: text encoding (run the pipeline's CLIP text encoder and keep each prompt's
and the empty prompt's embeddings as :class:`AmusedConditioning`), LoRA wrapping, and mixed
precision. The ratio targets the unguided conditional model (see ``docs/image.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..modalities.image import ImageModality, ImageSampling, image_token_spec
from ..sampling.guidance import LogitsFn
from ..tokens import TokenSpec
from .tiny import MaskedLMOutput
from .vqmodel import VQImageTokenizer

__all__ = [
    "AmusedConditioning",
    "AmusedPolicy",
    "AmusedPrompts",
    "amused_logits_fn",
    "amused_policy",
    "decode_codes",
]


@dataclass(frozen=True)
class AmusedConditioning:
    """Per-row conditioning: ``encoder_hidden_states`` ``(B, S, E)``, ``pooled_text_emb``
    ``(B, P)``, ``micro_conds`` ``(B, 5)`` (width, height, crop top, crop left, aesthetic)."""

    encoder_hidden_states: Tensor
    pooled_text_emb: Tensor
    micro_conds: Tensor

    def rows(self, index: slice | Tensor) -> AmusedConditioning:
        return AmusedConditioning(
            self.encoder_hidden_states[index], self.pooled_text_emb[index], self.micro_conds[index]
        )


def _grid(transformer: Any, codes: Tensor, height: int, width: int) -> Tensor:
    if codes.shape[1] != height * width:
        raise ValueError(
            f"codes have {codes.shape[1]} positions but the latent grid is {height}x{width}; "
            "pass the grid of the model's sample size"
        )
    return codes.view(codes.shape[0], height, width)  # (B, h, w)


def code_logits(
    transformer: nn.Module, cond: AmusedConditioning, codes: Tensor, height: int, width: int
) -> Tensor:
    """``UVit2DModel`` logits as ``(B, N, K)`` for codes ``(B, N)`` (mask id at masked cells)."""
    logits = transformer(
        _grid(transformer, codes, height, width),
        encoder_hidden_states=cond.encoder_hidden_states,
        pooled_text_emb=cond.pooled_text_emb,
        micro_conds=cond.micro_conds,
    )  # (B, K, h, w)
    return logits.flatten(2).transpose(1, 2)  # (B, N, K)


def amused_logits_fn(
    transformer: nn.Module, cond: AmusedConditioning, height: int, width: int
) -> LogitsFn:
    """A sampler ``logits_fn`` closing over the conditioning: codes ``(B, N)`` -> ``(B, N, K)``."""

    def fn(codes: Tensor) -> Tensor:
        return code_logits(transformer, cond, codes, height, width)

    return fn


class AmusedPrompts:
    """The prompt "tokenizer" of an aMUSEd run: one id per known prompt (its row in the
    conditioning table), ``""`` (the unconditional prompt) encodes to nothing."""

    def __init__(self, prompts: Sequence[str]) -> None:
        unique = list(dict.fromkeys(prompts))
        if not unique or any(not p for p in unique):
            raise ValueError("AmusedPrompts needs non-empty prompts (the rows' prompt column)")
        self.pad_token_id, self.eos_token_id, self.mask_token_id = 0, 1, 2
        self.first_prompt_id = 3
        self.prompts = unique
        self._index = {p: self.first_prompt_id + i for i, p in enumerate(unique)}

    def __len__(self) -> int:
        return self.first_prompt_id + len(self.prompts)

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if text not in self._index:
            raise ValueError(
                f"prompt {text[:60]!r} has no text conditioning; encode it with the pipeline's "
                "text encoder and pass it to amused_policy"
            )
        return [self._index[text]]

    def decode(self, ids: list[int]) -> str:
        return " ".join(
            self.prompts[i - self.first_prompt_id] for i in ids if i in self._index.values()
        )


class AmusedPolicy(nn.Module):
    """A ``UVit2DModel`` seen through the image modality's layout ``[prompt id][<soi>][codes]``.

    The prompt id picks the row's text conditioning from a fixed table (row 0: the empty prompt,
    for guidance); the codes (unified ids) go to the transformer as its grid, the spec's mask id
    as aMUSEd's (``codebook_size``). Logits come back in the unified layout, the code logits at
    the code ids and zeros elsewhere (the modality restricts the softmax to the codes). The
    trainer, sampler and log-probs then run on aMUSEd exactly as on any other model.
    """

    maskgrpo_head_split = False  # the logits are assembled here, not a linear head
    hidden: Tensor  # (P + 1, S, E) text hidden states per prompt row, row 0 the empty prompt
    pooled: Tensor  # (P + 1, D)
    micro: Tensor  # (P + 1, 5)

    def __init__(
        self,
        transformer: nn.Module,
        spec: TokenSpec,
        table: AmusedConditioning,
        *,
        first_prompt_id: int,
        height: int,
        width: int,
    ) -> None:
        super().__init__()
        if spec.image_offset is None or spec.codebook_size is None:
            raise ValueError("the token spec has no image fields; build it with image_token_spec")
        self.transformer = transformer
        self.spec = spec
        self.first_prompt_id = first_prompt_id
        self.height, self.width = height, width
        self.register_buffer("hidden", table.encoder_hidden_states, persistent=False)
        self.register_buffer("pooled", table.pooled_text_emb, persistent=False)
        self.register_buffer("micro", table.micro_conds, persistent=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> MaskedLMOutput:
        offset, k = self.spec.image_offset, self.spec.codebook_size
        assert offset is not None and k is not None
        n = self.height * self.width
        slot = input_ids[:, -n - 2]  # the prompt id before <soi>; pad = the empty prompt
        rows = torch.where(slot >= self.first_prompt_id, slot - self.first_prompt_id + 1, 0)
        ids = input_ids[:, -n:]  # (B, N)
        codes = torch.where(ids == self.spec.mask_id, k, ids - offset).clamp(0, k)
        cond = AmusedConditioning(self.hidden[rows], self.pooled[rows], self.micro[rows])
        logits = code_logits(self.transformer, cond, codes, self.height, self.width)  # (B, N, K)
        out = logits.new_zeros((*input_ids.shape, self.spec.vocab_size))  # (B, L, V)
        out[:, -n:, offset : offset + k] = logits
        return MaskedLMOutput(out)

    def save_pretrained(self, path: str, **kwargs: object) -> None:
        self.transformer.save_pretrained(path, **kwargs)  # type: ignore[operator]


def amused_policy(
    transformer: nn.Module,
    vqvae: nn.Module,
    conditioning: dict[str, AmusedConditioning],
    empty: AmusedConditioning,
    *,
    height: int,
    width: int,
    sampling: ImageSampling | None = None,
) -> tuple[AmusedPolicy, ImageModality]:
    """The policy and image modality of an aMUSEd run, ready for ``train_grpo`` or
    ``MaskGRPOTrainer(..., modality=...)``.

    ``conditioning`` maps each training prompt to its one-row conditioning (the pipeline's CLIP
    text encoder output, micro-conditioning), ``empty`` is the empty prompt's (guidance).
    """
    prompts = AmusedPrompts(list(conditioning))
    vq = VQImageTokenizer(vqvae, grid=(height, width))
    spec = image_token_spec(prompts, vq.num_codes)
    rows = [empty] + [conditioning[p] for p in prompts.prompts]
    table = AmusedConditioning(
        torch.cat([r.encoder_hidden_states for r in rows]),
        torch.cat([r.pooled_text_emb for r in rows]),
        torch.cat([r.micro_conds for r in rows]),
    )
    policy = AmusedPolicy(
        transformer, spec, table, first_prompt_id=prompts.first_prompt_id, height=height,
        width=width,
    )  # fmt: skip
    modality = ImageModality(
        prompts, spec, vq, prompt_tokens=1, num_tokens=height * width, sampling=sampling
    )
    return policy, modality


@torch.no_grad()
def decode_codes(vqvae: nn.Module, codes: Tensor, height: int, width: int) -> list[np.ndarray]:
    """VQ codes ``(B, N)`` -> ``B`` uint8 ``(H, W, 3)`` images (as the aMUSEd pipeline decodes)."""
    channels = vqvae.config.latent_channels  # type: ignore[union-attr]
    shape = (codes.shape[0], height, width, channels)
    out = vqvae.decode(codes.flatten(), force_not_quantize=True, shape=shape)  # type: ignore[operator]
    pixels = out.sample.clamp(0.0, 1.0)  # (B, 3, H, W)
    arr = (pixels.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return list(arr)
