"""Stopping a run cleanly: SIGINT/SIGTERM ask the loop to stop after the current inner update.

The handler only records the request; the loop asks :class:`StopRequest` after each rollout,
inner update and step, returns, and the caller saves a checkpoint. A second signal raises
``KeyboardInterrupt`` at once (the last complete checkpoint stays valid: saving is atomic).
``MASKGRPO_INTERRUPT_AT=<step>:<inner>`` requests the same stop once the loop reaches inner update
``inner`` (0 = right after the rollout) of step ``step`` (1-based, as in the metrics), as if
SIGTERM had arrived; tests use it to interrupt at an exact point. SFT asks
:meth:`StopRequest.after_step` after each optimizer step instead, where ``<step>:0`` stops once
``step`` steps are done.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from .grpo import TrainState

__all__ = ["INTERRUPT_ENV", "StopRequest", "TrainingInterrupted", "handle_signals"]

log = logging.getLogger(__name__)

INTERRUPT_ENV = "MASKGRPO_INTERRUPT_AT"


class TrainingInterrupted(Exception):
    """A signal stopped the run; ``checkpoint`` holds it and ``command`` resumes it."""

    def __init__(
        self,
        checkpoint: Path,
        out_dir: Path,
        *,
        signum: int,
        position: tuple[int, int],
        command: str = "train",
    ) -> None:
        self.checkpoint = checkpoint
        self.signum = signum
        config = shlex.quote(str(out_dir / f"{command}_config.yaml"))
        resume = shlex.quote(str(checkpoint))
        self.command = f"maskgrpo {command} --config {config} --resume {resume}"
        step, inner = position
        where = f"{step} steps" + (f" and {inner} inner updates of the next" if inner else "")
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after {where}; checkpoint saved to "
            f"{checkpoint}. Resume with:\n  {self.command}"
        )


class StopRequest:
    """Callable ``(state) -> bool`` for ``train_grpo(should_stop=...)``; ``signum`` once asked."""

    def __init__(self, at: tuple[int, int] | None = None) -> None:
        self.signum = 0
        self.at = at

    @classmethod
    def from_env(cls) -> StopRequest:
        spec = os.environ.get(INTERRUPT_ENV, "")
        if not spec:
            return cls()
        step, _, inner = spec.partition(":")
        if not (step.isdigit() and inner.isdigit()):
            raise ValueError(f"{INTERRUPT_ENV}={spec!r}; expected <step>:<inner>, e.g. 3:1")
        return cls((int(step), int(inner)))

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: finishing the current inner update, then saving a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def after_step(self, steps_done: int) -> bool:
        """For SFT: stop now (a signal arrived, or the testing hook says ``<steps_done>:0``)."""
        if self.at is not None and self.at == (steps_done, 0):
            self.signum = signal.SIGTERM
        return bool(self.signum)

    def __call__(self, state: TrainState) -> bool:
        if (
            self.at is not None
            and self.at == (state.step + 1, state.inner)
            and state.rollout is not None
        ):
            self.signum = signal.SIGTERM
        return bool(self.signum)


@contextmanager
def handle_signals(stop: StopRequest) -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to ``stop`` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
