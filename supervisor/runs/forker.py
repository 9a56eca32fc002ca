"""The fork server's forker: a process forked from it once, that forks its spares.

A fork write-protects every page of the forking process, and while the child lives each
page the parent writes afterwards is copied (a page fault and 4 KiB). The fork server
writes hundreds of pages between two forks (messages, reaping, its bookkeeping), and its
spares live until their job comes, so forking from it cost it some 350 page copies per
run. The forker is forked from the server once the app is loaded and the run's code
warmed up; all it does is receive a request, fork, and answer, so it writes few pages,
and the server, which no longer forks spares, writes its own pages once.

The forker forks with ``clone3(CLONE_PARENT)`` (``clone.fork_sibling``): each spare is the
server's child, as if the server had forked it, and the server reaps it and writes its
status as before. Where the forker cannot (no ``clone3``, a seccomp filter, an early
end), ``fork_spare`` raises ``ForkerUnavailable`` and the server forks itself from then
on. The forker dies with the server (PR_SET_PDEATHSIG) and exits at end-of-file.

The server's side and the forker's speak over a ``SOCK_SEQPACKET`` socket pair: a request
is ``b"1" + cgroup`` (fork into that cgroup with ``CLONE_INTO_CGROUP``), ``b"0" + cgroup``
(fork; the child joins the cgroup itself) or ``b"0"`` (no cgroup), with the spare's socket
as SCM_RIGHTS; the answer is ``b"<pid> <placed>"`` or ``b"e<errno>"``.

May import ``clone``, ``procs`` and the stdlib.
"""

from __future__ import annotations

import _socket
import array
import contextlib
import errno
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from supervisor.runs import clone, procs

_FD_SIZE: Final = array.array("i").itemsize
# A request: a flag and a cgroup's path.
_MAX_REQUEST: Final = 1 + 4096
# How long the server waits for the forker's answer before it gives up on it.
ANSWER_SECONDS: Final = 5.0

# In the forked spare: (cgroup, the spare's socket fd, whether it was forked into the
# cgroup). Never returns.
BecomeSpare = Callable[[str | None, int, bool], None]


class ForkerUnavailable(OSError):
    """The forker cannot fork (any more): the server forks itself."""


class Forker:
    """The server's handle on its forker process."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock

    @classmethod
    def start(
        cls,
        become_spare: BecomeSpare,
        *,
        blocked: Iterable[int],
        max_fd: int,
        dispositions: Sequence[procs.SignalReset] = (),
    ) -> Forker:
        """Fork the forker from this process (the fork server, single-threaded, all set up
        for its runs). ``blocked``: signals the forker keeps blocked, so its children start
        with them blocked; it closes every fd but 0-2 and its socket, below ``max_fd``.
        ``dispositions``: signal handlers the forker sets for itself, so that its spares
        start with them and need not (a signal set to its default here must be among those
        blocked, or the server's, which the forker inherits blocked).
        Raises ``OSError`` if it cannot be forked."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the forker
            try:
                ours.close()
                procs.set_signal_mask(signal.SIG_BLOCK, blocked)
                for signum, handler in dispositions:
                    with contextlib.suppress(OSError, ValueError, RuntimeError):
                        signal.signal(signum, handler)
                _serve(theirs, server, become_spare, max_fd=max_fd)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours)

    def fork_spare(self, cgroup: str | None, sock_fd: int, *, into: bool) -> tuple[int, bool]:
        """Have the forker fork a spare: (its pid, whether it is in ``cgroup`` already).
        ``into``: fork it into ``cgroup`` where the kernel lets it. Raises ``OSError`` for
        this spare (nothing forked), ``ForkerUnavailable`` if the forker cannot fork."""
        request = (b"1" if into and cgroup is not None else b"0") + os.fsencode(cgroup or "")
        try:
            socket.send_fds(self._sock, [request], [sock_fd])
            ready, _, _ = select.select([self._sock], [], [], ANSWER_SECONDS)
            answer = self._sock.recv(64) if ready else b""
        except OSError as error:
            raise ForkerUnavailable(error.errno or errno.EPIPE, f"the forker: {error}") from None
        if not answer:
            raise ForkerUnavailable(errno.ETIMEDOUT, "the forker did not answer")
        if answer.startswith(b"e"):
            code = int(answer[1:])
            if code in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
                raise ForkerUnavailable(code, f"the forker cannot fork: {os.strerror(code)}")
            raise OSError(code, f"fork failed: {os.strerror(code)}")
        pid, placed = answer.split()
        return int(pid), placed == b"1"

    def close(self) -> None:
        """Let the forker go (it exits at end-of-file; the server reaps it)."""
        with contextlib.suppress(OSError):
            self._sock.close()


def _serve(sock: socket.socket, server: int, become_spare: BecomeSpare, *, max_fd: int) -> None:
    """The forker's loop, until end-of-file or the server's death."""
    signal.set_wakeup_fd(-1)
    procs.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != server:
        return
    # Nothing of the server's stays open here: its socket, pipes and runs' ends must close
    # when the server closes them.
    os.closerange(3, sock.fileno())
    os.closerange(sock.fileno() + 1, max_fd)
    # A lean loop: every page it writes is copied while the spare it forked lives.
    room = socket.CMSG_LEN(_FD_SIZE)
    rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    recvmsg, send, close = sock.recvmsg, sock.send, os.close
    # ``os.fsdecode``'s own decoding, without its calls (the spare runs it).
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    while True:
        data, ancillary, _, _ = recvmsg(_MAX_REQUEST, room, socket.MSG_CMSG_CLOEXEC)
        if not data or len(ancillary) != 1 or ancillary[0][:2] != rights:
            return
        payload = ancillary[0][2]
        if len(payload) != _FD_SIZE:
            return
        fd = int.from_bytes(payload, sys.byteorder)
        path = data[1:]
        try:
            pid, placed = _fork(path, into=data[:1] == b"1")
        except OSError as error:
            close(fd)
            send(b"e%d" % (error.errno or errno.EIO))
            continue
        if pid == 0:
            # (The C type's own detach: ``socket.socket``'s, through ``super()``, touches
            # more objects, each a page copied in the spare.)
            _socket.socket.detach(sock)
            become_spare(path.decode(encoding, errors) if path else None, fd, placed)
            os._exit(1)
        close(fd)
        send(b"%d %d" % (pid, placed))


def _fork(cgroup: bytes, *, into: bool) -> tuple[int, bool]:
    """A child of the server: into ``cgroup`` (a path; b"": none) if ``into`` and the
    kernel lets it."""
    if into and cgroup:
        try:
            fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = -1  # gone? the spare's own join says why, in the run's log
        if fd >= 0:
            try:
                return clone.fork_sibling(fd), True
            except OSError:
                pass  # this cgroup only: fork and join
            finally:  # (in the child too)
                os.close(fd)
    return clone.fork_sibling(None), False
