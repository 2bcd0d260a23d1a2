"""Checkpoints that hold a whole MaskGRPO run, written atomically and read without pickle.

A checkpoint is a folder ``<output_dir>/checkpoints/<name>/``:

- ``model.safetensors`` (and whatever else ``write_model`` writes: the tiny model adds
  ``config.json`` and ``tokenizer.json``, so the folder also loads as a model);
- ``optimizer.safetensors`` + ``optimizer.json``: the tensors of ``optimizer.state_dict()`` and the
  rest of its structure, with a reference to each tensor by name;
- ``scheduler.json``: the learning-rate schedule's state (plain numbers);
- ``rollout.safetensors`` + ``rollout.json``: the rollout batch of the step in progress (sequences,
  advantages, masked views, old/reference log-probs; prompts and rewards), when saved inside a step;
- ``trainer_state.json``: position (steps done, inner updates done), the config, the seed, the
  data position, the non-finite streak, the statistics of the step in progress, and the versions.

Randomness needs no saved generator state: the trainer draws every generator from
``derive_generator(seed, step, ...)`` (rollouts, masks, data order per epoch) and never uses the
global RNG, so the seed and the position determine every later draw.

Writing goes to a temporary folder; each file and the folder are fsynced, the folder is renamed to
its final name, and only then the ``latest`` file is replaced (written to a temporary file, fsynced,
renamed). ``latest`` therefore never names a partial checkpoint. Loading reads only the files
listed above, through ``safetensors`` and ``json``; anything else in the folder (a ``*.pt`` or
``*.pkl``) is never opened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..config import MaskGRPOConfig
from ..masking import MaskedView
from ..modalities.base import Modality
from ..rewards.combine import RewardResult
from ..version import __version__
from . import dist_state
from . import distributed as dist
from .file_checks import folder_problems
from .grpo import Rollout, StepStats, TrainParts, TrainState

__all__ = [
    "CHECKPOINT_FORMAT",
    "FIXED_FIELDS",
    "fsync_path",
    "fsync_tree",
    "load_checkpoint",
    "load_split",
    "read_trainer_state",
    "reconcile_config",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_checkpoint_all_ranks",
    "save_split",
    "write_latest",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
STATE_FILE = "trainer_state.json"
LATEST = "latest"
REQUIRED = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_NAME = re.compile(r"^step_\d{6}(_inner_\d{2})?(_r\d+)?$")
# Fields a resumed run must share with its checkpoint: they fix tensor shapes or the data. So does
# the number of rollouts per step (per_device_train_batch_size x gradient_accumulation_steps x
# processes), however it is split: a checkpoint resumes on any number of processes.
FIXED_FIELDS = (
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
    "max_completion_length",
    "num_generations",
    "num_iterations",
)
# Fixed fields added after checkpoints were first written, with the value an older checkpoint
# (that lacks them) was trained with.
LATER_FIELDS = {"positions": "learned"}
C = TypeVar("C", bound=MaskGRPOConfig)
STALL_ENV = "MASKGRPO_CHECKPOINT_STALL"  # testing hook: "<point>:<flag file>", see _stall


# ---- tensors <-> safetensors + JSON ------------------------------------------------------------


def split_tensors(obj: Any, tensors: dict[str, Tensor], prefix: str = "t") -> Any:
    """A JSON-able copy of ``obj`` with each tensor moved to ``tensors`` under a generated key."""
    if isinstance(obj, Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__items__": [[k, split_tensors(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors, prefix) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} ({obj!r}); only tensors and JSON")


def join_tensors(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
    return {k: join_tensors(v, tensors) for k, v in obj["__items__"]}


def save_split(obj: Any, folder: Path, stem: str) -> None:
    tensors: dict[str, Tensor] = {}
    structure = split_tensors(obj, tensors)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(structure))


def load_split(folder: Path, stem: str, device: torch.device | str = "cpu") -> Any:
    tensors = load_file(str(folder / f"{stem}.safetensors"), device=str(device))
    return join_tensors(json.loads((folder / f"{stem}.json").read_text()), tensors)


# ---- the rollout batch -------------------------------------------------------------------------


def rollout_record(rollout: Rollout) -> dict[str, Any]:
    """Everything of ``rollout`` but the decoded completions (re-decoded from the sequences)."""
    return {
        "prompts": rollout.prompts,
        "sequences": rollout.sequences,
        "rewards": asdict(rollout.rewards),
        "advantages": rollout.advantages,
        "base_mask": rollout.base_mask,
        "views": [[v.noisy_ids, v.scored] for v in rollout.views],
        "old_logp": rollout.old_logp,
        "ref_logp": rollout.ref_logp,
        "vocab_range": None if rollout.vocab_range is None else list(rollout.vocab_range),
    }


def rollout_from_record(rec: dict[str, Any], modality: Modality) -> Rollout:
    seqs: Tensor = rec["sequences"]
    vocab = rec["vocab_range"]
    return Rollout(
        prompts=rec["prompts"],
        completions=modality.decode(seqs[:, modality.prompt_width :]),
        sequences=seqs,
        rewards=RewardResult(**rec["rewards"]),
        advantages=rec["advantages"],
        base_mask=rec["base_mask"],
        views=[MaskedView(ids, scored) for ids, scored in rec["views"]],
        old_logp=rec["old_logp"],
        ref_logp=rec["ref_logp"],
        vocab_range=None if vocab is None else (int(vocab[0]), int(vocab[1])),
        prompt_width=modality.prompt_width,
    )


# ---- writing -----------------------------------------------------------------------------------


def _stall(point: str) -> None:
    """Testing hook: with ``MASKGRPO_CHECKPOINT_STALL=<point>:<flag>``, touch flag and hang here."""
    spec = os.environ.get(STALL_ENV, "")
    name, _, flag = spec.partition(":")
    if name != point:
        return
    if flag:
        Path(flag).touch()
    log.warning("checkpoint writer stalled at %r (%s)", point, STALL_ENV)
    time.sleep(3600)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for item in folder.rglob("*"):
        if item.is_file():
            fsync_path(item)
    fsync_path(folder)


def checkpoint_name(state: TrainState, root: Path) -> str:
    """``step_<done>`` between steps, ``step_<done>_inner_<j>`` inside one; never an existing name."""
    base = f"step_{state.step:06d}"
    if state.rollout is not None:
        base += f"_inner_{state.inner:02d}"
    name, k = base, 0
    while (root / name).exists():
        k += 1
        name = f"{base}_r{k}"
    return name


def trainer_record(state: TrainState, config: dict[str, Any], rows_per_step: int) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "inner": state.inner,
        "has_rollout": state.rollout is not None,
        "stats": [asdict(s) for s in state.stats],
        "nonfinite_streak": state.nonfinite_streak,
        "seed": config["seed"],
        "data_position": {
            "rows_consumed": state.step * rows_per_step,
            "rollouts_per_step": rows_per_step * int(config.get("num_generations", 1)),
        },
        "rng": "every generator is derive_generator(seed, step, ...); no global RNG state is used",
        "config": config,
        "versions": {"torch": torch.__version__, "maskgrpo": __version__},
    }


def save_checkpoint(
    root: Path,
    state: TrainState,
    *,
    write_model: Callable[[Path], None],
    parts: TrainParts,
    config: dict[str, Any],
    rows_per_step: int,
    keep: int = 0,
) -> Path:
    """Write a checkpoint of ``state`` under ``root`` atomically, point ``latest`` at it, prune.

    ``write_model(folder)`` must write ``model.safetensors`` (the full model, or an adapter's
    state dict; :func:`load_checkpoint` loads it with the matching ``strict``).
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{os.getpid()}"
    tmp.mkdir()
    _stall("start")
    write_model(tmp)
    _stall("model")
    save_split(parts.optimizer.state_dict(), tmp, "optimizer")
    (tmp / "scheduler.json").write_text(json.dumps(parts.scheduler.state_dict()))
    if state.rollout is not None:
        save_split(rollout_record(state.rollout), tmp, "rollout")
    _stall("optimizer")
    record = trainer_record(state, config, rows_per_step)
    (tmp / STATE_FILE).write_text(json.dumps(record, indent=1))
    fsync_tree(tmp)
    _stall("before_rename")
    final = root / checkpoint_name(state, root)
    tmp.rename(final)
    fsync_path(root)
    _stall("before_latest")
    write_latest(root, final.name)
    _stall("before_prune")
    prune(root, keep)
    log.info("saved checkpoint %s (step %d, inner update %d)", final, state.step, state.inner)
    return final


def save_checkpoint_all_ranks(
    root: Path,
    state: TrainState,
    *,
    model: nn.Module,
    write_model: Callable[[Path], None],
    parts: TrainParts,
    config: dict[str, Any],
    rows_per_step: int,
    keep: int = 0,
) -> Path:
    """:func:`save_checkpoint` of a run on one or several processes; every process calls it.

    The rollout rows of all processes and, under FSDP or DeepSpeed, the whole model and optimizer
    state are gathered; the main process writes the one-process format; all return its path.
    """
    rollout = dist_state.global_rollout(state.rollout)
    path = None
    with dist_state.full_state(model, parts.optimizer):
        if dist.is_main():
            whole = replace(state, rollout=rollout)
            path = save_checkpoint(
                root,
                whole,
                write_model=write_model,
                parts=parts,
                config=config,
                rows_per_step=rows_per_step,
                keep=keep,
            )
    return Path(dist.broadcast(str(path)))


def write_latest(root: Path, name: str) -> None:
    tmp = root / f".latest-{os.getpid()}"
    with tmp.open("w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    _stall("latest_written")
    os.replace(tmp, root / LATEST)
    fsync_path(root)


def _position(folder: Path) -> tuple[int, int, float]:
    state = json.loads((folder / STATE_FILE).read_text())
    return (int(state["step"]), int(state["inner"]), folder.stat().st_mtime)


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (0 = keep all); never the ``latest`` one."""
    if keep <= 0:
        return
    latest = (root / LATEST).read_text().strip()
    folders = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    folders.sort(key=_position)
    for old in folders[:-keep]:
        if old.name != latest:
            shutil.rmtree(old)


# ---- reading -----------------------------------------------------------------------------------


def resolve_checkpoint(spec: str, out_dir: Path) -> Path:
    """The checkpoint folder ``spec`` names: ``latest`` (in ``output_dir``), a folder, or a root."""
    if spec == "latest":
        return _follow_latest(out_dir / "checkpoints")
    path = Path(spec)
    if (path / STATE_FILE).is_file():
        return path
    for root in (path, path / "checkpoints"):
        if (root / LATEST).is_file():
            return _follow_latest(root)
    raise ValueError(
        f"resume={spec!r} is not a checkpoint folder (no {STATE_FILE}) nor a folder with a "
        f"'{LATEST}' file; pass a folder under <output_dir>/checkpoints or --resume alone"
    )


def _follow_latest(root: Path) -> Path:
    pointer = root / LATEST
    if not pointer.is_file():
        raise ValueError(
            f"no checkpoint to resume: {pointer} does not exist; start without --resume "
            "or pass --resume PATH"
        )
    name = pointer.read_text(errors="replace").strip()
    if not _NAME.match(name) or not (root / name / STATE_FILE).is_file():
        raise ValueError(
            f"{pointer} names {name[:80]!r}, which is not a complete checkpoint in {root}. "
            + _alternatives(root, None)
        )
    return root / name


def intact_checkpoints(root: Path, exclude: Path | None = None) -> list[Path]:
    """Complete, undamaged checkpoint folders under ``root`` (oldest first), but ``exclude``."""
    found = []
    for folder in sorted(p for p in root.iterdir() if _NAME.match(p.name)) if root.is_dir() else []:
        if exclude is not None and folder.resolve() == exclude.resolve():
            continue
        if all((folder / f).is_file() for f in (STATE_FILE, *REQUIRED)):
            if not folder_problems(folder):
                found.append(folder)
    return found


def _alternatives(root: Path, exclude: Path | None) -> str:
    """One sentence naming the intact checkpoints to resume from instead."""
    intact = intact_checkpoints(root, exclude)
    if not intact:
        return "No intact checkpoint is left there; start over with --overwrite."
    names = ", ".join(str(p) for p in intact[-3:])
    return f"Intact checkpoints: {names}; resume from one with --resume PATH."


def read_trainer_state(folder: Path, kind: str = "grpo") -> dict[str, Any]:
    """``trainer_state.json`` of a complete checkpoint of ``kind`` (``"grpo"`` or ``"sft"``).

    A missing, truncated or corrupt file is a ``ValueError`` that names it and the intact
    checkpoints beside ``folder``; so is a checkpoint of the other kind.
    """
    missing = [f for f in (STATE_FILE, *REQUIRED) if not (folder / f).is_file()]
    if missing:
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
        hint = f"; {pickles} are never unpickled" if pickles else ""
        raise ValueError(
            f"checkpoint {folder} lacks {missing}{hint}. " + _alternatives(folder.parent, folder)
        )
    problems = folder_problems(folder)
    if problems:
        raise ValueError(
            f"checkpoint {folder} is damaged: {'; '.join(problems)}. "
            + _alternatives(folder.parent, folder)
        )
    record = json.loads((folder / STATE_FILE).read_text())
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(
            f"checkpoint {folder} has format {found!r} in {STATE_FILE}; this maskgrpo reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    if record.get("kind", "grpo") != kind:
        command = "sft" if record.get("kind") == "sft" else "train"
        raise ValueError(
            f"checkpoint {folder} was written by maskgrpo {command}; resume it with "
            f"maskgrpo {command} --resume"
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        log.warning("ignoring %s in %s: checkpoints are never unpickled", pickles, folder)
    versions = {"torch": torch.__version__, "maskgrpo": __version__}
    if record.get("versions") != versions:
        log.warning("checkpoint written with %s, running %s", record.get("versions"), versions)
    return record


def load_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    parts: TrainParts,
    modality: Modality,
    strict: bool = True,
) -> TrainState:
    """Load weights, optimizer and schedule in place; return the saved :class:`TrainState`."""
    record = read_trainer_state(folder)
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)), strict)
    parts.optimizer.load_state_dict(load_split(folder, "optimizer", device))
    parts.scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    rollout = None
    if record["has_rollout"]:
        rollout = rollout_from_record(load_split(folder, "rollout", device), modality)
        rollout = dist_state.local_rollout(rollout)  # this process's rows of every process's
    return TrainState(
        step=record["step"],
        inner=record["inner"],
        rollout=rollout,
        stats=[StepStats(**s) for s in record["stats"]],
        nonfinite_streak=record["nonfinite_streak"],
    )


def reconcile_config(cfg: C, saved: dict[str, Any], folder: Path) -> C:
    """``cfg`` for resuming from ``folder`` (whose config is ``saved``).

    A changed fixed field, or a different number of rollouts per step over this launch's
    processes, is an error naming it; a changed seed warns and keeps the saved one; any other
    change (learning rate, steps, how the rollouts are split into micro-batches and processes)
    is allowed and logged.
    """
    saved = {**LATER_FIELDS, **saved}
    for name in FIXED_FIELDS:
        if not hasattr(cfg, name):  # the Python API's config names no model or data source
            continue
        if name not in saved:
            raise ValueError(
                f"checkpoint {folder} has no {name!r} in its config: it was written by a "
                "maskgrpo before the TRL field names; resume it with that version"
            )
        if getattr(cfg, name) != saved[name]:
            raise ValueError(
                f"{name}={getattr(cfg, name)!r} differs from {saved[name]!r} in checkpoint "
                f"{folder}; it fixes the run's shapes or data, so resume with {name}={saved[name]!r}"
            )
    _check_rollouts(cfg, saved, folder)
    if cfg.seed != saved["seed"]:
        log.warning(
            "seed=%s differs from the checkpoint's seed=%s; keeping the checkpoint's",
            cfg.seed,
            saved["seed"],
        )
        cfg = replace(cfg, seed=saved["seed"])
    ignored = {"resume", "output_dir", "overwrite"}
    for name, old in saved.items():
        new = getattr(cfg, name, old)
        if name not in ignored and new != old:
            log.info("resuming with %s=%r (checkpoint had %r)", name, new, old)
    return cfg


def _check_rollouts(cfg: MaskGRPOConfig, saved: dict[str, Any], folder: Path) -> None:
    """The step's rollouts must be the checkpoint's: the data order and the saved rollout batch
    depend on them, the split into processes and micro-batches does not."""
    dist.accelerator()  # joins an accelerate launch's process group, so the count is known
    processes = dist.rank_world()[1]
    position = read_trainer_state(folder)["data_position"]
    batch = ("per_device_train_batch_size", "gradient_accumulation_steps")
    if any(name not in saved for name in batch):
        raise ValueError(
            f"checkpoint {folder} has no {batch[0]!r} in its config: it was written by a "
            "maskgrpo before the TRL field names; resume it with that version"
        )
    # checkpoints written before the count was recorded: the same split on as many processes
    expected = position.get("rollouts_per_step", saved[batch[0]] * saved[batch[1]] * processes)
    rollouts = cfg.rollouts_per_step(processes)
    if rollouts != expected:
        per_pass = cfg.per_device_train_batch_size * processes
        hint = (
            f"gradient_accumulation_steps={expected // per_pass}"
            if expected % per_pass == 0
            else "per_device_train_batch_size x gradient_accumulation_steps to match"
        )
        raise ValueError(
            f"per_device_train_batch_size={cfg.per_device_train_batch_size} x "
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} x {processes} "
            f"process(es) = {rollouts} rollouts per step, but checkpoint {folder} has {expected}; "
            f"resume with {expected} rollouts per step ({hint})"
        )


def set_learning_rate(parts: TrainParts, lr: float) -> None:
    """Make ``lr`` the base learning rate of a loaded optimizer and schedule (same position)."""
    scheduler = parts.scheduler
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in parts.optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor
    scheduler._last_lr = [g["lr"] for g in parts.optimizer.param_groups]  # what get_last_lr reads
