"""The token spec: every special token id the algorithms need, in one validated object.

Algorithm code never writes a token id as a literal; it reads them from a :class:`TokenSpec`
built once from the tokenizer or model config (house style: token ids are data).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["TokenSpec"]

# Attribute names under which tokenizers and configs of known masked diffusion models keep the
# mask token (LLaDA and MMaDA configs: ``mask_token_id``; Dream: ``mask_token_id``; BERT-style
# tokenizers: ``mask_token_id``).
_MASK_ATTRS = ("mask_token_id", "mask_id")
_EOS_ATTRS = ("eos_token_id", "eos_id")
_PAD_ATTRS = ("pad_token_id", "pad_id")


def _first_int(obj: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, list | tuple) and value:
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@dataclass(frozen=True)
class TokenSpec:
    """Special token ids of one model.

    ``pad_id`` may equal ``eos_id`` (LLaDA pads with its end-of-sequence token); the mask id
    must differ from both. The image fields describe a unified text+image vocabulary
    (MMaDA-style): image code ``c`` has token id ``image_offset + c``.
    """

    mask_id: int
    eos_id: int
    pad_id: int
    vocab_size: int
    image_offset: int | None = None
    codebook_size: int | None = None
    soi_id: int | None = None  # start of image
    eoi_id: int | None = None  # end of image

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending id when the spec is inconsistent."""
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        for name in ("mask_id", "eos_id", "pad_id", "soi_id", "eoi_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the vocabulary [0, {self.vocab_size}); "
                    "check the tokenizer/config the spec was built from"
                )
        if self.mask_id in (self.eos_id, self.pad_id):
            raise ValueError(
                f"mask_id={self.mask_id} equals the eos/pad id ({self.eos_id}/{self.pad_id}); "
                "a masked diffusion model needs a dedicated mask token"
            )
        if (self.image_offset is None) != (self.codebook_size is None):
            raise ValueError("image_offset and codebook_size must be given together")
        if self.image_offset is not None and self.codebook_size is not None:
            end = self.image_offset + self.codebook_size
            if self.image_offset < 0 or end > self.vocab_size:
                raise ValueError(
                    f"image codes [{self.image_offset}, {end}) do not fit the vocabulary of "
                    f"size {self.vocab_size}"
                )
            if self.image_offset <= self.mask_id < end:
                raise ValueError(f"mask_id={self.mask_id} lies inside the image-code range")

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that a sampler must never emit as content (mask only; eos/pad are legal)."""
        return (self.mask_id,)

    def with_image(
        self, image_offset: int, codebook_size: int, soi_id: int, eoi_id: int
    ) -> TokenSpec:
        """Return a copy describing a unified vocabulary with image codes."""
        return replace(
            self,
            image_offset=image_offset,
            codebook_size=codebook_size,
            soi_id=soi_id,
            eoi_id=eoi_id,
        )

    @classmethod
    def from_objects(cls, *sources: Any, vocab_size: int | None = None) -> TokenSpec:
        """Build the spec from a tokenizer and/or model config (first source that has an id wins).

        Raises ``ValueError`` saying what to set when the mask token cannot be found.
        """
        mask = eos = pad = None
        vocab = vocab_size
        for src in sources:
            if src is None:
                continue
            mask = mask if mask is not None else _first_int(src, _MASK_ATTRS)
            eos = eos if eos is not None else _first_int(src, _EOS_ATTRS)
            pad = pad if pad is not None else _first_int(src, _PAD_ATTRS)
            if vocab is None:
                vocab = _first_int(src, ("vocab_size",))
                if vocab is None and hasattr(src, "__len__"):
                    vocab = len(src)
        if mask is None:
            raise ValueError(
                "could not find the mask token id on the tokenizer or config "
                f"(looked for {', '.join(_MASK_ATTRS)}); pass mask_id explicitly "
                "(for LLaDA it is the id of '<|mdm_mask|>')"
            )
        if eos is None:
            raise ValueError("could not find eos_token_id on the tokenizer or config; pass eos_id")
        if vocab is None:
            raise ValueError("could not determine vocab_size; pass vocab_size explicitly")
        return cls(mask_id=mask, eos_id=eos, pad_id=eos if pad is None else pad, vocab_size=vocab)
