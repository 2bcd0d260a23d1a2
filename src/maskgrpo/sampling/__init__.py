"""Rollout samplers for masked diffusion models, one algorithm per module.

- :mod:`.llada`: semi-autoregressive text sampling (low-confidence, random or emerge committing);
- :mod:`.emerge`: the emerge sampler for image codes (MaskGRPO);
- :mod:`.maskgit`: the MaskGIT confidence sampler for image codes (baseline);
- :mod:`.guidance`: classifier-free guidance on logits for the image samplers;
- :mod:`.draw`: the token draws of the text sampler (Gumbel-max, confidences);
- :mod:`.common`: Gumbel-max draws, the cosine schedule, the emerge reveal rule.
"""

from . import emerge, maskgit
from .common import cosine_schedule, emerge_reveal, gumbel_sample
from .emerge import EmergeResult
from .guidance import LogitsFn, with_guidance
from .llada import TextSample, generate, transfer_schedule
from .maskgit import MaskGITResult, maskgit_schedule

__all__ = [
    "EmergeResult",
    "LogitsFn",
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
    "with_guidance",
]
