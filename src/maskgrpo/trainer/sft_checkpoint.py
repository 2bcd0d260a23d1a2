"""Checkpoints of an SFT run, so that an interrupted ``maskgrpo sft`` resumes exactly.

An SFT checkpoint is a folder ``<output_dir>/checkpoints/step_<done>/`` laid out like a MaskGRPO
one (:mod:`maskgrpo.trainer.checkpoint`; written to a temporary folder, fsynced, renamed, then
``latest`` is replaced): ``model.safetensors`` (and whatever ``write_model`` adds),
``optimizer.safetensors`` + ``optimizer.json``, ``scheduler.json``, ``batches.safetensors`` +
``batches.json`` (the batch source's generator states, epoch order and position) and
``trainer_state.json`` with ``"kind": "sft"``, the steps done, their losses and the config.
Everything random in SFT flows through the two generators of the batch source, so restoring
them, the weights and the optimizer makes the resumed run draw and compute what the
uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file
from torch import nn

from ..lora import is_lora
from ..version import __version__
from .checkpoint import (
    CHECKPOINT_FORMAT,
    LATER_FIELDS,
    STATE_FILE,
    fsync_path,
    fsync_tree,
    load_split,
    read_trainer_state,
    resolve_checkpoint,
    save_split,
    write_latest,
)
from .interrupt import StopRequest, TrainingInterrupted, handle_signals
from .sft import SFTState, sft_loop, sft_state

__all__ = [
    "BatchSource",
    "SFT_FIXED_FIELDS",
    "load_sft_checkpoint",
    "resumable_sft",
    "save_sft_checkpoint",
]

log = logging.getLogger(__name__)

# Fields a resumed SFT run must share with its checkpoint: they fix the model, data and batches.
SFT_FIXED_FIELDS = (
    "dataset",
    "dataset_seed",
    "data_file",
    "dataset_split",
    "dataset_columns",
    "limit",
    "model",
    "dim",
    "n_layers",
    "n_heads",
    "positions",
    "seed",
    "per_device_train_batch_size",
    "max_completion_length",
    "lora_r",
)


class BatchSource(Protocol):
    """What an SFT batch source exposes to be checkpointed (see :class:`~.sft.TaskBatches`)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def save_sft_checkpoint(
    root: Path,
    state: SFTState,
    batches: BatchSource,
    *,
    write_model: Callable[[Path], None],
    config: dict[str, Any],
) -> Path:
    """Write ``state`` (and the model, the batches' position) under ``root`` atomically."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-sft-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp)
    save_split(state.optimizer.state_dict(), tmp, "optimizer")
    (tmp / "scheduler.json").write_text(json.dumps(state.scheduler.state_dict()))
    save_split(batches.state_dict(), tmp, "batches")
    record = {
        "format": CHECKPOINT_FORMAT,
        "kind": "sft",
        "step": state.step,
        "inner": 0,
        "losses": state.losses,
        "config": config,
        "versions": {"torch": torch.__version__, "maskgrpo": __version__},
    }
    (tmp / STATE_FILE).write_text(json.dumps(record, indent=1))
    fsync_tree(tmp)
    final, k = root / f"step_{state.step:06d}", 0
    while final.exists():
        k += 1
        final = root / f"step_{state.step:06d}_r{k}"
    tmp.rename(final)
    fsync_path(root)
    write_latest(root, final.name)
    log.info("saved SFT checkpoint %s (%d steps)", final, state.step)
    return final


def load_sft_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    state: SFTState,
    batches: BatchSource,
    config: dict[str, Any],
) -> None:
    """Load ``folder`` into ``model``, ``state`` and ``batches``; check the fixed fields."""
    record = read_trainer_state(folder, kind="sft")
    saved = {**LATER_FIELDS, **record["config"]}
    for name in SFT_FIXED_FIELDS:
        if name not in saved:
            raise ValueError(
                f"checkpoint {folder} has no {name!r} in its config: it was written by a "
                "maskgrpo before the TRL field names; resume it with that version"
            )
        if config.get(name) != saved[name]:
            raise ValueError(
                f"{name}={config.get(name)!r} differs from {saved[name]!r} in checkpoint "
                f"{folder}; it fixes the model or the batches, so resume with "
                f"{name}={saved[name]!r}"
            )
    device = next(model.parameters()).device
    weights = load_file(str(folder / "model.safetensors"), device=str(device))
    if is_lora(model):  # the checkpoint holds the adapter's tensors only
        unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(
                f"checkpoint {folder} holds tensors the model lacks ({unexpected[:3]}); resume "
                "with the model and LoRA settings of the interrupted run"
            )
    else:
        model.load_state_dict(weights)
    state.optimizer.load_state_dict(load_split(folder, "optimizer", device))
    state.scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    batches.load_state_dict(load_split(folder, "batches"))
    state.step = int(record["step"])
    state.losses = [float(x) for x in record["losses"]]
    log.info("resumed SFT from %s after %d steps", folder, state.step)


def resumable_sft(
    model: nn.Module,
    batches: BatchSource,
    step_loss: Callable[[int], torch.Tensor],
    *,
    out: Path,
    resume: str,
    config: dict[str, Any],
    write_model: Callable[[Path], None],
    steps: int,
    lr: float,
    warmup_steps: int,
    weight_decay: float,
    log_every: int,
    schedule: str = "cosine",
    on_log: Callable[[int, float], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> list[float]:
    """:func:`~.sft.sft_loop` that resumes from ``resume`` and saves a checkpoint on a signal.

    ``resume`` is ``""`` (start fresh), ``"latest"`` or a checkpoint folder; ``on_resume(steps)``
    is told how many steps the checkpoint had done. SIGINT/SIGTERM stop after the current step,
    save a checkpoint under ``out/checkpoints`` and raise :class:`TrainingInterrupted`, whose
    message holds the command that resumes the run.
    """
    state = sft_state(
        model, steps=steps, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
        schedule=schedule,
    )  # fmt: skip
    if resume:
        folder = resolve_checkpoint(resume, out)
        load_sft_checkpoint(folder, model=model, state=state, batches=batches, config=config)
        if on_resume is not None:
            on_resume(state.step)
    with handle_signals(StopRequest.from_env()) as stop:
        losses = sft_loop(
            model, step_loss, steps=steps, lr=lr, log_every=log_every, on_log=on_log,
            should_stop=stop.after_step, state=state,
        )  # fmt: skip
    if stop.signum:
        saved = save_sft_checkpoint(
            out / "checkpoints", state, batches, write_model=write_model, config=config
        )
        raise TrainingInterrupted(
            saved, out, signum=stop.signum, position=(state.step, 0), command="sft"
        )
    return losses
