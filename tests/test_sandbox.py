"""Sandbox guarantees: attack programs are contained, and real benchmark solutions pass.

Every attack must end within ``timeout + 1 s`` and leave no process behind. Escaping children
carry a unique marker in their command line, and ``/proc`` is scanned for it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from maskgrpo import sandbox as sandbox_module
from maskgrpo.rewards.code import CodeExecutionReward
from maskgrpo.sandbox import Sandbox, SandboxProgram, SandboxUnavailableError, sandbox_available

TIMEOUT = 1.0
SHARED = Path(
    os.environ.get("MASKGRPO_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)

needs_bwrap = pytest.mark.skipif(
    not sandbox_available(), reason="bubblewrap sandbox not usable here"
)


def _marked(marker: str) -> list[int]:
    """Pids whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def _spawner(body: str, marker: str) -> str:
    """Program that re-executes itself as ``body`` with ``marker`` in its argv."""
    return (
        f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {body!r}, {marker!r}])\n"
    )


def _contained(sandbox: Sandbox, code: str, marker: str | None = None, **kw: str):
    start = time.monotonic()
    result = sandbox.run(code, **kw)
    while marker and _marked(marker) and time.monotonic() - start < sandbox.timeout_s + 1.0:
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    assert elapsed <= sandbox.timeout_s + 1.0, f"took {elapsed:.2f}s"
    if marker:
        assert _marked(marker) == [], "a sandboxed process survived"
    return result


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout_s=TIMEOUT, memory_mb=512, max_procs=16, max_output_bytes=10_000)


@needs_bwrap
def test_runs_code_and_returns_output(sandbox: Sandbox) -> None:
    result = sandbox.run("import sys\nprint(sys.stdin.read().upper())", stdin="hi")
    assert result.ok and result.stdout == "HI\n"


@needs_bwrap
def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    result = _contained(sandbox, "while True:\n    pass\n")
    assert result.timed_out and result.killed_reason == "timeout"


@needs_bwrap
def test_sleep_times_out(sandbox: Sandbox) -> None:
    marker = uuid.uuid4().hex
    result = _contained(sandbox, _spawner("import time; time.sleep(100)", marker), marker)
    assert result.timed_out


@needs_bwrap
def test_memory_blowup_is_refused() -> None:
    # Zero-filling ~500 MB takes a while on a loaded machine: this test is about the memory
    # limit, so it gets a generous wall-clock limit of its own.
    sandbox = Sandbox(timeout_s=10.0, memory_mb=512, max_procs=16, max_output_bytes=10_000)
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))\n"
    result = _contained(sandbox, code)
    assert not result.timed_out
    assert result.returncode != 0 and "MemoryError" in result.stderr


@needs_bwrap
def test_fork_bomb_is_bounded(sandbox: Sandbox) -> None:
    marker = uuid.uuid4().hex
    bomb = (
        "import os\nn = 0\nwhile True:\n    try:\n        os.fork()\n"
        "    except OSError:\n        n += 1\n        if n > 1000: break\n"
    )
    _contained(sandbox, _spawner(bomb, marker), marker)


@needs_bwrap
def test_fork_cap_holds(sandbox: Sandbox) -> None:
    code = (
        "import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(5)\n"
        "        os._exit(0)\n    n += 1\nprint(n, flush=True)\nos._exit(0)\n"
    )
    result = _contained(sandbox, code)
    assert int(result.stdout) < sandbox.max_procs


@needs_bwrap
def test_orphaned_and_sigterm_ignoring_children_die(sandbox: Sandbox) -> None:
    marker = uuid.uuid4().hex
    child = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(100)"
    code = (
        "import os, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, {marker!r}], start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', {child!r}, {marker!r}])\n"
        "print('parent exits')\n"
    )
    result = _contained(sandbox, code, marker)
    assert "parent exits" in result.stdout


@needs_bwrap
def test_writes_outside_tmp_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    paths = ["/usr/escaped", "/etc/escaped", "/escaped", str(target), "/proc/sys/kernel/x"]
    code = (
        f"ok = []\nfor p in {paths!r}:\n    try:\n        open(p, 'w').write('x')\n"
        "        ok.append(p)\n    except OSError:\n        pass\n"
        "open('inside.txt', 'w').write('fine')\nprint(ok)\n"
    )
    result = _contained(sandbox, code)
    assert result.stdout.strip() == "[]"
    assert not target.exists()


@needs_bwrap
def test_secret_environment_is_invisible(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = uuid.uuid4().hex
    monkeypatch.setenv("MASKGRPO_TEST_SECRET", secret)
    code = (
        "import os\nprint(dict(os.environ))\n"
        "for p in ('/proc/1/environ', '/proc/self/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError:\n        pass\n"
    )
    result = _contained(sandbox, code)
    assert secret not in result.stdout + result.stderr


@needs_bwrap
def test_host_files_are_invisible(sandbox: Sandbox) -> None:
    secret = uuid.uuid4().hex
    with tempfile.NamedTemporaryFile("w", suffix=".secret", delete=False) as f:
        f.write(secret)
    try:
        paths = [f.name, "/root/.bash_history", "/etc/shadow", "/etc/passwd"]
        code = (
            f"for p in {paths!r}:\n    try:\n        print(open(p).read())\n"
            "    except OSError as e:\n        print('denied', p)\n"
        )
        result = _contained(sandbox, code)
        assert secret not in result.stdout and "denied" in result.stdout
    finally:
        os.unlink(f.name)


@needs_bwrap
def test_network_is_unreachable(sandbox: Sandbox) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        code = (
            "import socket\ns = socket.socket()\ns.settimeout(0.5)\n"
            f"try:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\n"
            "except OSError as e:\n    print('refused', e)\n"
        )
        result = _contained(sandbox, code)
        assert "refused" in result.stdout
        with pytest.raises(TimeoutError):
            server.accept()


@needs_bwrap
def test_cannot_kill_the_parent(sandbox: Sandbox) -> None:
    code = (
        "import os, signal\n"
        f"for pid in (os.getppid(), 1, -1, {os.getpid()}, {os.getppid()}):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "print('still here')\n"
    )
    _contained(sandbox, code)
    os.kill(os.getpid(), 0)  # the test process is alive
    assert sandbox.run("print(1)").stdout == "1\n"


@needs_bwrap
def test_output_flood_is_capped(sandbox: Sandbox) -> None:
    result = _contained(sandbox, "while True:\n    print('x' * 10000)\n")
    assert result.killed_reason == "output_limit"
    assert len(result.stdout) <= sandbox.max_output_bytes


@needs_bwrap
def test_run_many_keeps_order(sandbox: Sandbox) -> None:
    results = sandbox.run_many([f"print({i})" for i in range(12)], max_workers=4)
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(12)]


_LIBC = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def call(fn, *args):\n"
    "    ctypes.set_errno(0)\n"
    "    return fn(*args), ctypes.get_errno()\n"
)
# unshare/clone flags: user, mount, net, pid, uts, ipc, cgroup namespaces.
_NAMESPACES = {
    "user": 0x10000000,
    "mount": 0x00020000,
    "net": 0x40000000,
    "pid": 0x20000000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "cgroup": 0x02000000,
}
_CAPGET = (
    "class Hdr(ctypes.Structure):\n"
    "    _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]\n"
    "class Data(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_uint32) for n in ('eff', 'prm', 'inh')]\n"
    "def caps():\n"
    "    data = (Data * 2)()\n"
    "    assert libc.capget(ctypes.byref(Hdr(0x20080522, 0)), data) == 0\n"
    "    return [(d.eff, d.prm, d.inh) for d in data]\n"
)


@needs_bwrap
def test_no_capabilities_and_none_to_gain(sandbox: Sandbox) -> None:
    """Capability sets stay empty, also after trying to enter a new user namespace."""
    code = (
        _LIBC
        + _CAPGET
        + (
            "print('caps', caps())\n"
            "print('bounding', [c for c in range(64) if libc.prctl(23, c, 0, 0, 0) == 1])\n"
            "print('ambient', [c for c in range(64) if libc.prctl(47, 1, c, 0, 0) == 1])\n"
            "print('no_new_privs', libc.prctl(39, 0, 0, 0, 0))\n"
            "print('unshare', call(libc.unshare, 0x10000000))\n"
            "print('caps_after', caps())\n"
        )
    )
    lines = dict(line.split(" ", 1) for line in _contained(sandbox, code).stdout.splitlines())
    zero = "[(0, 0, 0), (0, 0, 0)]"
    assert lines["caps"] == zero and lines["caps_after"] == zero, lines
    assert lines["bounding"] == "[]" and lines["ambient"] == "[]"
    assert lines["no_new_privs"] == "1"
    assert lines["unshare"] == "(-1, 1)", "a user namespace could be created (EPERM expected)"


@needs_bwrap
def test_no_nested_namespaces(sandbox: Sandbox) -> None:
    """unshare, clone with CLONE_NEW* and setns all answer EPERM; no nested bwrap either."""
    clone_nr = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
    code = _LIBC + (
        f"for name, flag in {_NAMESPACES!r}.items():\n"
        "    print(name, call(libc.unshare, flag))\n"
        "print('setns', call(libc.setns, 0, 0))\n"
    )
    if clone_nr is not None:  # SIGCHLD as the exit signal; a child that appears exits at once
        code += (
            f"pid, err = call(libc.syscall, {clone_nr}, 0x10000000 | 17, 0, 0, 0, 0)\n"
            "if pid == 0:\n    os._exit(0)\n"
            "print('clone', (min(pid, 0), err))\n"
        )
    code += (
        "import subprocess\n"
        "r = subprocess.run(['bwrap', '--ro-bind', '/', '/', 'true'], capture_output=True)\n"
        "print('bwrap', r.returncode)\n"
    )
    lines = dict(line.split(" ", 1) for line in _contained(sandbox, code).stdout.splitlines())
    for name in [*_NAMESPACES, *(["clone"] if clone_nr else [])]:
        assert lines[name] == "(-1, 1)", f"{name}: {lines[name]}"
    assert lines["setns"] in ("(-1, 1)", "(-1, 9)")  # EPERM (filter) or EBADF
    assert lines["bwrap"] != "0"


# x86-64 and AArch64 numbers of calls tested through syscall(2); all other arguments are 0.
_KERNEL_SURFACE = {
    "io_uring_setup": (425, 425),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "keyctl": (250, 219),
    "process_vm_readv": (310, 270),
    "pidfd_getfd": (438, 438),
    "kcmp": (312, 272),
    "open_by_handle_at": (304, 265),
}


@needs_bwrap
def test_no_mounts_tracing_or_kernel_surface(sandbox: Sandbox) -> None:
    column = {"x86_64": 0, "aarch64": 1}.get(os.uname().machine)
    calls = (
        {name: nrs[column] for name, nrs in _KERNEL_SURFACE.items()} if column is not None else {}
    )
    code = _LIBC + (
        "print('tmpfs', call(libc.mount, b'none', b'/tmp', b'tmpfs', 0, None))\n"
        "print('proc', call(libc.mount, b'proc', b'/tmp', b'proc', 0, None))\n"
        "print('umount', call(libc.umount2, b'/usr', 2))\n"
        "print('chroot', call(libc.chroot, b'/tmp'))\n"
        "print('ptrace', call(libc.ptrace, 0, 0, None, None))\n"
        "print('seccomp_mode', libc.prctl(21, 0, 0, 0, 0))\n"
        f"for name, nr in {calls!r}.items():\n"
        "    print(name, call(libc.syscall, nr, 0, 0, 0, 0, 0))\n"
    )
    lines = dict(line.split(" ", 1) for line in _contained(sandbox, code).stdout.splitlines())
    for name in ("tmpfs", "proc", "umount", "chroot", "ptrace", *calls):
        assert lines[name] == "(-1, 1)", f"{name}: {lines[name]}"
    assert lines["seccomp_mode"] == "2"  # SECCOMP_MODE_FILTER


@needs_bwrap
def test_mount_table_and_host_names_are_hidden(sandbox: Sandbox) -> None:
    """No /proc (so no mountinfo naming host folders), a neutral host name, no temp-dir path."""
    code = (
        "import os, socket\n"
        "for p in ('/proc/self/mountinfo', '/proc/mounts', '/proc/1/environ'):\n"
        "    try:\n        open(p).read()\n        print('readable', p)\n"
        "    except OSError:\n        pass\n"
        "print('host', socket.gethostname())\n"
        "print('cwd', os.getcwd())\n"
        "print('tmp', sorted(os.listdir('/tmp')))\n"
    )
    out = _contained(sandbox, code).stdout
    assert "readable" not in out
    assert "host sandbox\n" in out
    assert "cwd /tmp\n" in out and "tmp []\n" in out
    assert "maskgrpo-sandbox" not in out


@needs_bwrap
def test_tmp_is_private_and_size_capped() -> None:
    box = Sandbox(timeout_s=5.0, tmp_mb=4, max_file_mb=2)
    code = (
        "written = 0\n"
        "try:\n    for i in range(8):\n"
        "        with open(f'/tmp/f{i}', 'wb') as f:\n"
        "            f.write(b'x' * (1 << 20))\n"
        "        written += 1\n"
        "except OSError as e:\n    print('refused', e.errno)\n"
        "print('written', written)\n"
    )
    out = box.run(code).stdout
    assert "refused 28" in out  # ENOSPC
    assert int(out.rsplit("written ", 1)[1]) <= 4
    assert not any(Path(tempfile.gettempdir()).glob("maskgrpo-sandbox-*/f0"))


@needs_bwrap
def test_tmp_without_tmpfs_size_is_a_private_host_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older bwrap (no --size) gets a private host folder as /tmp, removed afterwards."""
    options = sandbox_module.bwrap_options() - {"--size"}
    monkeypatch.setattr(sandbox_module, "bwrap_options", lambda: options)
    before = set(Path(tempfile.gettempdir()).glob("maskgrpo-sandbox-*"))
    box = Sandbox(timeout_s=5.0)
    result = box.run("open('/tmp/x', 'w').write('y')\nprint(open('x').read())\n")
    assert result.ok and result.stdout == "y\n", result
    assert set(Path(tempfile.gettempdir()).glob("maskgrpo-sandbox-*")) == before


@needs_bwrap
def test_run_pair_peers_see_nothing_of_each_other(sandbox: Sandbox) -> None:
    """Two programs joined by pipes: messages flow, but neither sees the other's processes."""
    main = SandboxProgram(
        "import os, sys\nr, w = int(sys.argv[1]), int(sys.argv[2])\n"
        "os.write(w, b'ping')\nprint(os.read(r, 4).decode(), sorted(os.listdir('/tmp')))\n"
    )
    peer = SandboxProgram(
        "import os, sys\nr, w = int(sys.argv[1]), int(sys.argv[2])\n"
        "open('/tmp/peer-was-here', 'w').close()\n"
        "assert os.read(r, 4) == b'ping'\nos.write(w, b'pong')\n"
        "import time\ntime.sleep(30)\n"
    )
    start = time.monotonic()
    first, second = sandbox.run_pair(main, peer)
    assert first.ok and first.stdout == "pong []\n", first
    assert second.killed_reason is None and not second.ok  # stopped when main ended
    assert time.monotonic() - start < sandbox.timeout_s + 1.0


_AS_USER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pkg.sandbox import Sandbox, sandbox_available
if not sandbox_available():
    print(json.dumps(None))
    raise SystemExit
box = Sandbox(timeout_s=5.0, max_procs=8)
print(json.dumps({
    "probe": box.run(sys.argv[2]).stdout,
    "forks": box.run(sys.argv[3]).stdout,
}))
"""


@needs_bwrap
def test_guarantees_hold_for_a_normal_user() -> None:
    """As root the tests above use the root path (a dropped uid); this runs a normal user's."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or shutil.which("setpriv") is None or python is None:
        pytest.skip("needs root (to become a normal user), setpriv and a system python3")
    root = Path(tempfile.mkdtemp(prefix="maskgrpo-user-"))
    try:
        (root / "pkg").mkdir()
        (root / "pkg" / "__init__.py").write_text("")
        src = Path(__file__).parents[1] / "src" / "maskgrpo"
        for name in ("sandbox.py", "sandbox_process.py", "seccomp.py"):
            shutil.copy(src / name, root / "pkg" / name)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755)
        probe = (
            _LIBC
            + _CAPGET
            + (
                "print('caps', caps())\n"
                "print('unshare', call(libc.unshare, 0x10000000))\n"
                "print('caps_after', caps())\n"
                "print('mount', call(libc.mount, b'none', b'/tmp', b'tmpfs', 0, None))\n"
                "print('seccomp_mode', libc.prctl(21, 0, 0, 0, 0))\n"
            )
        )
        forks = (
            "import os, time\nn = 0\nfor _ in range(50):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n"
            "        os._exit(0)\n    n += 1\nprint(n)\n"
        )
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", python]
        cmd += ["-I", "-c", _AS_USER, str(root), probe, forks]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/", env={})
        if done.returncode != 0 and "SyntaxError" in done.stderr:
            pytest.skip(f"{python} is too old for the sandbox code")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        if result is None:
            pytest.skip("unprivileged user namespaces are disabled on this machine")
    finally:
        shutil.rmtree(root)
    lines = dict(line.split(" ", 1) for line in result["probe"].splitlines())
    zero = "[(0, 0, 0), (0, 0, 0)]"
    assert lines["caps"] == zero and lines["caps_after"] == zero, lines
    assert lines["unshare"] == "(-1, 1)" and lines["mount"] == "(-1, 1)"
    assert lines["seccomp_mode"] == "2"
    assert int(result["forks"]) < 8


def test_unavailable_isolation_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("maskgrpo.sandbox.shutil.which", lambda name: None)
    with pytest.raises(SandboxUnavailableError, match="allow_unsafe"):
        Sandbox()
    monkeypatch.setattr("maskgrpo.rewards.code.sandbox_available", lambda: False)
    with pytest.raises(SandboxUnavailableError, match="allow_unsafe=True"):
        CodeExecutionReward()


def _rows(name: str) -> list[dict]:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not found; set MASKGRPO_SHARED_DATA to the shared data folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _reference_scores(name: str, limit: int | None = None) -> tuple[list[dict], list]:
    """Rows of a benchmark and the code reward of each row's reference solution."""
    rows = _rows(name)[:limit]
    reward = CodeExecutionReward(Sandbox(timeout_s=30.0), max_workers=4)
    fence = "```python\n{}\n```"
    if name.startswith("humaneval"):
        good = [fence.format(r["prompt"] + r["canonical_solution"]) for r in rows]
        tests = [[f"{r['test']}\ncheck({r['entry_point']})\n"] for r in rows]
        return rows, reward([""] * len(rows), good, tests=tests)
    completions = [fence.format(r["code"]) for r in rows]
    tests = [r["test_list"] for r in rows]
    setups = [r["test_setup_code"] for r in rows]
    return rows, reward([""] * len(rows), completions, tests=tests, test_setup=setups)


def _failing(rows: list[dict], scores: list) -> list:
    return [(r["task_id"], s) for r, s in zip(rows, scores, strict=True) if s != 2.0]


@needs_bwrap
@pytest.mark.parametrize(
    ("name", "limit"), [("humaneval/HumanEval.jsonl", 24), ("mbpp/mbpp.jsonl", 48)]
)
def test_reference_solutions_pass_smoke(name: str, limit: int) -> None:
    rows, scores = _reference_scores(name, limit)
    assert _failing(rows, scores) == []


@needs_bwrap
@pytest.mark.slow
def test_every_humaneval_reference_passes() -> None:
    rows, scores = _reference_scores("humaneval/HumanEval.jsonl")
    assert len(rows) == 164 and _failing(rows, scores) == []
    wrong = "```python\n{}```".format(
        rows[0]["prompt"] + "    return not " + rows[0]["canonical_solution"].strip()
    )
    tests = [f"{rows[0]['test']}\ncheck({rows[0]['entry_point']})\n"]
    reward = CodeExecutionReward(Sandbox(timeout_s=10.0), max_workers=1)
    assert reward([""], [wrong], tests=[tests]) == [0.0]


@needs_bwrap
@pytest.mark.slow
def test_every_mbpp_reference_passes() -> None:
    rows, scores = _reference_scores("mbpp/mbpp.jsonl")
    assert len(rows) == 974 and _failing(rows, scores) == []
    reward = CodeExecutionReward(Sandbox(timeout_s=10.0), max_workers=1)
    partial = reward(
        [""],
        [f"```python\n{rows[0]['code']}\n```"],
        tests=[rows[0]["test_list"] + ["assert False"]],
    )
    assert partial == [2.0 * 3 / 4]


def test_signal_module_untouched() -> None:
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler)
