"""Entry points behind the command line: SFT, MaskGRPO training, generation, evaluation.

Each takes one validated config and writes its outputs under ``cfg.output_dir``. The demo chains
them (see :mod:`maskgrpo.recipes.text_demo`). ``model`` is the built-in tiny model, a saved tiny-model folder,
or a Hugging Face hub id / folder (:mod:`maskgrpo.trainer.hf_setup`). Under ``accelerate launch``
training runs on every process and only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..config import EvalConfig, GenerateConfig, ModelConfig, SamplingConfig, SFTConfig, TrainConfig
from ..datasets.training import TrainingData, load_training_data
from ..lora import autocast_context, is_lora
from ..modalities.base import SamplerSettings
from ..modalities.hf_text import HFTextModality
from ..modalities.text import TextModality
from ..models.tiny import TinyDiffusionLM
from ..policy import Policy, is_tiny_model, load_policy, resolve_device, save_policy
from ..rewards.combine import RewardSet
from ..rng import derive_generator
from ..tasks import SyntheticTask, make_task
from . import distributed as dist
from .checkpoint import read_trainer_state, reconcile_config, resolve_checkpoint
from .evaluate import TaskEval, evaluate_task
from .grpo import sampler_settings
from .grpo_trainer import DEFAULT_COMPLETION_LENGTH, MaskGRPOTrainer
from .hf_setup import load_for_task, lora_resume, save_state
from .model_setup import new_tiny
from .outputs import RunLogger, prepare_output_dir
from .reward_funcs import make_reward_set, resolve_reward_funcs
from .sft_checkpoint import resumable_sft

__all__ = [
    "new_tiny_policy",
    "resolve_defaults",
    "reward_sets",
    "run_eval",
    "run_generate",
    "run_sft",
    "run_train",
    "setup",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
    task: SyntheticTask
    policy: Policy
    modality: TextModality | HFTextModality
    settings: SamplerSettings
    device: torch.device


def setup(
    cfg: ModelConfig,
    *,
    seed: int,
    task_name: str,
    task_seed: int,
    device_name: str,
    sampling: SamplingConfig | None,
) -> Setup:
    """Task, policy, modality and sampler settings; checks the sequence fits the model."""
    task = make_task(task_name, seed=task_seed)
    device = resolve_device(device_name)
    if not is_tiny_model(cfg.model):
        policy, hf_modality, answer_tokens = load_for_task(
            cfg, task, device, sampling.max_completion_length if sampling else 0
        )
        settings = sampler_settings_from(sampling or SamplingConfig(temperature=0.0), answer_tokens)
        return Setup(task, policy, hf_modality, settings, device)
    gen_length = (sampling.max_completion_length if sampling else 0) or task.answer_chars + 1
    if gen_length <= task.answer_chars:
        raise ValueError(
            f"max_completion_length={gen_length} cannot hold the {task.name} answer "
            f"({task.answer_chars} tokens) plus EOS; use max_completion_length >= "
            f"{task.answer_chars + 1} or 0"
        )
    max_length = task.max_prompt_chars + gen_length
    policy = load_policy(
        cfg.model,
        alphabet=task.alphabet,
        max_length=max_length,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        positions=cfg.positions,
        device=device,
        init_generator=derive_generator(seed, "init"),
    )
    limit = getattr(getattr(policy.model, "config", None), "max_length", None)
    if limit is not None and max_length > limit:
        raise ValueError(
            f"prompt ({task.max_prompt_chars}) + max_completion_length ({gen_length}) = "
            f"{max_length} tokens exceed the model's max_length={limit}; lower "
            "max_completion_length"
        )
    modality = TextModality(policy.tokenizer, policy.spec, prompt_width=task.max_prompt_chars)
    settings = SamplerSettings(gen_length, gen_length, gen_length, 0.0, "low_confidence")
    if sampling is not None:
        settings = sampler_settings_from(sampling, task.answer_chars)
    return Setup(task, policy, modality, settings, device)


def sampler_settings_from(cfg: SamplingConfig, answer_tokens: int) -> SamplerSettings:
    return sampler_settings(cfg, answer_tokens)  # type: ignore[arg-type]


def _write_yaml(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Masked-diffusion SFT on the dataset's completion column; saves ``<output_dir>/model``.

    The built-in tiny model (new, or a saved folder) or a Hugging Face model (full fine-tuning,
    or LoRA merged into the weights before saving, so the folder loads as ``--model``).
    ``cfg.resume`` continues an interrupted run exactly; SIGINT/SIGTERM stop it with a
    checkpoint (:class:`~.interrupt.TrainingInterrupted`).
    """
    from .sft_data import load_sft_policy, sft_batches

    if cfg.modality == "image":
        from .image_run import run_image_sft

        return run_image_sft(cfg)
    data = load_training_data(cfg, need_eval=False, sft=True)
    out = Path(cfg.output_dir)
    prepare_output_dir(out, resume=bool(cfg.resume), overwrite=cfg.overwrite)
    gen_length = cfg.max_completion_length or _default_length(data)
    policy, device = load_sft_policy(cfg, data, gen_length)
    batches = sft_batches(cfg, data, policy, gen_length=gen_length, device=device)
    saved_cfg = dataclasses.replace(cfg, resume="", overwrite=False)
    _write_yaml(saved_cfg, out / "sft_config.yaml")
    logger = RunLogger(out, tensorboard=False)
    bar = tqdm(total=cfg.max_steps, desc="sft", disable=None)

    def on_log(step: int, loss: float) -> None:
        logger.log({"step": step, "sft_loss": loss})
        bar.update(cfg.logging_steps)
        bar.set_postfix(loss=f"{loss:.3f}")

    def on_resume(step: int) -> None:
        logger.truncate(step)
        bar.update(step - step % cfg.logging_steps)

    def write_model(folder: Path) -> None:  # model.safetensors, as the checkpoint loads it
        if isinstance(policy.model, TinyDiffusionLM):
            save_policy(policy, folder)  # the folder also loads as a model
        else:
            save_state(policy.model, folder)  # with LoRA: the adapter's tensors

    t0 = time.time()
    try:
        with autocast_context(device, cfg.mixed_precision):
            losses = resumable_sft(
                policy.model, batches, batches.loss, out=out, resume=cfg.resume,
                config=dataclasses.asdict(saved_cfg), write_model=write_model,
                steps=cfg.max_steps, lr=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                weight_decay=cfg.weight_decay, schedule=cfg.lr_scheduler_type,
                log_every=cfg.logging_steps, on_log=on_log, on_resume=on_resume,
            )  # fmt: skip
    finally:
        bar.close()
        logger.close()
    if is_lora(policy.model):  # a complete model folder, loadable as --model for train
        policy.model = policy.model.merge_and_unload()  # type: ignore[operator]
    save_policy(policy, out / "model")
    return {
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds": time.time() - t0,
        "rows": batches.rows,
        "dropped_rows": batches.dropped,
        "model": str(out / "model"),
    }


def _default_length(data: TrainingData) -> int:
    """A synthetic task's answer plus EOS; the paper's 256 otherwise."""
    return data.answer_tokens + 1 if data.answer_tokens else DEFAULT_COMPLETION_LENGTH


def run_train(cfg: TrainConfig, *, policy: Policy | None = None) -> dict[str, Any]:
    """MaskGRPO on ``cfg.dataset`` through :class:`MaskGRPOTrainer`; returns ``summary.json``.

    Data, rewards and config are checked before the model is built. ``policy`` replaces
    ``cfg.model`` (a model already in memory). With ``cfg.resume`` the run continues exactly
    where its checkpoint stopped; SIGINT/SIGTERM stop it with a checkpoint
    (:class:`TrainingInterrupted`).
    """
    if cfg.modality == "image":  # the image set-up, then the same trainer
        from .image_run import run_image_train

        return run_image_train(cfg)
    if policy is None:  # --resume <LoRA output folder>: a new run continuing its adapter
        _, cfg = lora_resume(cfg, cfg.model)
    data = load_training_data(cfg, need_eval=bool(cfg.eval_every))
    cfg = resolve_defaults(cfg, data, tiny=policy is None and is_tiny_model(cfg.model))
    rewards, eval_rewards = reward_sets(cfg, data)
    dist.accelerator()  # joins an accelerate launch's process group (is_main needs it)
    if dist.is_main():  # refused before the model loads; the trainer checks again at train()
        prepare_output_dir(cfg.output_dir, resume=bool(cfg.resume), overwrite=cfg.overwrite)
    if cfg.resume:  # the checkpoint's seed builds the model, as in the interrupted run
        folder = resolve_checkpoint(cfg.resume, Path(cfg.output_dir))
        cfg = reconcile_config(cfg, read_trainer_state(folder)["config"], folder)
    model: Any = policy.model if policy is not None else cfg.model
    tokenizer = policy.tokenizer if policy is not None else None
    if policy is None and cfg.model == "tiny":
        built = new_tiny_policy(cfg, data)
        model, tokenizer = built.model, built.tokenizer
    trainer = MaskGRPOTrainer(
        model, rewards, args=cfg, train_dataset=data.train,
        eval_dataset=data.eval or None, processing_class=tokenizer,
        eval_reward_funcs=eval_rewards,
    )  # fmt: skip
    return trainer.train().metrics


def resolve_defaults(cfg: TrainConfig, data: TrainingData, *, tiny: bool) -> TrainConfig:
    """``cfg`` with the dataset's defaults written in: completion length and system prompt."""
    length = cfg.max_completion_length or _default_length(data)
    if tiny and data.answer_tokens and length <= data.answer_tokens:
        raise ValueError(
            f"max_completion_length={length} cannot hold the {data.name} answer "
            f"({data.answer_tokens} tokens) plus EOS; use max_completion_length >= "
            f"{data.answer_tokens + 1} or 0"
        )
    return dataclasses.replace(
        cfg, max_completion_length=length, system_prompt=cfg.system_prompt or data.system_prompt
    )


def reward_sets(cfg: TrainConfig, data: TrainingData) -> tuple[RewardSet, RewardSet | None]:
    """The training rewards (``--reward-funcs`` or the dataset's) and the held-out rows' own."""
    columns = sorted({k for r in data.train for k in r} - {"prompt"})
    own = data.rewards or ([], [])
    if cfg.reward_funcs:
        funcs = resolve_reward_funcs(
            cfg.reward_funcs, dataset_rewards=own[0], allow_unsafe=cfg.allow_unsafe_code
        )
        weights: list[float] = list(cfg.reward_weights)
    else:
        funcs, weights = own[0], list(cfg.reward_weights) or own[1]
    rewards = make_reward_set(funcs, weights, columns=columns)
    eval_rewards = None
    if data.eval_rewards is not None and data.eval:
        eval_columns = sorted({k for r in data.eval for k in r} - {"prompt"})
        eval_rewards = make_reward_set(*data.eval_rewards, columns=eval_columns)
    return rewards, eval_rewards


def new_tiny_policy(cfg: TrainConfig, data: TrainingData) -> Policy:
    """A new tiny model for ``cfg``'s dataset (see :func:`.model_setup.new_tiny`)."""
    return new_tiny(
        data, system_prompt=cfg.system_prompt, gen_length=cfg.max_completion_length,
        dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, positions=cfg.positions,
        seed=cfg.seed, device=torch.device("cpu"),
    )  # fmt: skip


def _reward_set(cfg: Any, task: SyntheticTask) -> RewardSet:
    """A synthetic task's reward set with ``cfg.reward_weights`` (or the task's)."""
    weights = cfg.reward_weights or task.weights
    if len(weights) != len(task.rewards):
        raise ValueError(
            f"reward_weights has {len(weights)} values but task {task.name} has "
            f"{len(task.rewards)} reward functions ({[f.__name__ for f in task.rewards]})"
        )
    return RewardSet(task.rewards, weights)


def run_eval(cfg: EvalConfig) -> TaskEval | dict[str, Any]:
    """Synthetic-task accuracy, or for a benchmark the harness's ``result.json`` dict.

    Both load and validate their rows before the model, so bad data fails in seconds.
    """
    if cfg.is_benchmark:
        from ..evaluation.benchmark import run_benchmark

        return run_benchmark(cfg)
    s = setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name=cfg.device,
        sampling=cfg,
    )
    result = evaluate_task(
        s.policy.model,
        s.modality,
        s.task,
        s.settings,
        num_prompts=cfg.num_prompts,
        batch_size=cfg.per_device_eval_batch_size,
        seed=cfg.seed,
    )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "task": s.task.name,
        "model": cfg.model,
        "protocol": dataclasses.asdict(s.settings),
        **result.as_dict(),
    }
    (out / "eval.json").write_text(json.dumps(record, indent=2))
    return result


def run_generate(cfg: GenerateConfig) -> list[dict[str, Any]]:
    s = setup(
        cfg,
        seed=cfg.seed,
        task_name=cfg.dataset,
        task_seed=cfg.dataset_seed,
        device_name=cfg.device,
        sampling=cfg,
    )
    prompts = cfg.prompts or [r["prompt"] for r in s.task.heldout[: cfg.num_prompts]]
    ids = s.modality.encode_prompts([p for p in prompts for _ in range(cfg.samples)], s.device)
    s.policy.model.eval()
    seqs = s.modality.rollout(
        s.policy.model, ids, s.settings, derive_generator(cfg.seed, "generate", device=s.device)
    )
    texts = s.modality.decode(seqs[:, s.modality.prompt_width :])
    return [
        {"prompt": p, "completion": c}
        for p, c in zip([p for p in prompts for _ in range(cfg.samples)], texts, strict=True)
    ]
