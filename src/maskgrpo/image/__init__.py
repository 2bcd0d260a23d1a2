"""The image half: a synthetic shapes world, a patch quantizer, and a GenEval-style reward.

CLIP scoring lives in :mod:`maskgrpo.image.clip_reward` (imports ``transformers`` on use).
"""

from .guidance import LogitsFn, with_guidance
from .reward import (
    Detection,
    SpecResult,
    detect,
    evaluate_spec,
    geneval_partial_reward,
    geneval_reward,
    make_geneval_reward,
    score_by_tag,
)
from .tokenizer import PatchQuantizer, fit_quantizer
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
    "Detection",
    "LogitsFn",
    "PatchQuantizer",
    "SpecResult",
    "SpecSplit",
    "WorldConfig",
    "all_specs",
    "detect",
    "evaluate_spec",
    "fit_quantizer",
    "geneval_partial_reward",
    "geneval_reward",
    "load_tag_mix",
    "make_geneval_reward",
    "render",
    "sample_specs",
    "score_by_tag",
    "split_specs",
    "with_guidance",
]
