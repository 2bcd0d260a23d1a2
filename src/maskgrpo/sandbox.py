"""Run untrusted Python programs (model-written code) in an isolated, resource-limited process.

Isolation is built from bubblewrap (``bwrap``) and two util-linux tools, ``prlimit`` and
``setpriv``. Every program gets:

* its own PID, network, IPC and UTS namespaces: no network at all (not even the host's loopback),
  no view of host processes, and when the outer process dies the kernel kills every process in
  the namespace, so orphaned, daemonised or SIGTERM-ignoring children cannot survive;
* a filesystem made of read-only binds of ``/usr`` (and the ``/lib``, ``/bin`` links) and the
  Python installation, a fresh ``/proc`` and ``/dev``, and one private temporary directory
  mounted read-write at ``/tmp`` (also the working directory); nothing else of the host is visible;
* an empty environment and no capabilities;
* rlimits on CPU time, address space, file size, open files and number of processes, plus a
  wall-clock timeout after which the whole process group (and with it the namespace) is killed;
* a cap on captured stdout/stderr: a program that prints more is killed.

The process cap needs care when the caller is root, because the kernel never applies
``RLIMIT_NPROC`` to uid 0, not even to uid 0 mapped inside a user namespace. As root the program
therefore runs under a dedicated unprivileged uid (one per concurrent run, so runs do not share a
process budget), dropped to with ``setpriv`` inside the namespaces. As a normal user a user
namespace is created instead; since Linux 5.14 the process count is then kept per namespace.

Without a working ``bwrap`` the sandbox refuses to run unless constructed with
``allow_unsafe=True``, which keeps the rlimits, process group and timeout but gives no
filesystem, network or process-table isolation.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_UID_BASE = 200_000  # first uid used for sandboxed programs when the caller is root
_UID_SLOTS = 256  # concurrent runs per calling process (uids are per process and slot)


class SandboxUnavailableError(RuntimeError):
    """Raised when isolation is needed but ``bwrap`` does not work on this machine."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program.

    ``killed_reason`` is ``None`` when the program ended by itself, else ``"timeout"`` or
    ``"output_limit"``. ``returncode`` is negative when the program was killed by a signal.
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


@functools.cache
def sandbox_available() -> bool:
    """Whether ``bwrap`` is installed and can create the namespaces this sandbox uses."""
    if shutil.which("bwrap") is None or shutil.which("prlimit") is None:
        return False
    try:
        result = Sandbox(timeout_s=10.0).run("print('ok')")
    except (OSError, SandboxUnavailableError) as err:
        logger.warning("bwrap is installed but failed to start: %s", err)
        return False
    if result.stdout.strip() != "ok":
        logger.warning("bwrap self-test failed: rc=%s stderr=%r", result.returncode, result.stderr)
        return False
    return True


class _UidPool:
    """Hands out distinct unprivileged uids to concurrent runs (root mode only)."""

    def __init__(self) -> None:
        self._free = list(range(_UID_SLOTS))
        self._cond = threading.Condition()
        self._base = _UID_BASE + (os.getpid() % 4096) * _UID_SLOTS

    def acquire(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._base + self._free.pop()

    def release(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid - self._base)
            self._cond.notify()


_UID_POOL = _UidPool()


def _python_binds(python: str) -> list[str]:
    """Read-only bind arguments that make ``python`` and its standard library visible."""
    prefix = os.path.realpath(sys.base_prefix)
    exe_dir = os.path.dirname(os.path.realpath(python))
    args: list[str] = []
    made: set[str] = {"/", "/usr", "/tmp"}
    for root in sorted({prefix, exe_dir}):
        if root.startswith("/usr/") or root == "/usr":
            continue
        parts = root.strip("/").split("/")
        for depth in range(1, len(parts)):
            parent = "/" + "/".join(parts[:depth])
            if parent not in made:
                # bwrap creates missing parents with mode 0700, which a non-root uid cannot cross.
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--ro-bind", root, root]
    return args


def _root_binds() -> list[str]:
    """Binds for /usr plus the /lib, /lib64, /bin, /sbin links or directories of the host."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


class Sandbox:
    """Runs Python source code in an isolated child process; thread-safe.

    Args:
        timeout_s: wall-clock limit per program; the CPU-time rlimit is set just above it.
        memory_mb: address-space limit (``RLIMIT_AS``) per process.
        max_procs: processes and threads the program may have at once (fork bombs stop here).
        max_output_bytes: bytes kept per stream; a program printing more is killed.
        max_file_mb: largest file the program may write (``RLIMIT_FSIZE``).
        max_open_files: ``RLIMIT_NOFILE``.
        python: interpreter to run inside; defaults to the one running this library.
        site_packages: import ``site`` so installed packages are importable; off by default,
            which limits programs to the standard library and starts them about 4x faster.
        allow_unsafe: run without namespaces when ``bwrap`` is unavailable (rlimits only).
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        max_procs: int = 32,
        max_output_bytes: int = 65_536,
        *,
        max_file_mb: int = 16,
        max_open_files: int = 64,
        python: str | None = None,
        site_packages: bool = False,
        allow_unsafe: bool = False,
    ) -> None:
        checks = {
            "timeout_s": timeout_s,
            "memory_mb": memory_mb,
            "max_procs": max_procs,
            "max_output_bytes": max_output_bytes,
            "max_file_mb": max_file_mb,
            "max_open_files": max_open_files,
        }
        for name, value in checks.items():
            if not value > 0:
                raise ValueError(f"Sandbox {name}={value!r} must be positive.")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.max_procs = int(max_procs)
        self.max_output_bytes = int(max_output_bytes)
        self.max_file_mb = int(max_file_mb)
        self.max_open_files = int(max_open_files)
        self.python = os.path.realpath(python or sys.executable)
        self.allow_unsafe = allow_unsafe
        self._python_flags = ["-I"] if site_packages else ["-I", "-S"]
        self._isolated = shutil.which("bwrap") is not None and shutil.which("prlimit") is not None
        if not self._isolated and not allow_unsafe:
            raise SandboxUnavailableError(
                "bwrap/prlimit not found: install bubblewrap and util-linux "
                "(apt-get install bubblewrap) or pass allow_unsafe=True to run untrusted code "
                "with resource limits only."
            )

    def _limits(self) -> list[str]:
        cpu = math.ceil(self.timeout_s) + 1
        return [
            "prlimit",
            f"--cpu={cpu}",
            f"--as={self.memory_mb * 1024 * 1024}",
            f"--fsize={self.max_file_mb * 1024 * 1024}",
            f"--nofile={self.max_open_files}",
            f"--nproc={self.max_procs}",
            "--core=0",
            "--",
        ]

    def _bwrap_command(self, workdir: str, uid: int | None) -> list[str]:
        cmd = ["bwrap", *_root_binds(), *_python_binds(self.python)]
        cmd += ["--bind", workdir, "/tmp", "--chdir", "/tmp", "--proc", "/proc", "--dev", "/dev"]
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        cmd += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        cmd += ["--setenv", "HOME", "/tmp"]
        if uid is None:
            cmd += ["--unshare-user", "--cap-drop", "ALL", "--", *self._limits()]
        else:
            cmd += ["--cap-drop", "ALL"]
            cmd += [
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_SETPCAP",
            ]
            cmd += ["--", *self._limits(), "setpriv", f"--reuid={uid}", f"--regid={uid}"]
            cmd += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
            cmd += ["--"]
        return cmd + [self.python, *self._python_flags, "/tmp/main.py"]

    def run(self, code: str, stdin: str = "") -> SandboxResult:
        """Run one program (the text of a ``.py`` file) and return what it did."""
        workdir = tempfile.mkdtemp(prefix="maskgrpo-sandbox-")
        uid = _UID_POOL.acquire() if self._isolated and os.geteuid() == 0 else None
        try:
            with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
                f.write(code)
            if uid is not None:
                os.chown(workdir, uid, uid)
                os.chmod(workdir, 0o711)  # bwrap enters it before dropping to `uid`
                os.chown(os.path.join(workdir, "main.py"), uid, uid)
            if self._isolated:
                cmd = self._bwrap_command(workdir, uid)
            else:
                main = os.path.join(workdir, "main.py")
                cmd = [*self._limits(), self.python, *self._python_flags, main]
            return self._execute(cmd, workdir, stdin)
        finally:
            if uid is not None:
                _UID_POOL.release(uid)
            shutil.rmtree(workdir, ignore_errors=True)

    def run_many(
        self,
        codes: Sequence[str],
        max_workers: int | None = None,
        stdins: Sequence[str] | None = None,
    ) -> list[SandboxResult]:
        """Run programs concurrently (threads launching processes); results keep input order."""
        if max_workers is None:
            max_workers = min(32, os.cpu_count() or 1)
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers} must be at least 1.")
        inputs = list(stdins) if stdins is not None else [""] * len(codes)
        if len(inputs) != len(codes):
            raise ValueError(
                f"run_many got {len(codes)} programs but {len(inputs)} stdins; pass one per program."
            )
        if not codes:
            return []
        with ThreadPoolExecutor(max_workers=min(max_workers, len(codes))) as pool:
            return list(pool.map(self.run, codes, inputs))

    def _execute(self, cmd: list[str], workdir: str, stdin: str) -> SandboxResult:
        stdin_path = os.path.join(workdir, ".stdin")
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(stdin)
        with open(stdin_path, "rb") as stdin_file:
            proc = subprocess.Popen(
                cmd,
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env={},
                start_new_session=True,  # own process group, killed as a whole below
                close_fds=True,
            )
        try:
            out, err, reason = self._collect(proc)
        finally:
            # Isolated runs die with their PID namespace; unsafe runs may leave group members.
            if proc.returncode is None or not self._isolated:
                _kill_group(proc)
            _close_pipes(proc)
        return SandboxResult(
            returncode=proc.returncode if reason is None else -signal.SIGKILL,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            timed_out=reason == "timeout",
            killed_reason=reason,
        )

    def _collect(self, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes, str | None]:
        """Read both pipes until EOF, the deadline, or the output cap; kill on the latter two."""
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + self.timeout_s
        chunks: dict[int, bytearray] = {proc.stdout.fileno(): bytearray()}
        chunks[proc.stderr.fileno()] = bytearray()
        reason: str | None = None
        with selectors.DefaultSelector() as sel:
            for stream in (proc.stdout, proc.stderr):
                sel.register(stream, selectors.EVENT_READ)
            while sel.get_map() and reason is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = "timeout"
                    break
                for key, _ in sel.select(timeout=left):
                    data = os.read(key.fd, 65_536)
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    buf = chunks[key.fd]
                    buf += data
                    if len(buf) > self.max_output_bytes:
                        del buf[self.max_output_bytes :]
                        reason = "output_limit"
        if reason is not None:
            _kill_group(proc)
        else:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()) + 0.5)
            except subprocess.TimeoutExpired:
                reason = "timeout"
        out, err = (bytes(chunks[s.fileno()]) for s in (proc.stdout, proc.stderr))
        return out, err, reason


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
