"""maskgrpo: reinforcement learning for masked discrete diffusion models with MaskGRPO.

The public pieces are importable from the top level::

    from maskgrpo import MaskGRPOConfig, MaskGRPOTrainer            # the TRL-shaped trainer
    from maskgrpo import mask_ratios, remask, group_advantages, grpo_loss, generate
"""

from .config import MaskGRPOConfig
from .grpo import (
    LossStats,
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    k3_kl,
    masked_mean,
)
from .logprobs import split_head, token_logprobs, view_logprobs
from .masking import MaskedView, completion_span, mask_ratios, remask, upto_first_eos
from .models import TinyConfig, TinyDiffusionLM
from .models.calls import model_call
from .sampling.common import cosine_schedule, emerge_reveal, gumbel_sample
from .sampling.llada import TextSample, generate
from .tokenizer import CharTokenizer
from .tokens import TokenSpec
from .trainer.grpo_trainer import MaskGRPOTrainer, TrainOutput
from .version import __version__

__all__ = [
    "__version__",
    "CharTokenizer",
    "LossStats",
    "MaskGRPOConfig",
    "MaskGRPOTrainer",
    "MaskedView",
    "TextSample",
    "TinyConfig",
    "TinyDiffusionLM",
    "TokenSpec",
    "TrainOutput",
    "clipped_surrogate",
    "completion_span",
    "cosine_schedule",
    "emerge_reveal",
    "generate",
    "group_advantages",
    "grpo_loss",
    "gumbel_sample",
    "k3_kl",
    "mask_ratios",
    "masked_mean",
    "model_call",
    "remask",
    "split_head",
    "token_logprobs",
    "upto_first_eos",
    "view_logprobs",
]
