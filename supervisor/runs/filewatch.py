"""Whether anything in a few directories may have changed since the last look (inotify).

The launcher asks before every spawn whether the app's files changed; statting each of
them every time costs a syscall per file. A ``DirectoryWatch`` answers with one
non-blocking read: the kernel queues an event in the writing syscall itself, so a change
made before ``maybe_changed`` is called is always seen by that call. Where inotify is
not available (or its limits are reached) the answer is always "maybe": the caller
checks the files as it would without a watch.

May import the stdlib only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterable
from typing import Final

_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
# A file in the directory written, its metadata changed, created, deleted, renamed in or
# out; the directory itself deleted or renamed.
_MASK: Final = (
    0x00000002  # IN_MODIFY
    | 0x00000004  # IN_ATTRIB
    | 0x00000008  # IN_CLOSE_WRITE
    | 0x00000040  # IN_MOVED_FROM
    | 0x00000080  # IN_MOVED_TO
    | 0x00000100  # IN_CREATE
    | 0x00000200  # IN_DELETE
    | 0x00000400  # IN_DELETE_SELF
    | 0x00000800  # IN_MOVE_SELF
)
_READ_SIZE: Final = 64 * 1024


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class DirectoryWatch:
    """Watches ``directories``; ``maybe_changed`` is True on the first call, after any
    event since the last call (an overflow of the kernel's queue included), and always
    where the watch could not be set up (``active`` is False then)."""

    def __init__(self, directories: Iterable[str]) -> None:
        self._fd = -1
        self._looked = False
        try:
            libc = _libc()
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        for directory in sorted(set(directories)):
            if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                os.close(fd)
                return
        self._fd = fd

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def maybe_changed(self) -> bool:
        """Has anything happened in the directories since the last call (or is it not
        known)? Never blocks."""
        if self._fd < 0:
            return True
        seen = not self._looked
        self._looked = True
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return seen
            except OSError:
                self.close()
                return True
            if not data:
                return seen
            seen = True

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
