"""Rollout samplers for masked diffusion models, one algorithm per module.

- :mod:`.llada`: semi-autoregressive text sampling (low-confidence, random or emerge committing);
- :mod:`.emerge`: the emerge sampler for image codes (MaskGRPO);
- :mod:`.maskgit`: the MaskGIT confidence sampler for image codes (baseline);
- :mod:`.common`: Gumbel-max draws, the cosine schedule, the emerge reveal rule.
"""

from . import emerge, maskgit
from .common import cosine_schedule, emerge_reveal, gumbel_sample
from .emerge import EmergeResult
from .llada import TextSample, generate, transfer_schedule
from .maskgit import MaskGITResult, maskgit_schedule

__all__ = [
    "EmergeResult",
    "MaskGITResult",
    "TextSample",
    "cosine_schedule",
    "emerge",
    "emerge_reveal",
    "generate",
    "gumbel_sample",
    "maskgit",
    "maskgit_schedule",
    "transfer_schedule",
]
