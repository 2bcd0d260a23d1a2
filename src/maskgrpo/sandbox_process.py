"""Start sandboxed processes and watch them: output caps, one deadline, and clean kills.

:func:`start` launches each command in its own session (so its whole process group can be
killed); :func:`supervise` reads every stdout and stderr until the first process (the main one)
is done, the deadline passes, or a stream exceeds its cap, then kills what is left. A process in
a PID namespace takes the namespace down with it; the kill waits until the namespace is empty.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

__all__ = ["Launch", "SandboxResult", "start", "supervise"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program.

    ``killed_reason`` is ``None`` when the program ended by itself (or, for the peer of
    :meth:`~maskgrpo.sandbox.Sandbox.run_pair`, was stopped because the main program ended),
    else ``"timeout"`` or ``"output_limit"``. ``returncode`` is negative when the program was
    killed by a signal.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None

    @property
    def ok(self) -> bool:
        """True when the program exited with status 0 on its own."""
        return self.returncode == 0 and self.killed_reason is None


@dataclass(frozen=True)
class Launch:
    """A command to start: its stdin descriptor, descriptors it inherits, working directory."""

    cmd: list[str]
    stdin_fd: int
    pass_fds: tuple[int, ...]
    cwd: str


def start(launches: list[Launch]) -> list[subprocess.Popen[bytes]]:
    """Start every launch; on a failure, kill the ones already started and re-raise."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for launch in launches:
            procs.append(
                subprocess.Popen(
                    launch.cmd,
                    stdin=launch.stdin_fd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=launch.cwd,
                    env={},
                    start_new_session=True,  # own process group, killed as a whole
                    close_fds=True,
                    pass_fds=launch.pass_fds,
                )
            )
    except BaseException:
        for proc in procs:
            _kill_group(proc)
            _close_pipes(proc)
        raise
    return procs


class _Streams:
    """Output buffers of every process, read through one selector."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], cap: int) -> None:
        self.cap = cap
        self.sel = selectors.DefaultSelector()
        self.bufs: list[tuple[bytearray, bytearray]] = []
        for i, proc in enumerate(procs):
            assert proc.stdout is not None and proc.stderr is not None
            out, err = bytearray(), bytearray()
            self.bufs.append((out, err))
            self.sel.register(proc.stdout, selectors.EVENT_READ, (i, out))
            self.sel.register(proc.stderr, selectors.EVENT_READ, (i, err))

    def open_of(self, i: int) -> list[selectors.SelectorKey]:
        return [k for k in self.sel.get_map().values() if k.data[0] == i]

    def drop(self, i: int) -> None:
        for key in self.open_of(i):
            self.sel.unregister(key.fileobj)

    def read(self, timeout: float) -> list[int]:
        """Read what is ready; returns the indices of processes that went over the cap."""
        over: list[int] = []
        for key, _ in self.sel.select(timeout=timeout):
            i, buf = key.data
            data = os.read(key.fd, 65_536)
            if not data:
                self.sel.unregister(key.fileobj)
                continue
            buf += data
            if len(buf) > self.cap:
                del buf[self.cap :]
                over.append(i)
        return over

    def drain(self) -> None:
        """Read what is left without waiting (the writers are dead or stopped)."""
        for _ in range(64):
            if not self.sel.get_map() or not self.sel.select(timeout=0):
                break
            self.read(0)
        self.sel.close()


def supervise(
    procs: list[subprocess.Popen[bytes]],
    *,
    timeout_s: float,
    max_output_bytes: int,
    namespaced: bool,
) -> list[SandboxResult]:
    """Collect the output of ``procs`` until ``procs[0]`` ends; kill the rest; results in order."""
    deadline = time.monotonic() + timeout_s
    reasons: list[str | None] = [None] * len(procs)
    streams = _Streams(procs, max_output_bytes)
    try:
        while streams.open_of(0) and reasons[0] is None:
            left = deadline - time.monotonic()
            if left <= 0:
                reasons = _timed_out(procs, reasons)
                break
            for i in streams.read(left):
                reasons[i] = reasons[i] or "output_limit"
                _kill_group(procs[i])
                streams.drop(i)
        if reasons[0] is None:
            try:
                procs[0].wait(timeout=max(0.0, deadline - time.monotonic()) + 0.5)
            except subprocess.TimeoutExpired:
                reasons = _timed_out(procs, reasons)
    finally:
        for proc in procs:
            # Namespaced runs die with their PID namespace; unsafe runs may leave group members.
            if proc.returncode is None or not namespaced:
                _kill_group(proc)
        streams.drain()
        for proc in procs:
            _close_pipes(proc)
    return [
        SandboxResult(
            returncode=proc.returncode if reason is None else -signal.SIGKILL,
            stdout=bytes(out).decode("utf-8", errors="replace"),
            stderr=bytes(err).decode("utf-8", errors="replace"),
            timed_out=reason == "timeout",
            killed_reason=reason,
        )
        for proc, reason, (out, err) in zip(procs, reasons, streams.bufs, strict=True)
    ]


def _timed_out(procs: list[subprocess.Popen[bytes]], reasons: list[str | None]) -> list[str | None]:
    """``"timeout"`` for every process still running that has no reason yet."""
    return [
        "timeout" if r is None and proc.poll() is None else r
        for proc, r in zip(procs, reasons, strict=True)
    ]


def _namespace_inits(pid: int) -> list[int]:
    """Host pids of the children of ``pid`` (bwrap's PID-namespace init), read from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _wait_gone(pids: list[int], timeout_s: float = 2.0) -> None:
    """Poll until none of ``pids`` exists (a namespace init exits after all its members)."""
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.005)


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (its state letter in /proc/pid/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group, reap it, and wait for its PID namespace to empty."""
    inits = _namespace_inits(proc.pid) if proc.returncode is None else []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError as err:  # the group leader changed uid; kill it directly
        logger.debug("killpg(%d) refused: %s", proc.pid, err)
        proc.kill()
    proc.wait()
    _wait_gone(inits)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
