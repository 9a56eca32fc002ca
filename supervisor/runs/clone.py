"""Forking a process straight into a cgroup: ``clone3(CLONE_INTO_CGROUP)`` (Linux 5.7+).

Moving a process into a cgroup after it started (a write to ``cgroup.procs``) takes the
kernel's cgroup migration lock for writing, which waits for an RCU grace period unless
another move happened just before: about 10 ms on a busy machine, and moves serialize on
it. A process created in its cgroup by ``clone3`` only takes that lock for reading, so
the fork server forks runs this way where the kernel lets it (cgroup v2 only).

``fork_into(fd)`` is ``os.fork()`` with the child placed in the cgroup whose directory
``fd`` is open on: the interpreter's fork hooks run as for ``os.fork``
(``PyOS_BeforeFork``, ``PyOS_AfterFork_Child``/``_Parent``, so ``os.register_at_fork``
callbacks too). Call it only from a single-threaded process (the fork server). The C
library is bypassed: its cached thread id stays the parent's in the child, which glibc
(2.35+) does not use for signals to the calling thread; nothing here uses PI mutexes.

``fork_sibling(cgroup_fd)`` is the same with ``CLONE_PARENT``: the child is the caller's
parent's (a sibling of the caller), reaped by that parent and reporting its end to it
with the caller's own exit signal; into the cgroup ``cgroup_fd`` is open on, or where the
caller is (None). The fork server's forker (``forker``) forks the server's runs this way.

``probe(path)`` tries it once with a child that exits at once: None if it works, else why
not (``ENOSYS``: an old kernel; ``EPERM``: a seccomp filter; ``EINVAL``/``E2BIG``: the
flag is unknown; ``EOPNOTSUPP``, ``EBUSY``: not a usable v2 cgroup), so the caller picks
once between this and fork + join.

May import the stdlib only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import signal
from typing import Final

CLONE_PARENT: Final = 0x00008000
CLONE_INTO_CGROUP: Final = 0x200000000
# The generic syscall table's number, the same on x86-64, arm64, riscv64, ...
SYS_CLONE3: Final = 435
_SIGCHLD: Final = int(signal.SIGCHLD)


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, 88 bytes)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


class _Api:
    def __init__(self) -> None:
        # PyDLL: the GIL stays held across the call, so the child starts holding it.
        libc = ctypes.PyDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
        api = ctypes.pythonapi
        self.before = api.PyOS_BeforeFork
        self.child = api.PyOS_AfterFork_Child
        self.parent = api.PyOS_AfterFork_Parent
        for function in (self.before, self.child, self.parent):
            function.restype = None
            function.argtypes = []
        # One for every call (this process has one thread): no new object per fork.
        self.args = _CloneArgs()
        self.address = ctypes.addressof(self.args)
        self.size = ctypes.sizeof(self.args)
        # The call's arguments as ctypes values, made once: converting ints made three
        # objects per call, freed in the child (pages copied there).
        self.call = (
            ctypes.c_long(SYS_CLONE3),
            ctypes.c_void_p(self.address),
            ctypes.c_size_t(self.size),
        )


@functools.cache
def _api() -> _Api:
    return _Api()


def fork_into(cgroup_fd: int) -> int:
    """Fork, the child in the cgroup ``cgroup_fd`` is open on: 0 in the child, its pid in
    the parent. Raises ``OSError`` (nothing was forked) as ``clone3`` fails."""
    return _clone(CLONE_INTO_CGROUP, cgroup_fd)


def fork_sibling(cgroup_fd: int | None = None) -> int:
    """Fork a child of this process's parent (into the cgroup ``cgroup_fd`` is open on,
    if given): 0 in the child, its pid here. Raises ``OSError`` as ``clone3`` fails."""
    if cgroup_fd is None:
        return _clone(CLONE_PARENT, 0)
    return _clone(CLONE_PARENT | CLONE_INTO_CGROUP, cgroup_fd)


def _clone(flags: int, cgroup_fd: int) -> int:
    try:
        api = _api()
    except (AttributeError, OSError) as error:  # no libc syscall() or no C API here
        raise OSError(errno.ENOSYS, f"clone3 cannot be called: {error}") from None
    # With CLONE_PARENT the kernel takes the caller's own exit signal (and wants 0 here).
    args = api.args
    args.flags = flags
    args.exit_signal = 0 if flags & CLONE_PARENT else _SIGCHLD
    args.cgroup = cgroup_fd
    api.before()
    pid: int = api.syscall(*api.call)
    if pid == 0:
        api.child()
        return 0
    code = ctypes.get_errno()
    api.parent()
    if pid < 0:
        raise OSError(code, f"clone3: {os.strerror(code)}")
    return pid


def probe(path: str) -> str | None:
    """Can this process fork into the cgroup at ``path``? None if so, else the reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        return f"cannot open {path}: {error.strerror}"
    try:
        pid = fork_into(fd)
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            return f"the probe child exited with status {status}"
        return None
    except OSError as error:
        name = errno.errorcode.get(error.errno or 0, str(error.errno))
        return f"clone3 into a cgroup: {name}"
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
