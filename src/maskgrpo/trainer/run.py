"""Entry points behind the command line: SFT, MaskGRPO training, generation, evaluation.

Each takes one validated config and writes its outputs under ``cfg.output_dir``. The demo chains
them (see :mod:`maskgrpo.demo`). ``model`` is the built-in tiny model, a saved tiny-model folder,
or a Hugging Face hub id / folder (:mod:`maskgrpo.trainer.hf_setup`). Under ``accelerate launch``
training runs on every process and only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..config import EvalConfig, GenerateConfig, ModelConfig, SamplingConfig, SFTConfig, TrainConfig
from ..lora import autocast_context, is_lora
from ..modality import SamplerSettings, TextModality
from ..models.hf_modality import HFTextModality
from ..models.tiny import TinyDiffusionLM
from ..policy import Policy, is_tiny_model, load_policy, resolve_device, save_policy
from ..rewards.combine import RewardSet
from ..rng import derive_generator
from ..tasks import SyntheticTask, make_task
from . import distributed as dist
from .checkpoint import (
    load_checkpoint,
    read_trainer_state,
    reconcile_config,
    resolve_checkpoint,
    save_checkpoint,
    set_learning_rate,
)
from .evaluate import TaskEval, evaluate_task
from .grpo import (
    Rollout,
    TrainingAborted,
    TrainParts,
    TrainState,
    build_parts,
    sampler_settings,
    train_grpo,
)
from .hf_setup import load_for_task, save_state
from .inputs import fit_prompts
from .interrupt import StopRequest, TrainingInterrupted, handle_signals
from .outputs import RunLogger, plot_curves, read_metrics
from .sft import train_sft

__all__ = ["run_eval", "run_generate", "run_sft", "run_train", "setup"]

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


def export_model(policy: Policy, out_dir: Path, name: str) -> Path:
    """Write the model alone to ``checkpoints/<name>`` (temporary folder, then rename)."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".export-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(policy, tmp)
    if final.exists():
        old = root / f".old-{name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """SFT the policy on the task's train split; saves ``<output_dir>/model``."""
    if not is_tiny_model(cfg.model):
        raise ValueError(
            f"maskgrpo sft trains the built-in tiny model, not model={cfg.model!r}; "
            "use --model tiny or a saved tiny-model folder"
        )
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, None)
    if not isinstance(s.modality, TextModality):  # tiny models always get the text modality
        raise TypeError(f"SFT needs the tiny model's text modality, not {type(s.modality)}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_yaml(cfg, out / "sft_config.yaml")
    logger = RunLogger(out, tensorboard=False)
    bar = tqdm(total=cfg.max_steps, desc="sft", disable=None)

    def on_log(step: int, loss: float) -> None:
        logger.log({"step": step, "sft_loss": loss})
        bar.update(cfg.logging_steps)
        bar.set_postfix(loss=f"{loss:.3f}")

    t0 = time.time()
    losses = train_sft(
        s.policy.model,
        s.modality,
        s.task.train,
        gen_length=s.settings.gen_length,
        steps=cfg.max_steps,
        batch_size=cfg.per_device_train_batch_size,
        lr=cfg.learning_rate,
        seed=cfg.seed,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        min_mask_ratio=cfg.min_mask_ratio,
        log_every=cfg.logging_steps,
        on_log=on_log,
    )
    bar.close()
    save_policy(s.policy, out / "model")
    logger.close()
    return {
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": time.time() - t0,
        "model": str(out / "model"),
    }


def run_train(cfg: TrainConfig, *, policy: Policy | None = None) -> dict[str, Any]:
    """MaskGRPO on the task's train split; metrics, samples, plots and checkpoints in output_dir.

    With ``cfg.resume`` the run continues from a checkpoint exactly where it stopped. SIGINT and
    SIGTERM stop it after the current inner update with a checkpoint (:class:`TrainingInterrupted`).
    """
    device = _process_device(cfg.device)  # also joins an accelerate launch's process group
    main = dist.is_main()  # only the main process writes files
    resume_from = resolve_checkpoint(cfg.resume, Path(cfg.output_dir)) if cfg.resume else None
    if resume_from is not None:
        cfg = reconcile_config(cfg, read_trainer_state(resume_from)["config"], resume_from)
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, device, cfg)
    if policy is not None:
        s.policy = policy
        s.modality = TextModality(policy.tokenizer, policy.spec, s.modality.prompt_width)
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_yaml(dataclasses.replace(cfg, resume=""), out / "train_config.yaml")
    rows = s.task.train  # a Hugging Face modality's prompt width already fits every prompt
    if isinstance(s.modality, TextModality):
        width = s.modality.prompt_width
        rows = fit_prompts(rows, s.policy.tokenizer, width, truncate=cfg.truncate_prompts)
    rewards = _reward_set(cfg, s.task)
    parts = build_parts(cfg, s.policy.model)  # the reference is the initial model, even on resume
    state = TrainState()
    logger = RunLogger(out, enabled=main, tensorboard=cfg.report_to == "tensorboard")
    if resume_from is not None:
        state = _resume(cfg, resume_from, s, parts, logger)
    saver = _Saver(cfg, s.policy, parts, out, enabled=main)
    if resume_from is not None:  # saving again at the same position would only duplicate it
        saver.last, saver.position = resume_from, state.position
    bar = tqdm(
        total=cfg.max_steps, initial=state.step, desc="maskgrpo", disable=None if main else True
    )
    on_step = _step_callback(cfg, s, logger, bar, lambda: saver.save(state))
    t0 = time.time()
    precision = autocast_context(s.device, cfg.mixed_precision)
    with handle_signals(StopRequest.from_env()) as stop, precision:
        try:
            history = train_grpo(
                cfg,
                s.policy.model,
                s.modality,
                rows,
                rewards,
                s.settings,
                on_step=on_step,
                parts=parts,
                state=state,
                should_stop=stop,
            )
        except TrainingAborted as err:
            raise TrainingAborted(f"{err}; last good checkpoint: {saver.last or 'none'}") from err
        finally:
            bar.close()
            logger.close()
    checkpoint = saver.save(state)
    if stop.signum:
        raise TrainingInterrupted(checkpoint, out, stop.signum, state.position)
    final, plot = out / "checkpoints" / "final", out / "reward_curve.png"
    if main:
        final = export_model(s.policy, out, "final")
        plot = plot_curves(
            read_metrics(logger.metrics_path),
            plot,
            keys=("reward_mean", "kl", "clip_fraction"),
            title=f"MaskGRPO on {s.task.name}",
        )
    return {
        "steps": state.step,
        "seconds": time.time() - t0,
        "checkpoint": str(final),
        "resume_checkpoint": str(checkpoint),
        "metrics": str(logger.metrics_path),
        "plot": str(plot),
        "final_reward": history[-1]["reward_mean"] if history else None,
    }


def _process_device(name: str) -> str:
    """This process's device: with several processes, ``auto`` is the one accelerate assigns."""
    acc = dist.accelerator()
    if acc is None:
        return name
    world = dist.rank_world()[1]
    if name == "auto":
        return str(acc.device)
    if torch.device(name).type == "cuda" and world > 1:
        raise ValueError(
            f"device={name!r} would put all {world} processes on one GPU; use device=auto "
            "(each process gets the GPU accelerate assigns it)"
        )
    return name


def _reward_set(cfg: TrainConfig, task: SyntheticTask) -> RewardSet:
    weights = cfg.reward_weights or task.weights
    if len(weights) != len(task.rewards):
        raise ValueError(
            f"reward_weights has {len(weights)} values but task {task.name} has "
            f"{len(task.rewards)} reward functions ({[f.__name__ for f in task.rewards]})"
        )
    return RewardSet(task.rewards, weights)


def _resume(
    cfg: TrainConfig, folder: Path, s: Setup, parts: TrainParts, logger: RunLogger
) -> TrainState:
    """Load ``folder`` into the model and ``parts``; drop metrics logged after it."""
    saved_lr = read_trainer_state(folder)["config"]["learning_rate"]
    lora = is_lora(s.policy.model)  # with LoRA the checkpoint holds the adapter tensors only
    state = load_checkpoint(
        folder, model=s.policy.model, parts=parts, modality=s.modality, strict=not lora
    )
    if cfg.learning_rate != saved_lr:
        set_learning_rate(parts, cfg.learning_rate)
        log.info("learning rate changed on resume: %s -> %s", saved_lr, cfg.learning_rate)
    logger.truncate(state.step)
    log.info("resumed from %s at step %d, inner update %d", folder, state.step, state.inner)
    return state


class _Saver:
    """Saves checkpoints of this run, once per position."""

    def __init__(
        self, cfg: TrainConfig, policy: Policy, parts: TrainParts, out: Path, *, enabled: bool
    ) -> None:
        self.cfg, self.policy, self.parts, self.root = cfg, policy, parts, out / "checkpoints"
        self.enabled = enabled  # False on the non-main processes of a distributed run
        self.last: Path | None = None
        self.position: tuple[int, int] | None = None

    def save(self, state: TrainState) -> Path:
        if self.last is not None and self.position == state.position:
            return self.last
        if not self.enabled:
            return self.root
        self.last = save_checkpoint(
            self.root,
            state,
            write_model=self._write_model,
            parts=self.parts,
            config=dataclasses.asdict(self.cfg),
            rows_per_step=self.cfg.prompts_per_step(dist.rank_world()[1]),
            keep=self.cfg.save_total_limit,
        )
        self.position = state.position
        return self.last

    def _write_model(self, folder: Path) -> None:
        if isinstance(self.policy.model, TinyDiffusionLM):
            save_policy(self.policy, folder)  # the folder also loads as a model
        else:
            save_state(self.policy.model, folder)


def _step_callback(
    cfg: TrainConfig,
    s: Setup,
    logger: RunLogger,
    bar: Any,
    save: Callable[[], Path],
) -> Callable[[dict[str, Any], Rollout], None]:
    greedy = dataclasses.replace(s.settings, temperature=0.0)

    def on_step(metrics: dict[str, Any], rollout: Rollout) -> None:
        step = metrics["step"]
        if cfg.eval_every and step % cfg.eval_every == 0:
            ev = evaluate_task(
                s.policy.model,
                s.modality,
                s.task,
                greedy,
                num_prompts=cfg.eval_prompts,
                seed=cfg.seed,
            )
            metrics["heldout_accuracy"] = ev.accuracy
        metrics["world_size"] = dist.rank_world()[1]
        if step % cfg.logging_steps == 0:
            logger.log(metrics)
        if cfg.sample_every and step % cfg.sample_every == 0:
            k = min(cfg.num_generations, len(rollout.prompts))
            logger.samples(
                step, rollout.prompts[:k], rollout.completions[:k], rollout.rewards.total[:k]
            )
        if cfg.save_steps and step % cfg.save_steps == 0:
            save()
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", loss=f"{metrics['loss']:.4f}")

    return on_step


def run_eval(cfg: EvalConfig) -> TaskEval | dict[str, Any]:
    """Synthetic-task accuracy, or with ``cfg.dataset`` the benchmark's ``result.json`` dict.

    Both load and validate their rows before the model, so bad data fails in seconds.
    """
    if cfg.dataset:
        from ..evaluation.benchmark import run_benchmark

        return run_benchmark(cfg)
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, cfg)
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
    s = setup(cfg, cfg.seed, cfg.task, cfg.task_seed, cfg.device, cfg)
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
