"""One manager per state directory: the lock a manager holds for its whole life.

Two ``flock``s, both held on open descriptors until the manager ends (a lock that is merely
a file being present proves nothing once somebody deletes it):

- on ``manager.lock``, opened with ``O_NOFOLLOW`` (a planted symlink is refused, never
  followed) and created ``0600``; it holds the manager's pid for people and tools to read;
- on the state directory itself, which survives ``rm manager.lock``: a second manager is
  refused even then, and told the holder's pid from ``/proc/locks``.

``holder(state_dir)`` says which process holds a state directory without taking any lock
(the CLI uses it to tell "no manager" from "a manager whose socket is gone"), and
``StateDirLock.repair()`` puts a deleted lock file back. May import ``paths``, ``errors``
and the stdlib.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from supervisor.core.errors import StoreError, UntrustedPath
from supervisor.service.paths import LOCK_NAME

PROC_LOCKS = Path("/proc/locks")


def _flock_holders(device: int, inode: int, locks_text: str) -> list[int]:
    """The pids holding an ``flock`` on (device, inode), as ``/proc/locks`` lists them."""
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    pids: list[int] = []
    for line in locks_text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 24382 fe:00:5481328 0 EOF" (blocked waiters carry "->")
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == wanted:
            with contextlib.suppress(ValueError):
                pids.append(int(parts[4]))
    return pids


def _read_pid(path: Path) -> int | None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(descriptor, 64).decode("ascii", "replace").strip()
    finally:
        os.close(descriptor)
    return int(text) if text.isdigit() else None


def holder(state_dir: Path) -> int | None:
    """The pid of the manager holding ``state_dir``, or None when none does.

    Reads ``/proc/locks`` (the kernel's word, true even when ``manager.lock`` was
    deleted); takes no lock itself, so it never stands in a starting manager's way.
    """
    try:
        info = os.stat(state_dir)
        locks_text = PROC_LOCKS.read_text()
    except OSError:
        return None
    pids = _flock_holders(info.st_dev, info.st_ino, locks_text)
    if not pids:
        return None
    # A holder in another pid namespace shows as 0 (or not at all): fall back to the file.
    return pids[0] if pids[0] > 0 else _read_pid(state_dir / LOCK_NAME) or pids[0]


class StateDirLock:
    """The locks of one state directory, held from ``acquire()`` until ``release()``.

    ``acquire`` raises ``StoreError`` naming the holder's pid when another manager holds
    the directory, ``UntrustedPath`` when the lock file is a symlink (never followed) and
    ``StoreError`` when it cannot be used otherwise (not a regular file, no permission).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._directory: int | None = None
        self._file: int | None = None

    def acquire(self) -> None:
        directory = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._lock(directory)
            self._file = self._open_file()
        except BaseException:
            os.close(directory)
            raise
        self._directory = directory

    def _lock(self, descriptor: int) -> None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = holder(self.state_dir)
            by = f" (pid {pid})" if pid else ""
            raise StoreError(
                f"another manager{by} is already running with state directory "
                f"{self.state_dir}; stop it first"
            ) from None

    def _open_file(self) -> int:
        """Open (create 0600) and lock ``manager.lock``, and write this process's pid."""
        try:
            descriptor = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as error:
            if self.path.is_symlink():  # planted after the state directory was checked
                raise UntrustedPath(f"refusing {self.path}: it is a symlink") from error
            raise StoreError(
                f"cannot use lock file {self.path}: {error.strerror or error}"
            ) from error
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise StoreError(f"cannot use lock file {self.path}: not a regular file")
            self._lock(descriptor)
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def repair(self) -> bool:
        """Put ``manager.lock`` back if it was deleted (or lock its replacement); True when
        it did. Raises ``StoreError`` when the replacement cannot be used or is held.
        """
        if self._file is None:
            return False
        mine = os.fstat(self._file)
        try:
            there = os.lstat(self.path)
        except FileNotFoundError:
            there = None
        if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
            return False
        replacement = self._open_file()
        os.close(self._file)
        self._file = replacement
        return True

    def release(self) -> None:
        for descriptor in (self._file, self._directory):
            if descriptor is not None:
                os.close(descriptor)
        self._file = self._directory = None
