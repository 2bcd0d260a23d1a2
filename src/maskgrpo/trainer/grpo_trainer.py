"""``MaskGRPOTrainer``: the TRL-shaped Python API around the MaskGRPO loop.

::

    from datasets import Dataset
    from peft import LoraConfig
    from maskgrpo import MaskGRPOConfig, MaskGRPOTrainer

    trainer = MaskGRPOTrainer(
        model="GSAI-ML/LLaDA-8B-Instruct",          # hub id, folder, or a loaded module
        reward_funcs=[my_reward],                   # fn(prompts, completions, **columns)
        args=MaskGRPOConfig(output_dir="runs/x", learning_rate=3e-6, num_generations=6,
                            num_iterations=12, trust_remote_code=True, dtype="bfloat16"),
        train_dataset=Dataset.from_list([{"prompt": "...", "answer": "..."}]),
        peft_config=LoraConfig(r=128, lora_alpha=64, target_modules=[...]),
    )
    trainer.train()

``maskgrpo train`` builds this trainer and calls :meth:`MaskGRPOTrainer.train`, so the command
line and Python run the same code. The loop itself is :func:`maskgrpo.trainer.grpo.train_grpo`;
this class adds what a run needs around it: the model and modality, outputs (metrics.jsonl,
TensorBoard, samples, plots, a ``summary.json``), checkpoints and exact resumption, SIGINT/SIGTERM
handling and evaluation on held-out rows.

The trainer takes a ``modality`` (default: text, built from the tokenizer); image training runs
through the same class with :class:`maskgrpo.modalities.image.ImageModality`, which owns what
differs (inputs, sampler and settings, the scored code range, decoding to pixels).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from ..config import MaskGRPOConfig, with_modality_defaults
from ..datasets.training import normalise_prompts, rows_from
from ..lora import autocast_context, is_lora
from ..modalities.base import Modality, SamplerSettings
from ..models.tiny import TinyDiffusionLM
from ..policy import Policy, resolve_device
from ..rewards.combine import RewardFn, RewardSet
from . import dist_wrap
from . import distributed as dist
from .checkpoint import (
    load_checkpoint,
    read_trainer_state,
    reconcile_config,
    resolve_checkpoint,
    save_checkpoint_all_ranks,
    set_learning_rate,
)
from .dist_state import full_state
from .grpo import Rollout, TrainingAborted, TrainParts, TrainState, build_parts, train_grpo
from .hf_setup import lora_resume, save_state
from .interrupt import StopRequest, TrainingInterrupted, handle_signals
from .model_setup import build_policy, build_text_modality, drop_unknown_characters
from .outputs import RunLogger, plot_curves, prepare_output_dir, read_metrics
from .periodic_eval import HeldOutEvaluation, eval_records, plot_heldout
from .reward_funcs import check_signature, make_reward_set, resolve_reward_funcs

__all__ = ["MaskGRPOTrainer", "TrainOutput", "export_model"]

log = logging.getLogger(__name__)

DEFAULT_COMPLETION_LENGTH = 256  # the paper's generation length


class TrainOutput(NamedTuple):
    """What :meth:`MaskGRPOTrainer.train` returns (TRL/transformers' shape)."""

    global_step: int
    training_loss: float
    metrics: dict[str, Any]


RewardSpec = str | RewardFn


class MaskGRPOTrainer:
    """MaskGRPO (arXiv 2510.02880) with TRL's ``GRPOTrainer`` arguments.

    Args:
        model: a hub id or local folder (loaded with ``args.trust_remote_code``, ``args.dtype``),
            a saved tiny-model folder, or a loaded module (then ``processing_class`` is its
            tokenizer).
        reward_funcs: one or a list of reward callables ``fn(prompts, completions, **columns)
            -> list[float | None]``, built-in reward names, ``module:function`` references, or
            a :class:`~maskgrpo.rewards.RewardSet` (with its own weights). Weights of the others:
            ``args.reward_weights`` (default 1 each).
        args: the :class:`~maskgrpo.config.MaskGRPOConfig` (defaults when ``None``).
        train_dataset: a ``datasets.Dataset`` or a list of dicts with a ``prompt`` column (a
            string, or TRL's conversational ``[system?, user]`` messages); every other column
            reaches the reward functions as a keyword argument.
        eval_dataset: held-out rows in the same format, evaluated every ``args.eval_every``.
        processing_class: the tokenizer of a loaded ``model`` (otherwise loaded with it).
        peft_config: a ``peft.LoraConfig`` applied to the model (or use ``args.lora_r``).
        modality: how prompts become ids and completions become rewards' inputs; default the
            text modality of the tokenizer (chat template, system prompt, fixed width).
        eval_reward_funcs: rewards of the held-out rows when they differ from ``reward_funcs``.
    """

    def __init__(
        self,
        model: str | nn.Module,
        reward_funcs: RewardSpec | RewardSet | Sequence[RewardSpec],
        args: MaskGRPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        *,
        modality: Modality | None = None,
        eval_reward_funcs: RewardSet | Sequence[RewardSpec] | None = None,
    ) -> None:
        self.args = args if args is not None else MaskGRPOConfig()
        self.args.validate()
        # gamma=-1 / strategy=auto: the modality's (text 0.6 fading, image 0.8 random)
        self.args = with_modality_defaults(self.args, getattr(modality, "name", "text"))
        if train_dataset is None:
            raise ValueError("train_dataset is required: a datasets.Dataset or a list of dicts")
        self.train_rows, system = normalise_prompts(rows_from(train_dataset), name="train_dataset")
        self.eval_rows: list[dict[str, Any]] = []
        if eval_dataset is not None:
            self.eval_rows, _ = normalise_prompts(
                rows_from(eval_dataset, name="eval_dataset"), name="eval_dataset"
            )
        self.system_prompt = self.args.system_prompt or system
        self.reward_set = self._rewards(reward_funcs, self.train_rows, self.args.reward_weights)
        self.eval_reward_set = self.reward_set
        if eval_reward_funcs is not None and self.eval_rows:
            self.eval_reward_set = self._rewards(eval_reward_funcs, self.eval_rows, [])
        model, self.args = lora_resume(self.args, model)  # resume=<LoRA folder>: a new run on it
        self._resume_from = self._resolve_resume(self.args.resume)
        self.device = torch.device(_process_device(self.args.device))
        named = getattr(self.args, "model", "")  # the command line's --model
        self.model_name = model if isinstance(model, str) else named or type(model).__name__
        spec = modality.spec if modality is not None else None
        self.policy = build_policy(
            model, processing_class, self.args, peft_config, device=self.device, spec=spec
        )
        self.train_rows, self.eval_rows = drop_unknown_characters(
            [self.train_rows, self.eval_rows], self.policy.tokenizer
        )
        self.settings = self._sampler_settings()
        if modality is None:
            absolute = isinstance(self.policy.model, TinyDiffusionLM)  # width as in its SFT
            modality, (self.train_rows, self.eval_rows) = build_text_modality(
                self.policy, [self.train_rows, self.eval_rows], system_prompt=self.system_prompt,
                gen_length=self.settings.gen_length, truncate=self.args.truncate_prompts,
                width_sets=1 if absolute else None,
            )  # fmt: skip
        self.modality: Modality = modality
        own_settings = getattr(modality, "sampler_settings", None)
        if callable(own_settings):  # the modality owns its rollout settings (image: N tokens)
            self.settings = own_settings(self.args)
        self.state = TrainState()
        self._evaluation: HeldOutEvaluation | None = None

    # ---- the public surface ------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        return self.policy.model

    @property
    def processing_class(self) -> Any:
        return self.policy.tokenizer

    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
        """Run MaskGRPO to ``args.max_steps`` (or ``max_seconds``); see the module docstring.

        ``resume_from_checkpoint``: ``True`` = the newest checkpoint in ``output_dir``, a path =
        that checkpoint; ``None`` = ``args.resume``. A fresh run in an ``output_dir`` that holds
        a run is refused (``ValueError``) unless ``args.overwrite`` deletes that run first.
        """
        if resume_from_checkpoint:
            spec = "latest" if resume_from_checkpoint is True else str(resume_from_checkpoint)
            self._resume_from = self._resolve_resume(spec)
        return _Run(self).execute()

    def evaluate(self, step: int | None = None) -> dict[str, float]:
        """Held-out metrics of the current policy (``eval_*`` keys), as during training."""
        evaluation = self.held_out_evaluation()
        if evaluation is None:
            raise ValueError("no held-out rows: pass eval_dataset to evaluate")
        step = self.state.step if step is None else step
        return evaluation(dist_wrap.for_sampling(self.model), self.modality, step)

    def save_model(self, output_dir: str | None = None) -> Path:
        """Write the policy as a model folder (``save_pretrained``; with LoRA the adapter)."""
        folder = Path(output_dir) if output_dir else Path(self.args.output_dir) / "model"
        save_policy(self.policy, folder)
        return folder

    def held_out_evaluation(self) -> HeldOutEvaluation | None:
        """The evaluation of the held-out rows (``None`` when there are none)."""
        if self._evaluation is None and self.eval_rows:
            self._evaluation = HeldOutEvaluation(
                self.eval_rows[: self.args.eval_limit], self.eval_reward_set, self.settings,
                seed=self.args.seed, batch_size=self.args.per_device_eval_batch_size,
                out_dir=Path(self.args.output_dir), write=dist.is_main(),
                threshold=self.args.eval_pass_threshold, dataset=getattr(self.args, "dataset", ""),
                model=self.model_name, system_prompt=self.system_prompt,
                temperature=getattr(self.modality, "eval_temperature", 0.0),
            )  # fmt: skip
        return self._evaluation

    # ---- set-up helpers ----------------------------------------------------------------------

    def _rewards(
        self, funcs: Any, rows: list[dict[str, Any]], weights: Sequence[float]
    ) -> RewardSet:
        columns = sorted({k for r in rows for k in r} - {"prompt"})
        if isinstance(funcs, RewardSet):  # its own names and weights
            for fn, name in zip(funcs.funcs, funcs.names, strict=True):
                check_signature(fn, columns, name)
            return funcs
        specs = [funcs] if isinstance(funcs, str) or callable(funcs) else list(funcs)
        unsafe = bool(getattr(self.args, "allow_unsafe_code", False))
        return make_reward_set(
            resolve_reward_funcs(specs, allow_unsafe=unsafe), weights, columns=columns
        )

    def _resolve_resume(self, spec: str) -> Path | None:
        if not spec:
            return None
        folder = resolve_checkpoint(spec, Path(self.args.output_dir))
        self.args = reconcile_config(self.args, read_trainer_state(folder)["config"], folder)
        return folder

    def _sampler_settings(self) -> SamplerSettings:
        return SamplerSettings.from_config(self.args, DEFAULT_COMPLETION_LENGTH)


def _process_device(name: str) -> str:
    """This process's device: with several processes, ``auto`` is the one accelerate assigns."""
    acc = dist.accelerator()  # also joins an accelerate launch's process group
    if acc is None:
        return str(resolve_device(name))
    world = dist.rank_world()[1]
    if name == "auto":
        return str(acc.device)
    if torch.device(name).type == "cuda" and world > 1:
        raise ValueError(
            f"device={name!r} would put all {world} processes on one GPU; use device=auto "
            "(each process gets the GPU accelerate assigns it)"
        )
    return name


def save_policy(policy: Policy, folder: Path) -> None:
    """``save_pretrained`` of the model and, when it has one, of the tokenizer (an image
    modality's word tokenizer has none)."""
    save: Any = getattr(policy.model, "save_pretrained", None)
    if not callable(save):
        raise TypeError(f"{type(policy.model).__name__} has no save_pretrained; cannot save it")
    save(folder)
    if callable(getattr(policy.tokenizer, "save_pretrained", None)):
        policy.tokenizer.save_pretrained(folder)


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


class _Run:
    """One call of :meth:`MaskGRPOTrainer.train`: outputs, checkpoints, signals, evaluation."""

    def __init__(self, trainer: MaskGRPOTrainer) -> None:
        self.t = trainer
        self.args = trainer.args
        self.out = Path(self.args.output_dir)
        self.main = dist.is_main()  # only the main process writes files
        self.logger: RunLogger | None = None
        self.last_eval = -1

    def execute(self) -> TrainOutput:
        t, args, out = self.t, self.args, self.out
        if self.main:  # a fresh run never writes over an earlier one (--resume / --overwrite)
            resume = t._resume_from is not None
            prepare_output_dir(out, resume=resume, overwrite=args.overwrite)
            config = dataclasses.asdict(dataclasses.replace(args, resume="", overwrite=False))
            (out / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        parts = build_parts(args, t.model)  # the reference is the initial model, even on resume
        tb = args.report_to == "tensorboard"
        self.logger = logger = RunLogger(out, enabled=self.main, tensorboard=tb)
        state = t.state
        if t._resume_from is not None:
            state = t.state = self._resume(t._resume_from, parts, logger)
        saver = _Saver(args, t.policy, parts, out)
        if t._resume_from is not None:  # saving again at the same position would duplicate it
            saver.last, saver.position = t._resume_from, state.position
        bar = tqdm(
            total=args.max_steps,
            initial=state.step,
            desc="maskgrpo",
            disable=None if self.main else True,
        )
        t0 = time.time()
        precision = autocast_context(t.device, args.mixed_precision)
        with handle_signals(StopRequest.from_env()) as stop, precision:
            try:
                if (
                    args.eval_on_start
                    and args.eval_every
                    and state.step == 0
                    and state.rollout is None
                ):
                    logger.log({"step": 0, **self._evaluate(0)})
                history = train_grpo(
                    args, t.model, modality=t.modality, rows=t.train_rows, rewards=t.reward_set, settings=t.settings,
                    on_step=self._on_step(bar, lambda: saver.save(state)), parts=parts,
                    state=state, should_stop=stop,
                )  # fmt: skip
                if args.eval_every and not stop.signum and self.last_eval != state.step:
                    logger.log({"step": state.step, **self._evaluate(state.step)})
            except TrainingAborted as err:
                raise TrainingAborted(
                    f"{err}; last good checkpoint: {saver.last or 'none'}"
                ) from err
            finally:
                bar.close()
                logger.close()
        checkpoint = saver.save(state)
        if stop.signum:
            raise TrainingInterrupted(checkpoint, out, signum=stop.signum, position=state.position)
        summary = self._finish(history, checkpoint, time.time() - t0)
        losses = [m["loss"] for m in history]
        return TrainOutput(state.step, sum(losses) / max(1, len(losses)), summary)

    def _evaluate(self, step: int) -> dict[str, float]:
        evaluation = self.t.held_out_evaluation()
        if evaluation is None:
            raise ValueError(
                f"eval_every={self.args.eval_every} needs held-out rows: pass eval_dataset"
            )
        self.last_eval = step
        # through the wrapper: every process generates, so a sharded model's collectives match
        return evaluation(dist_wrap.for_sampling(self.t.model), self.t.modality, step)

    def _on_step(
        self, bar: Any, save: Callable[[], Path]
    ) -> Callable[[dict[str, Any], Rollout], None]:
        args, logger = self.args, self.logger
        assert logger is not None

        def on_step(metrics: dict[str, Any], rollout: Rollout) -> None:
            step = metrics["step"]
            if args.eval_every and (step % args.eval_every == 0 or step == args.max_steps):
                metrics.update(self._evaluate(step))
            metrics.update(dist.describe())  # world_size, distributed_type, sharding
            if step % args.logging_steps == 0 or "eval_accuracy" in metrics:
                logger.log(metrics)
            if args.sample_every and step % args.sample_every == 0:
                k = min(args.num_generations, len(rollout.prompts))
                logger.samples(
                    step, rollout.prompts[:k], rollout.completions[:k], rollout.rewards.total[:k]
                )
            if args.save_steps and step % args.save_steps == 0:
                save()
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", loss=f"{metrics['loss']:.4f}")

        return on_step

    def _resume(self, folder: Path, parts: TrainParts, logger: RunLogger) -> TrainState:
        """Load ``folder`` into the model and ``parts``; drop metrics logged after it."""
        t, args = self.t, self.args
        saved_lr = read_trainer_state(folder)["config"]["learning_rate"]
        state = load_checkpoint(
            folder, model=t.model, parts=parts, modality=t.modality, strict=not is_lora(t.model)
        )  # with LoRA the checkpoint holds the adapter tensors only
        if args.learning_rate != saved_lr:
            set_learning_rate(parts, args.learning_rate)
            log.info("learning rate changed on resume: %s -> %s", saved_lr, args.learning_rate)
        logger.truncate(state.step)
        log.info("resumed from %s at step %d, inner update %d", folder, state.step, state.inner)
        return state

    def _finish(
        self, history: list[dict[str, Any]], checkpoint: Path, seconds: float
    ) -> dict[str, Any]:
        """Export the final model, plot, and write ``summary.json``; returns the summary."""
        t, out, logger = self.t, self.out, self.logger
        assert logger is not None
        final, plots = out / "checkpoints" / "final", [out / "reward_curve.png"]
        metrics = read_metrics(logger.metrics_path) if logger.metrics_path.exists() else []
        evals = eval_records(metrics)
        with full_state(t.model):  # every process gathers a sharded model; the main one writes
            if self.main:
                final = export_model(t.policy, out, "final")
        if self.main:
            plot_curves(
                [m for m in metrics if "reward_mean" in m], plots[0],
                keys=("reward_mean", "kl", "clip_fraction"), title=f"MaskGRPO: {t.model_name}",
            )  # fmt: skip
            if evals:
                title = f"held-out accuracy ({evals[-1]['n']} rows, greedy, 95% CI)"
                plots.append(plot_heldout(evals, out / "heldout_accuracy.png", title))
        summary = {
            "model": t.model_name,
            "dataset": getattr(self.args, "dataset", ""),
            "steps": t.state.step,
            "max_steps": self.args.max_steps,
            # max_seconds ended the run before max_steps (a time budget, not a fixed length)
            "stopped_by_max_seconds": t.state.step < self.args.max_steps,
            "seconds": seconds,
            "final_reward": history[-1]["reward_mean"] if history else None,
            "eval": evals[-1] if evals else None,
            "eval_start": evals[0] if evals and evals[0]["step"] == 0 else None,
            "evals": evals,
            "rewards": t.reward_set.names,
            "checkpoint": str(final),
            "resume_checkpoint": str(checkpoint),
            "metrics": str(logger.metrics_path),
            "plot": str(plots[0]),
            "plots": [str(p) for p in plots],
            **dist.describe(),  # world_size, distributed_type, sharding
        }
        if self.main:
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


class _Saver:
    """Saves checkpoints of this run, once per position."""

    def __init__(self, cfg: MaskGRPOConfig, policy: Policy, parts: TrainParts, out: Path) -> None:
        self.cfg, self.policy, self.parts, self.root = cfg, policy, parts, out / "checkpoints"
        self.last: Path | None = None
        self.position: tuple[int, int] | None = None

    def save(self, state: TrainState) -> Path:
        if self.last is not None and self.position == state.position:
            return self.last
        self.last = save_checkpoint_all_ranks(  # every process: gathers rows and shards
            self.root,
            state,
            model=self.policy.model,
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
