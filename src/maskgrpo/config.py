"""Typed configs, one per command, loadable from YAML and overridable from the command line.

Every field carries a help string (shown by ``maskgrpo <command> --help``); validation runs
before any model is built and raises ``ValueError`` naming the bad value and the fix. Options
that encode a research choice cite MaskGRPO (arXiv 2510.02880).

Training fields use TRL's ``GRPOConfig`` names where the meaning is the same.
:class:`MaskGRPOConfig` holds what the trainer reads (the Python API's ``args``);
:class:`TrainConfig`, the ``maskgrpo train`` command, adds where the model, data and rewards
come from. Field names from before this vocabulary are listed in each class's ``RENAMED`` and
rejected with one line naming the replacement (:mod:`maskgrpo.config_io`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from .config_io import (
    add_config_arguments,
    check_choice,
    check_non_negative,
    check_positive,
    config_from_args,
    load_config,
)
from .config_io import field_with_help as _f
from .grpo import ADVANTAGES, NORMALIZERS
from .masking import REMASKERS
from .sampling.llada import CACHE_MODES, REMASKING
from .user_input import check_device

__all__ = [
    "DemoConfig",
    "EvalConfig",
    "GenerateConfig",
    "MaskGRPOConfig",
    "SFTConfig",
    "TrainConfig",
    "add_config_arguments",
    "config_from_args",
    "load_config",
    "with_modality_defaults",
]

DTYPES = ("float32", "bfloat16", "float16")
MIXED_PRECISION = ("no", "bf16")
# loss_type and scale_rewards take TRL's names of the registered loss normalisers and advantage
# scalings (maskgrpo.grpo.NORMALIZERS, ADVANTAGES: dapo = token, grpo = sequence,
# dr_grpo = constant; group = zscore, none = mean; rank is a MaskGRPO extra), strategy the
# registered re-masking estimators (maskgrpo.masking.REMASKERS). The checks read the registries.
REPORT_TO = ("tensorboard", "none")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
C = TypeVar("C")
MODALITIES = ("text", "image")
# What gamma=-1 and strategy=auto mean per modality (MaskGRPO, arXiv 2510.02880, Sec. 4).
MODALITY_DEFAULTS: dict[str, dict[str, float | str]] = {
    "text": {"gamma": 0.6, "strategy": "fading"},
    "image": {"gamma": 0.8, "strategy": "random"},
}
IMAGE_SAMPLERS = ("emerge", "maskgit")
IMAGE_REWARDS = ("geneval", "clip", "none")

_BATCH = (
    "replaced by per_device_train_batch_size and gradient_accumulation_steps (rollouts per "
    "step = per_device_train_batch_size x gradient_accumulation_steps x processes, a multiple "
    "of num_generations)"
)
_TASK = "dataset (synthetic tasks are datasets: --dataset running_sums)"
# Field names before the TRL vocabulary, and what replaced them (one line each).
_RENAMED_COMMON = {
    "out_dir": "output_dir",
    "gen_length": "max_completion_length",
    "task": _TASK,
    "task_seed": "dataset_seed",
}
_RENAMED_TRAIN = {
    **_RENAMED_COMMON,
    "lr": "learning_rate",
    "steps": "max_steps",
    "group_size": "num_generations",
    "mu": "num_iterations",
    "eps": "epsilon",
    "eps_high": "epsilon_high",
    "normalization": "loss_type (token -> dapo, sequence -> grpo, constant -> dr_grpo)",
    "advantage": "scale_rewards (zscore -> group, mean -> none, rank -> rank)",
    "log_every": "logging_steps",
    "save_every": "save_steps",
    "keep_checkpoints": "save_total_limit",
    "lr_schedule": "lr_scheduler_type",
    "eval_prompts": "eval_limit",
    "prompts_per_step": _BATCH,
    "batch_size": _BATCH,
    "micro_batch_size": _BATCH,
}
_RENAMED_SFT = {
    **_RENAMED_COMMON,
    "lr": "learning_rate",
    "steps": "max_steps",
    "batch_size": "per_device_train_batch_size",
    "log_every": "logging_steps",
}
_RENAMED_EVAL = {**_RENAMED_COMMON, "batch_size": "per_device_eval_batch_size"}


@dataclass
class CommonConfig:
    output_dir: str = _f("runs/maskgrpo", "Output directory (metrics, plots, checkpoints).")
    seed: int = _f(0, "Seed of every generator the run derives (never the global RNG).")
    device: str = _f("auto", "'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA when available).")
    threads: int = _f(0, "torch CPU threads (command line); 0 = torch's default.")

    def validate(self) -> None:
        check_device(self.device)
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0 (0 = torch's default)")


@dataclass
class SamplingConfig:
    max_completion_length: int = _f(
        0,
        "Completion length in tokens; 0 = a synthetic task's answer length + 1 (EOS), else "
        "256 (the paper's).",
    )
    diffusion_steps: int = _f(
        0, "Total denoising steps of a rollout; 0 = max_completion_length (one per token)."
    )
    block_length: int = _f(
        0, "Semi-autoregressive block length; 0 = max_completion_length (one block)."
    )
    temperature: float = _f(1.0, "Sampling temperature (float64 Gumbel noise); 0 = greedy.")
    remasking: str = _f("low_confidence", f"Which drawn tokens to commit: {', '.join(REMASKING)}.")
    kv_cache: str = _f(
        "none",
        "Block KV cache of the sampler (Fast-dLLM, arXiv 2505.22618): none (exact decoding), "
        "prefix or dual (faster, approximate: see docs/sampling.md).",
    )
    kv_cache_refresh: int = _f(
        0, "Steps between KV-cache refreshes within a block; 0 = once per block."
    )
    parallel_threshold: float = _f(
        0.0,
        "Parallel decoding (Fast-dLLM): commit every masked position of the block whose "
        "confidence reaches this, at least the schedule's pace; low_confidence only; 0 = off.",
    )

    def validate_sampling(self) -> None:
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking={self.remasking!r} is unknown; choose one of {REMASKING}")
        if self.kv_cache not in CACHE_MODES:
            raise ValueError(f"kv_cache={self.kv_cache!r} is unknown; choose one of {CACHE_MODES}")
        if self.kv_cache_refresh < 0:
            raise ValueError(
                f"kv_cache_refresh={self.kv_cache_refresh} must be >= 0 (0 = once per block)"
            )
        if not 0 <= self.parallel_threshold <= 1:
            raise ValueError(
                f"parallel_threshold={self.parallel_threshold} must be in [0, 1] (0 = off)"
            )
        if self.parallel_threshold and self.remasking != "low_confidence":
            raise ValueError(
                f"parallel_threshold applies to remasking=low_confidence, not "
                f"{self.remasking!r}; set parallel_threshold=0 or remasking=low_confidence"
            )
        if not 0 <= self.temperature < float("inf"):  # also rejects NaN
            raise ValueError(f"temperature={self.temperature} must be finite and >= 0 (0 = greedy)")
        for name in ("max_completion_length", "diffusion_steps", "block_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 = automatic)")
        if self.max_completion_length:
            check_blocks(self.max_completion_length, self.block_length, self.diffusion_steps)


def check_blocks(length: int, block_length: int, steps: int) -> None:
    """The semi-autoregressive sampler's shape rules (0 = ``length``), before any model."""
    block, steps = block_length or length, steps or length
    if length % block:
        raise ValueError(
            f"max_completion_length={length} must be a multiple of block_length={block}"
        )
    blocks = length // block
    if steps % blocks or steps // blocks > block:
        raise ValueError(
            f"diffusion_steps={steps} must be a multiple of the {blocks} blocks "
            f"(max_completion_length / block_length) and at most {length}; e.g. "
            f"diffusion_steps={blocks * max(1, min(block, steps // blocks))}"
        )


@dataclass
class LoadConfig:
    """How a model named by hub id or folder is loaded."""

    trust_remote_code: bool = _f(
        False, "Load models that ship their own code (LLaDA, Dream, MMaDA); review it first."
    )
    dtype: str = _f("float32", "Weights dtype of Hugging Face models: float32, bfloat16, float16.")
    mask_token: str = _f(
        "", "Hugging Face models: the mask token's string; empty = found on the tokenizer/config."
    )
    family: str = _f(
        "auto",
        "Hugging Face models: the model family (auto = from config.json; llada, mmada, dream, "
        "generic): logit alignment, padding form, mask token, LoRA preset.",
    )

    def validate_model(self) -> None:
        from .models.registry import family_named

        check_choice(self, "dtype", DTYPES)
        if self.family != "auto":
            family_named(self.family)


@dataclass
class ModelConfig(LoadConfig):
    model: str = _f("tiny", "'tiny' (build the built-in model), a saved model folder, or a hub id.")
    dim: int = _f(128, "Tiny model: width.")
    n_layers: int = _f(4, "Tiny model: transformer blocks.")
    n_heads: int = _f(4, "Tiny model: attention heads.")
    positions: str = _f(
        "learned",
        "Tiny model: 'learned' absolute position embeddings or 'rotary' (RoPE: attention sees "
        "relative offsets, so a rule learned at one position holds at every position).",
    )

    def validate_model(self) -> None:
        from .models.tiny import POSITIONS

        super().validate_model()
        check_choice(self, "positions", POSITIONS)


@dataclass
class ScalingConfig:
    """LoRA, checkpointing and precision."""

    lora_r: int = _f(0, "LoRA rank of Hugging Face models (MaskGRPO: 128); 0 = full fine-tuning.")
    lora_alpha: int = _f(64, "LoRA alpha (MaskGRPO: 64); the update is scaled by alpha / r.")
    lora_targets: str = _f(
        "auto",
        "LoRA target layers: auto (the model family's preset), a preset llada, mmada, dream "
        "or llama, or comma-separated linear-layer names.",
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute each transformer block in backward (less memory, one more forward)."
    )
    mixed_precision: str = _f(
        "no",
        "no or bf16 (bf16 autocast on GPU only; float32 on CPU; log-softmax stays float32).",
    )

    def validate_scaling(self) -> None:
        """LoRA, checkpointing and precision fields (before any model is built)."""
        from .lora import validate_targets
        from .policy import is_tiny_model

        check_choice(self, "mixed_precision", MIXED_PRECISION)
        if self.lora_r < 0:
            raise ValueError(f"lora_r={self.lora_r} must be >= 0 (0 = full fine-tuning)")
        if self.lora_r == 0:
            return
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha={self.lora_alpha} must be positive (MaskGRPO: 64)")
        validate_targets(self.lora_targets)
        model = getattr(self, "model", "")
        if isinstance(model, str) and model and is_tiny_model(model):
            raise ValueError(
                f"lora_r={self.lora_r} needs a Hugging Face model, not model={model!r}; "
                "use --lora-r 0 for the built-in tiny model"
            )


@dataclass
class DataConfig:
    """Where the rows come from (:mod:`maskgrpo.datasets.training`)."""

    dataset: str = _f(
        "running_sums",
        "A built-in dataset (recipes gsm8k, math500, mbpp, humaneval, countdown, sudoku with the "
        "paper's template and rewards; synthetic tasks running_sums, sudoku4), a local "
        ".jsonl/.json/.parquet file, or a Hugging Face hub id (owner/name, online).",
    )
    data_file: str = _f(
        "", "A recipe's rows from this local file (or hub id) instead of its default source."
    )
    dataset_config: str = _f("", "Hub configuration name; empty = the recipe's (e.g. main).")
    dataset_split: str = _f("train", "Split to train on (hub datasets; MBPP's task-id ranges).")
    dataset_columns: list[str] = _f(
        [], "Column renames source=target applied to every row, e.g. problem=question."
    )
    limit: int = _f(0, "Use the first N training rows; 0 = all (generated recipes: 5000).")
    dataset_seed: int = _f(0, "Seed of generated datasets and of the synthetic tasks' split.")

    def validate_data(self) -> None:
        from .datasets.training import check_source

        check_non_negative(self, "limit")
        check_source(self.dataset, self.data_file, field="dataset")
        for item in self.dataset_columns:
            source, sep, target = item.partition("=")
            if not (sep and source and target):
                raise ValueError(
                    f"dataset_columns entry {item!r} is not source=target; e.g. problem=question"
                )


@dataclass
class ImageConfig:
    """Text-to-image runs (``modality=image``): prompts, tokenizer, sampler and reward."""

    modality: str = _f("text", "text, or image (text-to-image over discrete image codes).")
    prompts: str = _f(
        "",
        "Image: a prompts file in GenEval's metadata format (tag, include, exclude, prompt per "
        "line). With the built-in shapes world, a file whose objects the world cannot draw "
        "(GenEval's COCO classes) gives its tag mix to the world's own prompts.",
    )
    image_tokenizer: str = _f(
        "builtin",
        "Image: builtin (the shapes world's exact patch quantizer), a diffusers VQModel folder, "
        "or module:attribute of an object with encode(images)->codes and decode(codes)->images.",
    )
    image_reward: str = _f(
        "geneval",
        "Image: geneval (the GenEval-style pixel reward, partial + full, extra objects "
        "penalised), clip (needs clip_model), an http(s):// reward server URL, or none "
        "(only reward_funcs).",
    )
    clip_model: str = _f("", "Image: CLIP hub id or folder for image_reward=clip.")
    image_sampler: str = _f(
        "emerge", "Image rollouts: emerge (MaskGRPO, arXiv 2510.02880 Sec. 4) or maskgit."
    )
    guidance_scale: float = _f(
        0.0, "Image classifier-free guidance w, (1+w) cond - w uncond (paper: 3-3.5); 0 = off."
    )
    image_heldout_fraction: float = _f(
        0.5, "Image, built-in world: fraction of each tag's prompts held out for evaluation."
    )
    image_size: int = _f(32, "Image, built-in world: image side in pixels.")
    image_snap: int = _f(
        8, "Image, built-in world: one object per snap x snap cell; 0 = free placement."
    )
    image_patch_size: int = _f(8, "Image, built-in quantizer: patch side (one code per patch).")
    codebook_size: int = _f(
        37,
        "Image, built-in quantizer: codes (37 = background + 6 patterns x 6 colours, exact with "
        "8-pixel cells and patches).",
    )

    def validate_image(self) -> None:
        check_choice(self, "modality", MODALITIES)
        check_positive(self, "image_size", "image_patch_size", "codebook_size")
        check_non_negative(self, "image_snap")
        check_choice(self, "image_sampler", IMAGE_SAMPLERS)
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale={self.guidance_scale} must be >= 0 (0 = off)")
        if not 0 < self.image_heldout_fraction < 1:
            raise ValueError(
                f"image_heldout_fraction={self.image_heldout_fraction} must be in (0, 1)"
            )
        reward = self.image_reward
        if reward not in IMAGE_REWARDS and not reward.startswith(("http://", "https://")):
            raise ValueError(
                f"image_reward={reward!r} is unknown; choose one of {IMAGE_REWARDS} or an "
                "http(s):// reward server URL"
            )
        if reward == "clip" and not self.clip_model:
            raise ValueError("image_reward=clip needs --clip-model (a CLIP hub id or folder)")
        if self.modality != "image":
            return
        if not self.prompts:
            raise ValueError(
                "modality=image needs --prompts FILE (GenEval metadata format, e.g. "
                "../shared/data/geneval/evaluation_metadata.jsonl)"
            )
        if not Path(self.prompts).is_file():
            raise ValueError(f"prompts={self.prompts!r} is not a file; pass a GenEval .jsonl")


def with_modality_defaults(cfg: C, modality: str) -> C:
    """``cfg`` with ``gamma=-1`` and ``strategy=auto`` replaced by ``modality``'s values."""
    import dataclasses

    defaults = MODALITY_DEFAULTS[modality]
    changes: dict[str, object] = {}
    if getattr(cfg, "gamma", 0.0) == -1:
        changes["gamma"] = defaults["gamma"]
    if getattr(cfg, "strategy", "") == "auto":
        changes["strategy"] = defaults["strategy"]
    return dataclasses.replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]


@dataclass
class MaskGRPOConfig(CommonConfig, LoadConfig, SamplingConfig, ScalingConfig):
    """MaskGRPO training (arXiv 2510.02880), in TRL's GRPOConfig vocabulary.

    One step = one rollout batch of ``per_device_train_batch_size x gradient_accumulation_steps
    x processes`` completions (``num_generations`` per prompt), followed by ``num_iterations``
    optimizer updates; ``max_steps`` counts these steps (TRL counts optimizer updates).
    """

    RENAMED: ClassVar[dict[str, str]] = _RENAMED_TRAIN

    max_steps: int = _f(
        200, "Training steps; each is one rollout batch and num_iterations optimizer updates."
    )
    per_device_train_batch_size: int = _f(
        128,
        "Rollouts per forward/backward pass on each process; the rollouts of a step number "
        "per_device_train_batch_size x gradient_accumulation_steps x processes.",
    )
    gradient_accumulation_steps: int = _f(
        1, "Micro-batches accumulated into each optimizer update (the update sees every rollout)."
    )
    num_generations: int = _f(
        8, "Rollouts per prompt (G); the paper uses 6 for text, 9 for images."
    )
    num_iterations: int = _f(
        4, "Inner updates per rollout batch (the paper's mu: 12 for text, ~8 for images)."
    )
    gamma: float = _f(
        -1.0,
        "Truncation: inner update j masks r_j = gamma + (1-gamma) j/num_iterations; -1 = the "
        "modality's (paper: 0.6 text, 0.8 images).",
    )
    strategy: str = _f(
        "auto",
        f"Re-masking estimator: {', '.join(REMASKERS)}, or auto = the modality's (paper: fading "
        "for text, random for images).",
    )
    d1_prompt_prob: float = _f(0.15, "d1 estimator: probability of masking each prompt token.")
    epsilon: float = _f(0.2, "Clip range of the importance ratio.")
    epsilon_high: float = _f(-1.0, "Upper clip range (clip-higher, DAPO); < 0 = epsilon.")
    beta: float = _f(0.01, "Weight of the k3 KL to the reference policy (paper: 0.01); 0 = none.")
    scale_rewards: str = _f(
        "group",
        "Advantage scaling: group (divide by the group's std, GRPO), none (centre only, "
        "Dr.GRPO) or rank (centred ranks in [-1, 1]).",
    )
    loss_type: str = _f(
        "dapo",
        "Loss normaliser: dapo (scored tokens of the whole batch), grpo (per sequence, then "
        "over sequences) or dr_grpo (rollouts x max_completion_length).",
    )
    score_after_eos: bool = _f(False, "Also score completion tokens after the first EOS.")
    learning_rate: float = _f(1e-4, "AdamW learning rate (paper: 3e-6 for 8B models with LoRA).")
    lr_scheduler_type: str = _f("constant", "constant, cosine or linear (after warmup).")
    warmup_steps: int = _f(0, "Linear warmup, in optimizer steps.")
    weight_decay: float = _f(0.0, "AdamW weight decay (paper: 0.1).")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.99, "AdamW beta2 (paper: 0.99).")
    max_grad_norm: float = _f(1.0, "Gradient-norm clip (paper: 0.2); <= 0 disables.")
    reward_weights: list[float] = _f(
        [], "One weight per reward function; empty = all 1 (or the recipe's)."
    )
    system_prompt: str = _f(
        "", "System turn of the chat template; empty = the recipe's (none for other datasets)."
    )
    logging_steps: int = _f(1, "Write metrics every N steps.")
    report_to: str = _f("tensorboard", "Also log to: tensorboard (when installed) or none.")
    sample_every: int = _f(25, "Log sample completions every N steps; 0 = never.")
    save_steps: int = _f(0, "Save a checkpoint every N steps; 0 = only at the end.")
    save_total_limit: int = _f(
        3, "Keep the newest N checkpoints in output_dir/checkpoints; 0 = all."
    )
    eval_every: int = _f(
        0, "Evaluate on the held-out rows every N steps and after the last; 0 = never."
    )
    eval_limit: int = _f(200, "Held-out rows per evaluation (the first N).")
    eval_on_start: bool = _f(False, "Also evaluate before the first step (the base policy).")
    per_device_eval_batch_size: int = _f(64, "Prompts per generation batch in evaluations.")
    eval_pass_threshold: float = _f(
        0.0,
        "A held-out completion passes when the first reward reaches this; 0 = its full credit "
        "(the built-in rewards' maximum, else 1.0).",
    )
    max_seconds: float = _f(0.0, "Stop after this wall time (seconds); 0 = no limit.")
    max_nonfinite_skips: int = _f(
        3, "Abort after this many consecutive inner updates with a non-finite loss or grad norm."
    )
    truncate_prompts: bool = _f(
        False, "Keep the last tokens of prompts longer than the model allows (else an error)."
    )
    resume: str = _f(
        "",
        "Resume from a checkpoint: '--resume' alone or 'latest' = the newest in output_dir, or "
        "a checkpoint folder; empty = start fresh.",
        const="latest",
    )
    overwrite: bool = _f(
        False,
        "Start over in an output_dir that holds a run (deletes that run's files).",
        const=True,
    )

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        self.validate_model()
        self.validate_scaling()
        check_positive(self, "max_steps", "per_device_train_batch_size")
        check_positive(self, "gradient_accumulation_steps", "num_generations", "num_iterations")
        check_positive(self, "learning_rate", "logging_steps", "max_nonfinite_skips")
        check_positive(self, "eval_limit", "per_device_eval_batch_size")
        if self.save_total_limit < 0:
            raise ValueError(f"save_total_limit={self.save_total_limit} must be >= 0 (0 = all)")
        check_choice(self, "strategy", ("auto", *REMASKERS.names()))
        check_choice(self, "scale_rewards", ADVANTAGES.config_names())
        check_choice(self, "loss_type", NORMALIZERS.config_names())
        check_choice(self, "lr_scheduler_type", ("constant", "cosine", "linear"))
        check_choice(self, "report_to", REPORT_TO)
        if not (0 <= self.gamma < 1 or self.gamma == -1):
            raise ValueError(
                f"gamma={self.gamma} must be in [0, 1) or -1 (the modality's default); the paper "
                "uses 0.6 for text, 0.8 for images"
            )
        if not (self.epsilon >= 0 and self.beta >= 0):  # also rejects NaN
            raise ValueError(f"epsilon={self.epsilon} and beta={self.beta} must be >= 0")
        self.validate_batch(int(os.environ.get("WORLD_SIZE", "1")))
        check_non_negative(self, "sample_every", "save_steps", "eval_every", "max_seconds")
        check_non_negative(self, "eval_pass_threshold")

    def validate_batch(self, processes: int) -> None:
        """The rollouts of a step must form whole groups of ``num_generations`` (TRL's rule)."""
        total = self.rollouts_per_step(processes)
        if total % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} x "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} x {processes} "
                f"process(es) = {total} rollouts per step is not a multiple of "
                f"num_generations={self.num_generations}; make it one"
            )

    def rollouts_per_step(self, processes: int = 1) -> int:
        """Completions generated per step over ``processes`` processes."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * processes

    def prompts_per_step(self, processes: int = 1) -> int:
        """Prompts per step (each rolled out ``num_generations`` times)."""
        return self.rollouts_per_step(processes) // self.num_generations

    @property
    def advantage_method(self) -> str:
        """``scale_rewards`` as :func:`maskgrpo.grpo.group_advantages` names it."""
        return ADVANTAGES.from_config(self.scale_rewards)

    @property
    def normalization(self) -> str:
        """``loss_type`` as :func:`maskgrpo.grpo.grpo_loss` names it."""
        return NORMALIZERS.from_config(self.loss_type)

    @property
    def epsilon_upper(self) -> float | None:
        """The upper clip range, ``None`` when it equals ``epsilon``."""
        return self.epsilon_high if self.epsilon_high >= 0 else None


@dataclass
class TrainConfig(MaskGRPOConfig, ModelConfig, DataConfig, ImageConfig):
    """MaskGRPO training (arXiv 2510.02880) on a dataset with reward functions.

    The fields of MaskGRPOConfig (TRL's GRPOConfig names), plus the model, the data and the
    rewards. One step = one rollout batch of per_device_train_batch_size x
    gradient_accumulation_steps x processes completions (num_generations per prompt) and
    num_iterations optimizer updates; max_steps counts steps.
    """

    reward_funcs: list[str] = _f(
        [],
        "Reward functions: built-in names and/or module:function (or file.py:function) "
        "references to fn(prompts, completions, **columns); empty = the dataset's.",
    )
    eval_dataset: str = _f(
        "",
        "Held-out rows: a file or hub id (read like the training data), a built-in recipe name "
        "(its test split), or empty = the dataset's own held-out split.",
    )
    eval_data_file: str = _f(
        "", "The held-out recipe's rows from this local file (or hub id), like data_file."
    )
    eval_split: str = _f("test", "Split of the held-out rows (hub datasets; MBPP's task ids).")
    allow_unsafe_code: bool = _f(
        False, "Run code rewards with resource limits only when bubblewrap is unavailable."
    )

    def validate(self) -> None:
        super().validate()
        self.validate_image()
        if self.modality == "image":
            return  # the rows come from --prompts; the dataset fields are the text path's
        self.validate_data()
        from .datasets.training import check_source, is_builtin

        if self.eval_dataset or self.eval_data_file:
            recipe = self.eval_dataset or self.dataset
            check_source(recipe, self.eval_data_file, field="eval_dataset")
        generic = not is_builtin(self.dataset)
        if generic and not self.reward_funcs:
            raise ValueError(
                f"dataset={self.dataset!r} has no default rewards; pass --reward-funcs "
                "module:function (or built-in reward names)"
            )
        if generic and self.eval_every and not self.eval_dataset:
            raise ValueError(
                f"eval_every={self.eval_every} but dataset={self.dataset!r} has no held-out "
                "split; pass --eval-dataset FILE or --eval-every 0"
            )


@dataclass
class SFTConfig(CommonConfig, ModelConfig, DataConfig, ScalingConfig, ImageConfig):
    """Masked-diffusion SFT (the LLaDA/MDLM objective; the prompt is never masked).

    Trains on the dataset's completion column: 'completion', a synthetic task's answer, or a
    recipe's reference solution in the format its rewards read.
    """

    RENAMED: ClassVar[dict[str, str]] = _RENAMED_SFT

    max_steps: int = _f(1500, "Optimizer steps.")
    per_device_train_batch_size: int = _f(64, "Rows per optimizer step.")
    learning_rate: float = _f(1e-3, "Peak AdamW learning rate (after a linear warmup).")
    lr_scheduler_type: str = _f("cosine", "cosine, linear or constant (after warmup).")
    warmup_steps: int = _f(50, "Linear warmup steps.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    min_mask_ratio: float = _f(0.0, "Lower bound of the per-row mask ratio t ~ U(min, 1).")
    max_completion_length: int = _f(
        0,
        "Completion tokens (the answer, then EOS); 0 = a synthetic task's answer length + 1, "
        "else 256. Rows whose completion does not fit are dropped (and counted).",
    )
    system_prompt: str = _f(
        "", "System turn of the chat template; empty = the recipe's (none for other datasets)."
    )
    logging_steps: int = _f(50, "Log the loss every N steps.")
    resume: str = _f(
        "",
        "Resume an interrupted SFT run: '--resume' alone or 'latest' = the newest checkpoint in "
        "output_dir, or a checkpoint folder; empty = start fresh.",
        const="latest",
    )
    overwrite: bool = _f(
        False,
        "Start over in an output_dir that holds a run (deletes that run's files).",
        const=True,
    )

    def validate(self) -> None:
        super().validate()
        self.validate_model()
        self.validate_scaling()
        self.validate_image()
        if self.modality != "image":
            self.validate_data()
        check_positive(self, "max_steps", "per_device_train_batch_size", "learning_rate")
        check_positive(self, "logging_steps")
        check_non_negative(self, "max_completion_length")
        check_choice(self, "lr_scheduler_type", ("constant", "cosine", "linear"))
        if not 0 <= self.min_mask_ratio < 1:
            raise ValueError(f"min_mask_ratio={self.min_mask_ratio} must be in [0, 1)")


@dataclass
class GenerateConfig(CommonConfig, ModelConfig, SamplingConfig):
    """Generate completions for prompts with a saved model."""

    RENAMED: ClassVar[dict[str, str]] = _RENAMED_COMMON

    dataset: str = _f("running_sums", "Synthetic task whose held-out prompts are the default.")
    dataset_seed: int = _f(0, "Seed of the task's train/held-out split.")
    prompts: list[str] = _f(
        [], "Prompts to complete; empty = the first held-out prompts of the task."
    )
    num_prompts: int = _f(8, "Held-out prompts to use when no prompts are given.")
    samples: int = _f(1, "Completions per prompt.")

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        self.validate_model()
        check_synthetic(self.dataset)
        check_positive(self, "num_prompts", "samples")


@dataclass
class EvalConfig(CommonConfig, ModelConfig, SamplingConfig):
    """Held-out accuracy of a saved model on a synthetic task, or pass@k on a benchmark."""

    RENAMED: ClassVar[dict[str, str]] = _RENAMED_EVAL

    dataset: str = _f(
        "running_sums",
        "A synthetic task (running_sums, sudoku4: held-out accuracy) or a benchmark: gsm8k, "
        "math500, mbpp, humaneval, countdown or sudoku (pass@k; MaskGRPO, arXiv 2510.02880).",
    )
    dataset_seed: int = _f(0, "Seed of the synthetic split and of generated benchmarks.")
    num_prompts: int = _f(1000, "Held-out prompts to evaluate (at most the held-out set).")
    per_device_eval_batch_size: int = _f(
        256, "Sequences per generation batch (prompts x samples for benchmarks)."
    )
    data_file: str = _f(
        "", "Local .jsonl/.json/.parquet rows of a benchmark; empty = its hub default (online)."
    )
    limit: int = _f(0, "Evaluate the first N rows; 0 = all (countdown/sudoku: num_prompts).")
    samples: int = _f(1, "Completions per prompt (the n of pass@k).")
    k: list[int] = _f([1], "k values of the unbiased pass@k (each <= samples).")
    few_shot: int = _f(0, "Worked examples before each question (from --few-shot-file).")
    few_shot_file: str = _f("", "Rows the few-shot examples are taken from (file datasets).")
    template: str = _f("", "Prompt template name; empty = the dataset's (e.g. gsm8k-boxed).")
    system_prompt: str = _f("", "System turn of the chat template; empty = the template's.")
    allow_unsafe_code: bool = _f(
        False, "Run code rewards with resource limits only when bubblewrap is unavailable."
    )

    @property
    def is_benchmark(self) -> bool:
        from .tasks import TASKS

        return self.dataset not in TASKS

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        self.validate_model()
        check_positive(self, "num_prompts", "per_device_eval_batch_size", "samples")
        if self.is_benchmark:
            self.validate_benchmark()

    def validate_benchmark(self) -> None:
        from .datasets.benchmarks import BENCHMARKS, GENERATED, TEMPLATES
        from .tasks import TASKS

        if self.dataset not in BENCHMARKS:
            raise ValueError(
                f"dataset={self.dataset!r} is unknown; choose a synthetic task {sorted(TASKS)} "
                f"or a benchmark {list(BENCHMARKS)}"
            )
        if self.template and self.template not in TEMPLATES:
            raise ValueError(f"template={self.template!r}; choose one of {sorted(TEMPLATES)}")
        if self.dataset in GENERATED and self.data_file:
            raise ValueError(
                f"dataset={self.dataset!r} is generated from --dataset-seed; drop "
                f"--data-file {self.data_file!r}"
            )
        if self.dataset == "math500" and not self.data_file:
            raise ValueError("dataset='math500' has no default source; pass --data-file rows.jsonl")
        if self.limit < 0 or self.few_shot < 0:
            raise ValueError(f"limit={self.limit} and few_shot={self.few_shot} must be >= 0")
        if self.few_shot and not self.few_shot_file and self.dataset not in GENERATED:
            raise ValueError(
                f"few_shot={self.few_shot} needs --few-shot-file (e.g. the train split)"
            )
        bad = [k for k in self.k if not 1 <= k <= self.samples]
        if not self.k or bad:
            raise ValueError(
                f"k={self.k} must be non-empty with 1 <= k <= samples={self.samples}; "
                "raise --samples or drop those k"
            )


@dataclass
class DemoConfig(CommonConfig):
    """SFT a tiny model to a partly-correct base, then MaskGRPO; accuracy before and after."""

    RENAMED: ClassVar[dict[str, str]] = {
        "out_dir": "output_dir",
        "task": _TASK,
        "task_seed": "dataset_seed",
    }

    output_dir: str = _f("runs/demo", "Output directory.")
    threads: int = _f(1, "torch CPU threads; the tiny model is fastest on one (0 = one per core).")
    dataset: str = _f("running_sums", "Synthetic task of the text demo: running_sums or sudoku4.")
    dataset_seed: int = _f(0, "Seed of the task's train/held-out split.")
    estimator: str = _f("fading", f"Re-masking estimator for GRPO: {', '.join(REMASKERS)}.")
    modality: str = _f(
        "text",
        "text (running sums, fading-out masking) or image (synthetic GenEval world, emerge "
        "sampler, random re-masking at truncation 0.8).",
    )
    sft_target: float = _f(0.2, "SFT stops once greedy accuracy on 500 train prompts reaches this.")
    sft_max_steps: int = _f(4000, "Upper bound on SFT steps.")
    grpo_steps: int = _f(0, "Upper bound on MaskGRPO steps; 0 = text 600, image 1000.")
    gamma: float = _f(0.6, "Truncation of the mask ratios (MaskGRPO: 0.6 for text).")
    eval_prompts: int = _f(
        0,
        "Held-out evaluations before and after; 0 = the modality's default (text: 1000 "
        "prompts, greedy; image: 2000 images covering every held-out prompt).",
    )
    max_seconds: float = _f(
        0.0,
        "Optional wall-time budget of the whole demo (seconds): MaskGRPO then gets what SFT and "
        "evaluation leave, and the summary says when it cut the run short; 0 = none (the fixed "
        "grpo_steps, so results do not depend on the machine's load).",
    )
    image_sampler: str = _f(
        "emerge", "Image rollouts: emerge (MaskGRPO, arXiv 2510.02880 Sec. 4) or maskgit."
    )
    guidance_scale: float = _f(
        0.0, "Image classifier-free guidance w, (1+w) cond - w uncond (paper: 3-3.5); 0 = off."
    )
    kv_cache: str = _f(
        "none",
        "Text: block KV cache of the MaskGRPO rollouts (none, prefix, dual); the "
        "before/after evaluations always decode exactly.",
    )
    parallel_threshold: float = _f(
        0.0, "Text: parallel decoding threshold of the MaskGRPO rollouts; 0 = off."
    )

    def validate(self) -> None:
        super().validate()
        check_synthetic(self.dataset)
        if self.kv_cache not in CACHE_MODES:
            raise ValueError(f"kv_cache={self.kv_cache!r} is unknown; choose one of {CACHE_MODES}")
        if not 0 <= self.parallel_threshold <= 1:
            raise ValueError(
                f"parallel_threshold={self.parallel_threshold} must be in [0, 1] (0 = off)"
            )
        if self.estimator not in REMASKERS:
            raise ValueError(f"estimator={self.estimator!r}; choose one of {REMASKERS.names()}")
        if self.modality not in ("text", "image"):
            raise ValueError(f"modality={self.modality!r}; choose text or image")
        if not 0 < self.sft_target <= 1:
            raise ValueError(f"sft_target={self.sft_target} must be in (0, 1]")
        check_positive(self, "sft_max_steps")
        check_non_negative(self, "grpo_steps", "eval_prompts")
        if not self.max_seconds >= 0:
            raise ValueError(f"max_seconds={self.max_seconds} must be >= 0 (0 = no limit)")

    @property
    def eval_count(self) -> int:
        """``eval_prompts``, or the modality's default when it is 0."""
        return self.eval_prompts or (1000 if self.modality == "text" else 2000)

    @property
    def step_count(self) -> int:
        """``grpo_steps``, or the modality's default when it is 0."""
        return self.grpo_steps or (600 if self.modality == "text" else 1000)

    @property
    def budget_seconds(self) -> float:
        """``max_seconds`` (0 = no limit)."""
        return self.max_seconds


def check_synthetic(name: str) -> None:
    """``name`` must be a synthetic task (the commands that build the tiny model from its
    alphabet without a dataset)."""
    from .tasks import TASKS

    if name not in TASKS:
        raise ValueError(
            f"dataset={name!r} is unknown here; choose a synthetic task {sorted(TASKS)}"
        )


def is_local_file(source: str) -> bool:
    """A path to an existing file, or a name with a local data suffix."""
    return Path(source).is_file() or source.endswith(LOCAL_SUFFIXES)
