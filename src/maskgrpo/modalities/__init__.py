"""Modalities: what differs between text and images (inputs, sampler, scored range, decoding).

The trainer sees only the :class:`Modality` protocol; :class:`TextModality` (built-in
tokenizers), :class:`HFTextModality` (Hugging Face tokenizers and chat templates) and
:class:`ImageModality` (text-to-image over a unified vocabulary) implement it.
"""

from .base import Modality, SamplerSettings
from .hf_text import HFTextModality
from .image import IMAGE_SAMPLERS, ImageModality, ImageSampling, image_token_spec
from .text import TextModality

__all__ = [
    "IMAGE_SAMPLERS",
    "HFTextModality",
    "ImageModality",
    "ImageSampling",
    "Modality",
    "SamplerSettings",
    "TextModality",
    "image_token_spec",
]
