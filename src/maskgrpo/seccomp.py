"""A seccomp filter for sandboxed programs: no namespaces, mounts, tracing or kernel-surface calls.

The filter is a classic BPF program (``struct sock_filter`` array) that ``bwrap --seccomp FD``
installs right before it executes the sandboxed command, so it binds that command and every
process it starts. It answers ``EPERM`` to:

* creating or entering namespaces: ``unshare``, ``setns``, and ``clone`` with any
  ``CLONE_NEW*`` flag (``clone3`` answers ``ENOSYS``, since its flags sit in memory a filter
  cannot read; the C library then falls back to ``clone``);
* mounting and changing the root: ``mount``, ``umount2``, ``pivot_root``, ``chroot`` and the
  new mount API (``fsopen``, ``fsmount``, ``open_tree``, ``move_mount``, ...);
* reaching other processes: ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``,
  ``kcmp``, ``process_madvise``;
* kernel surface that untrusted code never needs: ``bpf``, ``perf_event_open``, ``userfaultfd``,
  ``io_uring_*``, keyrings, module loading, ``kexec``, ``open_by_handle_at``, ``quotactl``,
  swap, ``reboot``, ``syslog``, ``acct`` (and ``iopl``/``ioperm`` on x86-64).

Only x86-64 and AArch64 are known; on another architecture :func:`seccomp_filter` returns
``None`` and the sandbox logs that it runs without the filter. A foreign system-call ABI
(x32, or 32-bit calls on x86-64) kills the process.
"""

from __future__ import annotations

import errno
import platform
import struct

__all__ = ["BLOCKED_SYSCALLS", "NAMESPACE_FLAGS", "seccomp_filter"]

# Namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
# (CLONE_NEWTIME, 0x80, exists only for clone3 and unshare, which are refused outright; in
# clone's flags the low byte is the exit signal.)
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
NAMESPACE_FLAGS |= 0x40000000

# name: (x86-64 number, AArch64 number); None where the call does not exist.
_TABLE: dict[str, tuple[int | None, int | None]] = {
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "move_mount": (429, 429),
    "open_tree": (428, 428),
    "mount_setattr": (442, 442),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438),
    "kcmp": (312, 272),
    "process_madvise": (440, 440),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "lookup_dcookie": (212, 18),
    "quotactl": (179, 60),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "syslog": (103, 116),
    "acct": (163, 89),
    "uselib": (134, None),
    "iopl": (172, None),
    "ioperm": (173, None),
}
BLOCKED_SYSCALLS = tuple(_TABLE)

# machine name -> (AUDIT_ARCH value, column in _TABLE, clone, clone3)
_ARCHES = {
    "x86_64": (0xC000003E, 0, 56, 435),
    "aarch64": (0xC00000B7, 1, 220, 435),
    "arm64": (0xC00000B7, 1, 220, 435),
}
_X32_BIT = 0x40000000  # x86-64: system calls of the x32 ABI carry this bit

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # offsets in struct seccomp_data (arg0 low word, little endian)


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (default: this one) as raw ``sock_filter`` bytes, or ``None``."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, column, clone, clone3 = arch
    blocked = sorted({nr for nums in _TABLE.values() if (nr := nums[column]) is not None})
    eperm = _RET_ERRNO | errno.EPERM
    # Layout: arch check, load nr, [x32 check], one jeq per blocked call (to DENY), clone3
    # (to ENOSYS), clone (to the flag check), ALLOW, flag check, DENY, ENOSYS.
    head = [
        _insn(_LD_W_ABS, 0, 0, _ARCH),
        _insn(_JEQ_K, 1, 0, audit_arch),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, _NR),
    ]
    checks: list[tuple[int, int, str]] = []  # (opcode, k, target)
    if column == 0:
        checks.append((_JGE_K, _X32_BIT, "kill"))
    checks += [(_JEQ_K, nr, "deny") for nr in blocked]
    checks += [(_JEQ_K, clone3, "enosys"), (_JEQ_K, clone, "clone")]
    # Targets, counted from the instruction after the checks.
    n = len(checks)
    offsets = {"allow": 0, "clone": 1, "deny": 4, "enosys": 5, "kill": 6}
    body = [
        _insn(op, n - 1 - i + offsets[target], 0, k) for i, (op, k, target) in enumerate(checks)
    ]
    tail = [
        _insn(_RET_K, 0, 0, _RET_ALLOW),  # allow
        _insn(_LD_W_ABS, 0, 0, _ARG0_LOW),  # clone: load the flags
        _insn(_JSET_K, 1, 0, NAMESPACE_FLAGS),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
        _insn(_RET_K, 0, 0, eperm),  # deny
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),  # enosys
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),  # kill
    ]
    if n - 1 + max(offsets.values()) > 255:
        raise RuntimeError(f"seccomp filter with {n} checks is too long for 8-bit jumps")
    return b"".join(head + body + tail)
