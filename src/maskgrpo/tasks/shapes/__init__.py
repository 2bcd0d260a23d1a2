"""The shapes world: synthetic GenEval-style prompts, their renderer, and a patch quantizer.

The GenEval-style reward that checks a spec against pixels is :mod:`maskgrpo.rewards.geneval`;
CLIP scoring is :mod:`maskgrpo.rewards.clip` (imports ``transformers`` on use).
"""

from .quantizer import PatchQuantizer, fit_quantizer
from .world import (
    DEFAULT_TAG_MIX,
    PALETTE,
    TAGS,
    SpecSplit,
    WorldConfig,
    all_specs,
    load_tag_mix,
    render,
    sample_specs,
    split_specs,
)

__all__ = [
    "DEFAULT_TAG_MIX",
    "PALETTE",
    "TAGS",
    "PatchQuantizer",
    "SpecSplit",
    "WorldConfig",
    "all_specs",
    "fit_quantizer",
    "load_tag_mix",
    "render",
    "sample_specs",
    "split_specs",
]
