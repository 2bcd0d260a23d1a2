"""The image modality: text-to-image sequences for an MMaDA-style unified vocabulary.

Vocabulary (built by :func:`image_token_spec`): the character tokenizer's ids (specials first),
then ``<soi>``, ``<eoi>``, then the ``K`` image codes, code ``c`` at id ``image_offset + c``.
Every id comes from the :class:`~maskgrpo.tokens.TokenSpec`; nothing here writes a literal.

Sequence layout seen by the trainer::

    [pad ... pad  prompt chars  <soi>][c_0 ... c_{N-1}]
    |<------------ prompt_width ------>|<-- N codes -->|

``<soi>`` closes the prompt part, so everything after ``prompt_width`` (the span the trainer
re-masks and scores) is exactly the ``N`` image tokens. ``<eoi>`` is left out of the sequence:
images have a fixed number of tokens, so an end marker carries no information, and putting it in
the completion would let the re-masking draw it and score it against the code softmax. A checkpoint pretrained on the full layout
``[prompt][<soi>][image][<eoi>]``, such as MMaDA, is wrapped in
:class:`~maskgrpo.models.mmada_image.WithEndOfImage`: the
model then sees ``<eoi>`` after the image in every forward pass (sampling, old, reference and
current policy alike) while the trainer keeps working on the image span.

The softmax is restricted to the code range (``vocab_range``) in sampling and in scoring.
Rollouts use the emerge sampler (MaskGRPO, arXiv 2510.02880, Sec. 4) or MaskGIT, with
classifier-free guidance whose unconditional branch is the empty prompt (``<soi>`` alone).
Completions decode through the patch quantizer to uint8 pixels, so rewards score pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from ..sampling import emerge, maskgit
from ..sampling.guidance import LogitsFn
from ..tasks.shapes.quantizer import PatchQuantizer
from ..tokens import TokenSpec
from .base import SamplerSettings

__all__ = [
    "IMAGE_SAMPLERS",
    "ImageModality",
    "ImageSampling",
    "image_token_spec",
]

IMAGE_SAMPLERS: tuple[str, ...] = ("emerge", "maskgit")


class PromptTokenizer(Protocol):
    """What the modality needs of a text tokenizer (``CharTokenizer``, ``WordTokenizer``)."""

    def __len__(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...


def image_token_spec(tokenizer: PromptTokenizer, codebook_size: int) -> TokenSpec:
    """The unified vocabulary: tokenizer ids, then ``<soi>``, ``<eoi>``, then ``K`` codes."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    soi = len(tokenizer)
    eoi = soi + 1
    offset = eoi + 1
    base = TokenSpec.from_objects(tokenizer, vocab_size=offset + codebook_size)
    return base.with_image(image_offset=offset, codebook_size=codebook_size, soi_id=soi, eoi_id=eoi)


@dataclass(frozen=True)
class ImageSampling:
    """Image rollout choices that the text ``SamplerSettings`` does not carry.

    ``sampler``: ``"emerge"`` (MaskGRPO's rollout sampler) or ``"maskgit"`` (the baseline).
    ``guidance_scale``: classifier-free guidance ``w`` in ``(1 + w) cond - w uncond``
    (MaskGRPO uses 3.0 to 3.5 on MMaDA); 0 disables it.
    """

    sampler: str = "emerge"
    guidance_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.sampler not in IMAGE_SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r} is unknown; choose one of {IMAGE_SAMPLERS}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale={self.guidance_scale} must be >= 0 (0 = no guidance)")


class ImageModality:
    """Prompts -> ``[prompt][<soi>]`` ids; rollouts append ``N`` image tokens; decode -> pixels."""

    def __init__(
        self,
        tokenizer: PromptTokenizer,
        spec: TokenSpec,
        quantizer: PatchQuantizer,
        *,
        prompt_tokens: int,
        num_tokens: int,
        sampling: ImageSampling | None = None,
    ) -> None:
        if spec.image_offset is None or spec.codebook_size is None or spec.soi_id is None:
            raise ValueError("the token spec has no image fields; build it with image_token_spec")
        if spec.codebook_size != quantizer.num_codes:
            raise ValueError(
                f"spec.codebook_size={spec.codebook_size} differs from the quantizer's "
                f"{quantizer.num_codes} codes; build the spec from the same quantizer"
            )
        if prompt_tokens < 1 or num_tokens < 1:
            raise ValueError(
                f"prompt_tokens={prompt_tokens} and num_tokens={num_tokens} must be >= 1"
            )
        self.tokenizer = tokenizer
        self.spec = spec
        self.quantizer = quantizer
        self.num_tokens = num_tokens
        self.sampling = sampling or ImageSampling()
        self.prompt_width = prompt_tokens + 1  # the prompt, then <soi>
        self.offset: int = spec.image_offset
        self.codebook_size: int = spec.codebook_size
        self.soi_id: int = spec.soi_id
        self.vocab_range: tuple[int, int] | None = (self.offset, self.offset + self.codebook_size)

    @property
    def mask_code(self) -> int:
        """The sampler's mask value in code space: one past the last code (aMUSEd convention)."""
        return self.codebook_size

    def encode_prompts(self, prompts: list[str], device: torch.device) -> Tensor:
        """``(B, prompt_width)`` ids: left-padded prompt, ``<soi>`` last. ``""`` = unconditional."""
        width = self.prompt_width - 1
        rows = [self.tokenizer.encode(p) for p in prompts]
        longest = max((len(r) for r in rows), default=0)
        if longest > width:
            raise ValueError(
                f"a prompt of {longest} tokens exceeds prompt_tokens={width}; "
                "raise prompt_tokens or shorten the prompt"
            )
        ids = [[self.spec.pad_id] * (width - len(r)) + r + [self.soi_id] for r in rows]
        return torch.tensor(ids, dtype=torch.long, device=device)

    def encode_images(self, images: np.ndarray | Tensor, device: torch.device) -> Tensor:
        """uint8 ``(B, H, W, 3)`` -> ``(B, N)`` token ids of their codes (SFT targets)."""
        codes = self.quantizer.encode(images)  # (B, N)
        if codes.shape[1] != self.num_tokens:
            raise ValueError(
                f"images give {codes.shape[1]} codes but the modality expects "
                f"num_tokens={self.num_tokens}; match the image size to num_tokens"
            )
        return (codes + self.offset).to(device)

    def logits_fn(self, model: nn.Module, prompt_ids: Tensor) -> LogitsFn:
        """Code logits with the prompt closed over: codes ``(B, N)`` -> ``(B, N, K)``."""
        width, lo, hi = self.prompt_width, self.offset, self.offset + self.codebook_size
        mask_code, mask_id = self.mask_code, self.spec.mask_id

        def fn(codes: Tensor) -> Tensor:
            ids = torch.where(codes == mask_code, mask_id, codes + lo)  # (B, N)
            logits = model(torch.cat([prompt_ids, ids], dim=1)).logits  # (B, W + N, V)
            return logits[:, width:, lo:hi]  # (B, N, K)

        return fn

    def rollout(
        self,
        model: nn.Module,
        prompt_ids: Tensor,
        settings: SamplerSettings,
        generator: torch.Generator,
    ) -> Tensor:
        """Full sequences ``(B, prompt_width + N)``: the prompt ids, then sampled image tokens."""
        if settings.gen_length != self.num_tokens:
            raise ValueError(
                f"gen_length={settings.gen_length} differs from the image's "
                f"{self.num_tokens} tokens; set gen_length to num_tokens"
            )
        batch = prompt_ids.shape[0]
        w = self.sampling.guidance_scale
        cond = self.logits_fn(model, prompt_ids)
        uncond = None
        if w > 0:
            empty = self.encode_prompts([""] * batch, prompt_ids.device)  # (B, W)
            uncond = self.logits_fn(model, empty)
        module = emerge if self.sampling.sampler == "emerge" else maskgit
        result = module.sample(
            cond,
            batch,
            self.num_tokens,
            mask_id=self.mask_code,
            steps=settings.steps,
            temperature=settings.temperature,
            guidance_scale=w,
            generator=generator,
            uncond_logits_fn=uncond,
            device=prompt_ids.device,
        )
        codes = result.codes.clone()  # a normal tensor: the sampler ran in inference mode
        return torch.cat([prompt_ids, codes + self.offset], dim=1)

    def to_codes(self, completions: Tensor) -> Tensor:
        """Token ids ``(B, N)`` -> codes ``(B, N)``; raises on ids outside the code range."""
        codes = completions.detach().cpu() - self.offset
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"completion ids must lie in the image-code range [{self.offset}, "
                f"{self.offset + self.codebook_size}); got [{int(completions.min())}, "
                f"{int(completions.max())}] (is a mask or text token left in the image?)"
            )
        return codes

    def decode(self, completions: Tensor) -> list[np.ndarray]:
        """``(B, N)`` image token ids -> ``B`` uint8 ``(H, W, 3)`` images."""
        return list(self.quantizer.decode(self.to_codes(completions)).numpy())
