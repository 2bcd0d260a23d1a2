"""Run outputs: metrics.jsonl, TensorBoard (when installed), samples, reward-curve PNG, and the
guard that keeps a fresh run from writing over an earlier one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "RUN_FILES",
    "RunLogger",
    "check_not_a_training_run",
    "check_output_dir",
    "plot_curves",
    "prepare_output_dir",
]

# What sft and train write into their output folder; any of these means the folder holds a run.
RUN_FILES = (
    "checkpoints",
    "model",
    "metrics.jsonl",
    "samples.jsonl",
    "summary.json",
    "train_config.yaml",
    "sft_config.yaml",
    "reward_curve.png",
    "tensorboard",
)

log = logging.getLogger(__name__)


def check_output_dir(path: str | Path) -> None:
    """``path`` is a folder, or can become one: neither a file nor under one, and writable."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output folder {path} is a file; pass a folder to --output-dir")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output folder {path} lies under the file {existing}; pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {path}: {existing} is not writable; pass another folder")


def check_not_a_training_run(path: str | Path) -> None:
    """Refuse ``path`` when it holds an ``sft`` or ``train`` run (for commands that would write
    over its ``samples.jsonl``, such as a benchmark evaluation)."""
    folder = Path(path)
    training = ("checkpoints", "metrics.jsonl", "train_config.yaml", "sft_config.yaml")
    found = [name for name in training if (folder / name).exists()]
    if found:
        raise ValueError(
            f"output folder {path} holds a training run ({', '.join(found)}), whose files an "
            "evaluation would overwrite; pass another --output-dir"
        )


def prepare_output_dir(path: str | Path, *, resume: bool, overwrite: bool) -> list[str]:
    """Create ``path`` for a run; refuse a fresh run where one already is.

    A folder holding any of :data:`RUN_FILES` holds a run: a fresh run there is refused, so that
    nothing is overwritten, unless ``resume`` (continue it) or ``overwrite`` (delete those files
    first, then start clean; nothing else in the folder is touched). Returns what was deleted.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one of them")
    check_output_dir(path)
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise ValueError(
            f"cannot write to output folder {path} ({err.strerror}); pass a writable folder"
        ) from None
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if not found or resume:
        return []
    if not overwrite:
        raise ValueError(
            f"output folder {path} already holds a run ({', '.join(found)}); pass --resume to "
            "continue it from its own checkpoints, --overwrite to delete it and start over, or "
            "another --output-dir"
        )
    for name in found:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    log.warning("--overwrite: deleted %s from %s", ", ".join(found), path)
    return found


class RunLogger:
    """Appends one JSON line per step to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    ``enabled=False`` (the non-main processes of a distributed run) writes nothing.
    """

    def __init__(
        self, out_dir: str | Path, *, tensorboard: bool = True, enabled: bool = True
    ) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.samples_path = self.out_dir / "samples.jsonl"
        self._tb: Any = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed; logging to metrics.jsonl only")
            else:
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def log(self, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self._tb is not None:
            step = int(metrics["step"])
            for key, value in metrics.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, step)

    def truncate(self, step: int) -> None:
        """Drop metrics and samples of steps after ``step`` (logged before a crash; resuming
        from a checkpoint at ``step`` logs them again)."""
        if not self.enabled:
            return
        for path in (self.metrics_path, self.samples_path):
            if not path.exists():
                continue
            lines = path.read_text().splitlines(keepends=True)
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
            if len(kept) != len(lines):
                tmp = path.with_suffix(".tmp")
                tmp.write_text("".join(kept))
                tmp.replace(path)

    def samples(
        self, step: int, prompts: list[str], completions: list[str], rewards: list[Any]
    ) -> None:
        if not self.enabled:
            return
        with self.samples_path.open("a") as fh:
            for p, c, r in zip(prompts, completions, rewards, strict=True):
                fh.write(
                    json.dumps({"step": step, "prompt": p, "completion": c, "reward": r}) + "\n"
                )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(
    metrics: list[dict[str, Any]],
    path: str | Path,
    *,
    keys: tuple[str, ...] = ("reward_mean",),
    title: str = "",
    smooth: int = 10,
) -> Path:
    """Plot ``keys`` against step (raw and a moving average) to a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    steps = [m["step"] for m in metrics]
    for ax, key in zip(axes[0], keys, strict=True):
        values = [m.get(key, float("nan")) for m in metrics]
        ax.plot(steps, values, alpha=0.35, label=key)
        if len(values) >= smooth > 1:
            avg = [
                sum(values[i - smooth + 1 : i + 1]) / smooth for i in range(smooth - 1, len(values))
            ]
            ax.plot(steps[smooth - 1 :], avg, label=f"{key} ({smooth}-step mean)")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
