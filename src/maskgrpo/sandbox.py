"""Run untrusted Python programs (model-written code) in an isolated, resource-limited process.

Isolation is built from bubblewrap (``bwrap``), a seccomp filter (:mod:`maskgrpo.seccomp`) and
two util-linux tools, ``prlimit`` and ``setpriv``. Every program gets:

* its own PID, network, IPC and UTS namespaces: no network at all (not even the host's loopback),
  no view of host processes, the host name ``sandbox``, and when the outer process dies the kernel
  kills every process in the namespace, so orphaned, daemonised or SIGTERM-ignoring children
  cannot survive;
* a filesystem made of read-only binds of ``/usr`` (and the ``/lib``, ``/bin`` links) and the
  Python installation, a minimal ``/dev``, the program itself read-only at
  ``/sandbox/main.py``, and a private size-capped ``tmpfs`` at ``/tmp`` (the working directory;
  with a bwrap older than 0.7, which cannot cap a tmpfs, a private host temporary folder).
  No ``/proc`` is mounted, so the mount table (which names host folders) cannot be read; no host
  folder is writable or even named besides ``/usr`` and the Python installation;
* no capabilities (effective, permitted, inheritable, ambient and bounding sets empty),
  ``no_new_privs``, and the seccomp filter: creating or entering namespaces, mounting,
  ``ptrace`` and other kernel surface answer ``EPERM``;
* an empty environment;
* rlimits on CPU time, address space, file size, open files and number of processes, plus a
  wall-clock timeout after which the whole process group (and with it the namespace) is killed;
* a cap on captured stdout/stderr: a program that prints more is killed.

The process cap needs care when the caller is root, because the kernel never applies
``RLIMIT_NPROC`` to uid 0, not even to uid 0 mapped inside a user namespace. As root the program
therefore runs under a dedicated unprivileged uid (one per concurrent run, so runs do not share a
process budget), dropped to with ``setpriv`` inside the namespaces. As a normal user a user
namespace is created instead (with ``--disable-userns`` where bwrap has it); since Linux 5.14 the
process count is then kept per namespace.

:meth:`Sandbox.run_pair` runs two programs in two separate sandboxes joined only by a pair of
pipes: the code reward runs its trusted judge in one and the untrusted solution in the other.

Without a working ``bwrap`` the sandbox refuses to run unless constructed with
``allow_unsafe=True``, which keeps the rlimits, process group and timeout but gives no
filesystem, network or process-table isolation.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from .sandbox_process import Launch, SandboxResult, start, supervise
from .seccomp import seccomp_filter

__all__ = [
    "Sandbox",
    "SandboxProgram",
    "SandboxResult",
    "SandboxUnavailableError",
    "bwrap_options",
    "sandbox_available",
]

logger = logging.getLogger(__name__)

_UID_BASE = 200_000  # first uid used for sandboxed programs when the caller is root
_UID_SLOTS = 256  # concurrent runs per calling process (uids are per process and slot)
PROGRAM_PATH = "/sandbox/main.py"  # a compiled program goes to /sandbox/main.pyc
T = TypeVar("T")


class SandboxUnavailableError(RuntimeError):
    """Raised when isolation is needed but ``bwrap`` does not work on this machine."""


@dataclass(frozen=True)
class SandboxProgram:
    """One program to run: its source, what it reads on stdin, and its ``sys.argv[1:]``.

    ``code`` as ``bytes`` is a compiled ``.pyc`` (header and marshalled code object) for the
    sandbox's own interpreter; trusted programs run many times save their compile time this way.
    """

    code: str | bytes
    stdin: str | bytes = ""
    args: tuple[str, ...] = field(default_factory=tuple)


@functools.cache
def bwrap_options() -> frozenset[str]:
    """The options the installed ``bwrap`` lists in its ``--help`` (empty when not installed)."""
    if shutil.which("bwrap") is None:
        return frozenset()
    try:
        text = subprocess.run(
            ["bwrap", "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(word for word in text.split() if word.startswith("--"))


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


@functools.cache
def _filter_bytes() -> bytes | None:
    rules = seccomp_filter()
    if rules is None:
        logger.warning(
            "no seccomp filter for machine %r: sandboxed programs may create namespaces",
            os.uname().machine,
        )
    return rules


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
    made: set[str] = {"/", "/usr", "/tmp", "/sandbox"}
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


def _data_file(data: bytes, files: list[IO[bytes]]) -> int:
    """An unlinked temporary file holding ``data``, rewound; its fd (closed with ``files``)."""
    handle = tempfile.TemporaryFile()
    handle.write(data)
    handle.seek(0)
    files.append(handle)
    return handle.fileno()


class Sandbox:
    """Runs Python source code in an isolated child process; thread-safe.

    Args:
        timeout_s: wall-clock limit per program; the CPU-time rlimit is set just above it.
        memory_mb: address-space limit (``RLIMIT_AS``) per process.
        max_procs: processes and threads the program may have at once (fork bombs stop here).
        max_output_bytes: bytes kept per stream; a program printing more is killed.
        max_file_mb: largest file the program may write (``RLIMIT_FSIZE``).
        max_open_files: ``RLIMIT_NOFILE``.
        tmp_mb: size of the writable ``/tmp`` (a tmpfs, so it counts against memory).
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
        tmp_mb: int = 64,
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
            "tmp_mb": tmp_mb,
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
        self.tmp_mb = int(tmp_mb)
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

    # ---- public API ----------------------------------------------------------------------------

    def run(self, code: str, stdin: str = "") -> SandboxResult:
        """Run one program (the text of a ``.py`` file) and return what it did."""
        return self._run([SandboxProgram(code, stdin)])[0]

    def run_pair(
        self, main: SandboxProgram, peer: SandboxProgram
    ) -> tuple[SandboxResult, SandboxResult]:
        """Run ``main`` and ``peer`` in two separate sandboxes joined by two pipes.

        Each program gets two extra arguments after its own: the descriptor it reads its
        partner's messages from, and the one it writes its messages to. Nothing else is shared:
        neither can see, signal or write to the other's processes, files or output. The run
        ends when ``main`` ends (``peer`` is then killed) or at the timeout (both are killed).
        """
        first, second = self._run([main, peer])
        return first, second

    def run_many(
        self,
        codes: Sequence[str],
        max_workers: int | None = None,
        stdins: Sequence[str] | None = None,
    ) -> list[SandboxResult]:
        """Run programs concurrently (threads launching processes); results keep input order."""
        inputs = list(stdins) if stdins is not None else [""] * len(codes)
        if len(inputs) != len(codes):
            raise ValueError(
                f"run_many got {len(codes)} programs but {len(inputs)} stdins; pass one per program."
            )
        return self.map(self.run, list(zip(codes, inputs, strict=True)), max_workers)

    def map(
        self,
        fn: Callable[..., T],
        items: Sequence[tuple[Any, ...]],
        max_workers: int | None = None,
    ) -> list[T]:
        """``[fn(*item) for item in items]`` on a thread pool of ``max_workers``; input order."""
        if max_workers is None:
            max_workers = min(32, os.cpu_count() or 1)
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers} must be at least 1.")
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
            return list(pool.map(lambda item: fn(*item), items))

    # ---- launching -----------------------------------------------------------------------------

    def _run(self, programs: list[SandboxProgram]) -> list[SandboxResult]:
        """Start ``programs`` (one, or a main program and its peer joined by pipes) and watch them."""
        ends: list[tuple[int, ...]] = [()] * len(programs)
        pipes: list[int] = []
        if len(programs) == 2:
            main_reads, peer_writes = os.pipe()
            peer_reads, main_writes = os.pipe()
            pipes = [main_reads, peer_writes, peer_reads, main_writes]
            ends = [(main_reads, main_writes), (peer_reads, peer_writes)]
        files: list[IO[bytes]] = []
        uids: list[int] = []
        workdirs: list[str] = []
        try:
            launches = []
            for program, own in zip(programs, ends, strict=True):
                uid = _UID_POOL.acquire() if self._isolated and os.geteuid() == 0 else None
                if uid is not None:
                    uids.append(uid)
                launches.append(self._launch(program, own, uid, files, workdirs))
            procs = start(launches)
            # The children hold their own copies; closing ours lets each see EOF when the
            # other side exits.
            while pipes:
                os.close(pipes.pop())
            for handle in files:
                handle.close()
            return supervise(
                procs,
                timeout_s=self.timeout_s,
                max_output_bytes=self.max_output_bytes,
                namespaced=self._isolated,
            )
        finally:
            for fd in pipes:
                os.close(fd)
            for handle in files:
                handle.close()
            for uid in uids:
                _UID_POOL.release(uid)
            for workdir in workdirs:
                shutil.rmtree(workdir, ignore_errors=True)

    def _launch(
        self,
        program: SandboxProgram,
        own: tuple[int, ...],
        uid: int | None,
        files: list[IO[bytes]],
        workdirs: list[str],
    ) -> Launch:
        stdin = program.stdin
        stdin_fd = _data_file(stdin.encode("utf-8") if isinstance(stdin, str) else stdin, files)
        args = [*program.args, *(str(fd) for fd in own)]
        code = program.code.encode("utf-8") if isinstance(program.code, str) else program.code
        name = "main.py" if isinstance(program.code, str) else "main.pyc"
        if not self._isolated:
            workdir = tempfile.mkdtemp(prefix="maskgrpo-sandbox-")
            workdirs.append(workdir)
            main = os.path.join(workdir, name)
            with open(main, "wb") as f:
                f.write(code)
            cmd = [*self._limits(), self.python, *self._python_flags, main, *args]
            return Launch(cmd, stdin_fd, own, cwd=workdir)
        code_fd = _data_file(code, files)
        rules = _filter_bytes()
        filter_fd = _data_file(rules, files) if rules is not None else None
        tmp_dir = None
        if "--size" not in bwrap_options():  # bwrap < 0.7 cannot cap a tmpfs: a host folder
            tmp_dir = tempfile.mkdtemp(prefix="maskgrpo-sandbox-")
            workdirs.append(tmp_dir)
            if uid is not None:
                os.chown(tmp_dir, uid, uid)
                os.chmod(tmp_dir, 0o711)  # bwrap enters it before dropping to `uid`
        cmd = self._bwrap_command(code_fd, filter_fd, uid, f"/sandbox/{name}", tmp_dir) + args
        passed = (code_fd, *own) if filter_fd is None else (code_fd, filter_fd, *own)
        return Launch(cmd, stdin_fd, passed, cwd="/")

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

    def _bwrap_command(
        self,
        code_fd: int,
        filter_fd: int | None,
        uid: int | None,
        path: str = PROGRAM_PATH,
        tmp_dir: str | None = None,
    ) -> list[str]:
        options = bwrap_options()
        cmd = ["bwrap", *_root_binds(), *_python_binds(self.python)]
        if tmp_dir is None:
            cmd += ["--size", str(self.tmp_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", "/tmp"]
        else:
            cmd += ["--bind", tmp_dir, "/tmp"]
        cmd += ["--chdir", "/tmp", "--dev", "/dev"]
        cmd += ["--dir", "/sandbox", "--perms", "0444", "--ro-bind-data", str(code_fd), path]
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        cmd += ["--unshare-cgroup-try", "--hostname", "sandbox"]
        cmd += ["--die-with-parent", "--new-session", "--clearenv", "--setenv", "HOME", "/tmp"]
        if filter_fd is not None:
            cmd += ["--seccomp", str(filter_fd)]
        if uid is None:
            cmd += ["--unshare-user", "--cap-drop", "ALL"]
            if "--disable-userns" in options:
                cmd += ["--disable-userns"]
            cmd += ["--", *self._limits()]
        else:
            cmd += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
                cmd += ["--cap-add", cap]
            cmd += ["--", *self._limits(), "setpriv", f"--reuid={uid}", f"--regid={uid}"]
            cmd += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
            cmd += ["--"]
        return cmd + [self.python, *self._python_flags, path]
