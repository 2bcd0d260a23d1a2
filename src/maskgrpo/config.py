"""Typed configs, one per command, loadable from YAML and overridable from the command line.

Every field carries a help string (shown by ``maskgrpo <command> --help``); validation runs
before any model is built and raises ``ValueError`` naming the bad value and the fix. Options
that encode a research choice cite MaskGRPO (arXiv 2510.02880).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .grpo import ADVANTAGE_METHODS, NORMALIZATIONS
from .masking import STRATEGIES
from .sampling.llada import CACHE_MODES, REMASKING
from .user_input import check_device, read_config_file

__all__ = [
    "DemoConfig",
    "EvalConfig",
    "GenerateConfig",
    "SFTConfig",
    "TrainConfig",
    "add_config_arguments",
    "config_from_args",
    "load_config",
]

C = TypeVar("C")

DTYPES = ("float32", "bfloat16", "float16")
MIXED_PRECISION = ("no", "bf16")


def _f(default: Any, help: str, *, const: Any = None, **kw: Any) -> Any:
    """A field with its help string; ``const`` lets ``--flag`` alone stand for that value."""
    meta = {"help": help} if const is None else {"help": help, "const": const}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class CommonConfig:
    out_dir: str = _f("runs/maskgrpo", "Output directory (metrics, plots, checkpoints).")
    seed: int = _f(0, "Seed of every generator the run derives (never the global RNG).")
    device: str = _f("auto", "'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA when available).")
    task: str = _f("running_sums", "Synthetic task: running_sums (left-to-right) or sudoku4.")
    task_seed: int = _f(0, "Seed of the task's train/held-out split.")
    threads: int = _f(0, "torch CPU threads; 0 = torch's default (one per core).")

    def validate(self) -> None:
        from .tasks import TASKS

        check_device(self.device)
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0 (0 = torch's default)")
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is unknown; choose one of {sorted(TASKS)}")


@dataclass
class SamplingConfig:
    gen_length: int = _f(0, "Completion length in tokens; 0 = the task's answer length + 1 (EOS).")
    diffusion_steps: int = _f(
        0, "Total denoising steps of a rollout; 0 = gen_length (one per token)."
    )
    block_length: int = _f(0, "Semi-autoregressive block length; 0 = gen_length (one block).")
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
        for name in ("gen_length", "diffusion_steps", "block_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 = automatic)")


@dataclass
class ModelConfig:
    model: str = _f("tiny", "'tiny' (build the built-in model), a saved model folder, or a hub id.")
    dim: int = _f(128, "Tiny model: width.")
    n_layers: int = _f(4, "Tiny model: transformer blocks.")
    n_heads: int = _f(4, "Tiny model: attention heads.")
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

        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown; choose one of {list(DTYPES)}")
        if self.family != "auto":
            family_named(self.family)


@dataclass
class SFTConfig(CommonConfig, ModelConfig):
    """Masked-diffusion SFT (the LLaDA/MDLM objective; the prompt is never masked)."""

    steps: int = _f(1500, "Optimizer steps.")
    batch_size: int = _f(64, "Rows per step.")
    lr: float = _f(1e-3, "Peak AdamW learning rate (linear warmup, cosine decay).")
    warmup_steps: int = _f(50, "Linear warmup steps.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    min_mask_ratio: float = _f(0.0, "Lower bound of the per-row mask ratio t ~ U(min, 1).")
    log_every: int = _f(50, "Log the loss every N steps.")
    resume: str = _f(
        "",
        "Resume an interrupted SFT run: '--resume' alone or 'latest' = the newest checkpoint in "
        "out_dir, or a checkpoint folder; empty = start fresh.",
        const="latest",
    )
    overwrite: bool = _f(
        False, "Start over in an out_dir that holds a run (deletes that run's files).", const=True
    )

    def validate(self) -> None:
        super().validate()
        self.validate_model()
        _positive(self, "steps", "batch_size", "lr", "log_every")
        if not 0 <= self.min_mask_ratio < 1:
            raise ValueError(f"min_mask_ratio={self.min_mask_ratio} must be in [0, 1)")


@dataclass
class TrainConfig(CommonConfig, ModelConfig, SamplingConfig):
    """MaskGRPO training (arXiv 2510.02880)."""

    steps: int = _f(200, "Training steps (one rollout batch each).")
    prompts_per_step: int = _f(16, "Prompts per step; each is rolled out group_size times.")
    group_size: int = _f(8, "Rollouts per prompt (G); the paper uses 6 for text, 9 for images.")
    batch_size: int = _f(
        0, "Rollouts per step; 0 = prompts_per_step * group_size. Must divide by G."
    )
    mu: int = _f(4, "Inner iterations per rollout batch (paper: 12 for text, ~8 for images).")
    gamma: float = _f(
        0.6, "Truncation: view j masks r_j = gamma + (1-gamma) j/mu (paper: 0.6 text)."
    )
    strategy: str = _f("fading", f"Re-masking estimator: {', '.join(STRATEGIES)} (paper: fading).")
    d1_prompt_prob: float = _f(0.15, "d1 estimator: probability of masking each prompt token.")
    eps: float = _f(0.2, "Clip range of the importance ratio.")
    eps_high: float = _f(-1.0, "Upper clip range (clip-higher); < 0 = same as eps.")
    beta: float = _f(0.01, "Weight of the k3 KL to the reference policy (paper: 0.01); 0 = none.")
    advantage: str = _f("zscore", f"Group advantage: {', '.join(ADVANTAGE_METHODS)}.")
    normalization: str = _f(
        "token", f"Loss normaliser: {', '.join(NORMALIZATIONS)} (constant = Dr.GRPO)."
    )
    score_after_eos: bool = _f(False, "Also score completion tokens after the first EOS.")
    lr: float = _f(1e-4, "AdamW learning rate (paper: 3e-6 for 8B models with LoRA).")
    lr_schedule: str = _f("constant", "constant, cosine or linear (after warmup).")
    warmup_steps: int = _f(0, "Linear warmup, in optimizer steps.")
    weight_decay: float = _f(0.0, "AdamW weight decay (paper: 0.1).")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.99, "AdamW beta2 (paper: 0.99).")
    max_grad_norm: float = _f(1.0, "Gradient-norm clip (paper: 0.2); <= 0 disables.")
    micro_batch_size: int = _f(0, "Rows per forward pass (gradient accumulation); 0 = whole batch.")
    reward_weights: list[float] = _f([], "One weight per reward function; empty = the task's.")
    log_every: int = _f(1, "Write metrics every N steps.")
    sample_every: int = _f(25, "Log sample completions every N steps; 0 = never.")
    save_every: int = _f(0, "Save a checkpoint every N steps; 0 = only at the end.")
    eval_every: int = _f(0, "Evaluate on held-out prompts every N steps; 0 = never.")
    eval_prompts: int = _f(200, "Held-out prompts per periodic evaluation.")
    max_seconds: float = _f(0.0, "Stop after this wall time (seconds); 0 = no limit.")
    keep_checkpoints: int = _f(3, "Keep the newest N checkpoints in out_dir/checkpoints; 0 = all.")
    max_nonfinite_skips: int = _f(
        3, "Abort after this many consecutive inner updates with a non-finite loss or grad norm."
    )
    truncate_prompts: bool = _f(
        False, "Keep the last tokens of prompts longer than the model allows (else an error)."
    )
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
    resume: str = _f(
        "",
        "Resume from a checkpoint: '--resume' alone or 'latest' = the newest in out_dir, or a "
        "checkpoint folder; empty = start fresh.",
        const="latest",
    )
    overwrite: bool = _f(
        False, "Start over in an out_dir that holds a run (deletes that run's files).", const=True
    )

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        _positive(self, "steps", "prompts_per_step", "group_size", "mu", "lr", "log_every")
        _positive(self, "max_nonfinite_skips")
        self.validate_model()
        self.validate_scaling()
        if self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints={self.keep_checkpoints} must be >= 0 (0 = all)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r} is unknown; choose one of {STRATEGIES}")
        if self.advantage not in ADVANTAGE_METHODS:
            raise ValueError(f"advantage={self.advantage!r}; choose one of {ADVANTAGE_METHODS}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization={self.normalization!r}; choose one of {NORMALIZATIONS}"
            )
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; choose constant, cosine or linear")
        if not 0 <= self.gamma < 1:
            raise ValueError(f"gamma={self.gamma} must be in [0, 1); the paper uses 0.6 for text")
        if self.eps < 0 or self.beta < 0:
            raise ValueError(f"eps={self.eps} and beta={self.beta} must be >= 0")
        if self.batch_size and self.batch_size % self.group_size:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by group_size={self.group_size}; "
                f"use a multiple of {self.group_size} (or 0 for prompts_per_step * group_size)"
            )
        _non_negative(self, "sample_every", "save_every", "eval_every", "max_seconds")
        _positive(self, "eval_prompts")
        if self.micro_batch_size < 0:
            raise ValueError(f"micro_batch_size={self.micro_batch_size} must be >= 0")
        if self.reward_weights:  # checked here so the error comes before any model is built
            from .tasks import make_task

            names = [f.__name__ for f in make_task(self.task, seed=self.task_seed).rewards]
            if len(self.reward_weights) != len(names):
                raise ValueError(
                    f"reward_weights={self.reward_weights} has {len(self.reward_weights)} values "
                    f"but task {self.task} has {len(names)} reward functions {names}"
                )

    def validate_scaling(self) -> None:
        """LoRA, checkpointing and precision fields (before any model is built)."""
        from .lora import validate_targets
        from .policy import is_tiny_model

        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision={self.mixed_precision!r}; choose one of {MIXED_PRECISION}"
            )
        if self.lora_r < 0:
            raise ValueError(f"lora_r={self.lora_r} must be >= 0 (0 = full fine-tuning)")
        if self.lora_r == 0:
            return
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha={self.lora_alpha} must be positive (MaskGRPO: 64)")
        validate_targets(self.lora_targets)
        if is_tiny_model(self.model):
            raise ValueError(
                f"lora_r={self.lora_r} needs a Hugging Face model, not model={self.model!r}; "
                "use --lora-r 0 for the built-in tiny model"
            )

    @property
    def rollouts(self) -> int:
        return self.batch_size or self.prompts_per_step * self.group_size


@dataclass
class GenerateConfig(CommonConfig, ModelConfig, SamplingConfig):
    """Generate completions for prompts with a saved model."""

    prompts: list[str] = _f(
        [], "Prompts to complete; empty = the first held-out prompts of the task."
    )
    num_prompts: int = _f(8, "Held-out prompts to use when no prompts are given.")
    samples: int = _f(1, "Completions per prompt.")

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        self.validate_model()
        _positive(self, "num_prompts", "samples")


@dataclass
class EvalConfig(CommonConfig, ModelConfig, SamplingConfig):
    """Held-out accuracy of a saved model on a task, or pass@k on a benchmark (--dataset)."""

    num_prompts: int = _f(1000, "Held-out prompts to evaluate (at most the held-out set).")
    batch_size: int = _f(256, "Sequences per generation batch (prompts x samples for --dataset).")
    dataset: str = _f(
        "",
        "Benchmark: gsm8k, math500, mbpp, humaneval, countdown or sudoku (MaskGRPO, arXiv "
        "2510.02880); empty = the synthetic --task.",
    )
    data_file: str = _f(
        "", "Local .jsonl/.json/.parquet rows of --dataset; empty = its hub default (online)."
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

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        self.validate_model()
        _positive(self, "num_prompts", "batch_size", "samples")
        if self.dataset:
            self.validate_benchmark()

    def validate_benchmark(self) -> None:
        from .evaluation.benchmark import BENCHMARKS, GENERATED, TEMPLATES

        if self.dataset not in BENCHMARKS:
            raise ValueError(
                f"dataset={self.dataset!r} is unknown; choose one of {list(BENCHMARKS)}"
            )
        if self.template and self.template not in TEMPLATES:
            raise ValueError(f"template={self.template!r}; choose one of {sorted(TEMPLATES)}")
        if self.dataset in GENERATED and self.data_file:
            raise ValueError(
                f"dataset={self.dataset!r} is generated from --task-seed; drop "
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

    out_dir: str = _f("runs/demo", "Output directory.")
    threads: int = _f(1, "torch CPU threads; the tiny model is fastest on one (0 = one per core).")
    estimator: str = _f("fading", f"Re-masking estimator for GRPO: {', '.join(STRATEGIES)}.")
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
        -1.0,
        "Wall-time budget of the whole demo (seconds); MaskGRPO gets what is left; 0 = none; "
        "-1 = text 540, image 780.",
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
        if self.kv_cache not in CACHE_MODES:
            raise ValueError(f"kv_cache={self.kv_cache!r} is unknown; choose one of {CACHE_MODES}")
        if not 0 <= self.parallel_threshold <= 1:
            raise ValueError(
                f"parallel_threshold={self.parallel_threshold} must be in [0, 1] (0 = off)"
            )
        if self.estimator not in STRATEGIES:
            raise ValueError(f"estimator={self.estimator!r}; choose one of {STRATEGIES}")
        if self.modality not in ("text", "image"):
            raise ValueError(f"modality={self.modality!r}; choose text or image")
        if not 0 < self.sft_target <= 1:
            raise ValueError(f"sft_target={self.sft_target} must be in (0, 1]")
        _positive(self, "sft_max_steps")
        _non_negative(self, "grpo_steps", "eval_prompts")
        if not (self.max_seconds >= 0 or self.max_seconds == -1):
            raise ValueError(
                f"max_seconds={self.max_seconds} must be >= 0 (0 = no limit) or -1 (the default)"
            )

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
        """``max_seconds``, or the modality's default when it is -1 (0 = no limit)."""
        if self.max_seconds == -1:
            return 540.0 if self.modality == "text" else 780.0
        return self.max_seconds


def _non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) >= 0:  # also rejects NaN
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 0 (0 = off)")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:  # also rejects NaN
            raise ValueError(f"{name}={getattr(cfg, name)} must be positive")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A YAML value as its field's type (YAML 1.1 reads ``1e-4`` as a string), else an error."""
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ValueError(f"{name}={value!r} must be a list")
        return [_coerce(name, v, typing.get_args(hint)[0]) for v in value]
    if isinstance(value, bool) and hint is not bool:
        raise ValueError(f"{name}={value!r} must be of type {getattr(hint, '__name__', hint)}")
    if hint is float and isinstance(value, int | str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} must be a number") from None
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise ValueError(f"{name}={value!r} must be of type {hint.__name__}")
    return value


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build ``cls`` from a YAML file and keyword overrides, then validate it."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_config_file(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; see --help for the fields")
    cfg = cls(**{k: _coerce(k, v, _hints(cls)[k]) for k, v in values.items()})
    cfg.validate()  # type: ignore[attr-defined]
    return cfg


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field`` option per dataclass field, defaulting to None (= keep YAML/default)."""
    parser.add_argument("--config", help="YAML file of fields; command-line options override it.")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        origin = typing.get_origin(hint)
        if origin in (list, types.GenericAlias) or origin is list:
            (item,) = typing.get_args(hint)
            parser.add_argument(flag, dest=f.name, type=item, nargs="*", help=help_text)
        elif hint is bool:  # '--flag' alone means true
            parser.add_argument(
                flag, dest=f.name, type=_parse_bool, nargs="?", const=True, metavar="BOOL",
                help=help_text,
            )  # fmt: skip
        elif "const" in f.metadata:
            const = f.metadata["const"]
            parser.add_argument(
                flag, dest=f.name, type=hint, nargs="?", const=const, help=help_text
            )
        else:
            parser.add_argument(flag, dest=f.name, type=hint, help=help_text)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return load_config(cls, getattr(args, "config", None), **overrides)
