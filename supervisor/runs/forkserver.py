"""The fork server: a single-threaded process that imported the app once and forks runs.

The manager has threads, and forking a threaded process can deadlock the child, so runs
are forked from this dedicated process instead, started as a fresh interpreter. It
talks to the manager over a ``SOCK_SEQPACKET`` Unix socket pair, one JSON message per
packet; the fds of a run travel with its ``spawn`` request as SCM_RIGHTS.

Protocol (manager → server):
- ``{"op": "spawn", "req": N, "job": {...}}`` + fds ``[records_w, stdout_w, stderr_w,
  cancel_r, status_w]``; answered ``{"req": N, "ok": true, "pid": P, "create_time": T}``
  or ``{"req": N, "ok": false, "error": "..."}``.
- ``{"op": "signal", "pid": P, "signal": S}``: ``killpg`` the run's group, if that run
  has not been reaped yet (so a recycled pid is never signalled). No answer.
- ``{"op": "exit"}`` or end-of-file: kill every run and descendant, then exit.
Server → manager, once at start: ``{"op": "ready", "modules": [[path, mtime_ns, size,
inode], ...], "package": ...}``
or ``{"op": "load_failed", "error": "..."}``.

Who reaps: the server, because it is the runs' parent and a subreaper, so it also
inherits every descendant that escapes with ``setsid``. When a run's main process
exits, the server kills the run's process group, sweeps descendants that carry the
run's marker, reaps the main process and then writes its raw wait status to the run's
status pipe, which the manager reads. (Double-forking runs onto the manager would
leave reaping to a multi-threaded process shared with ``subprocess``, and would tie
PDEATHSIG to whichever manager thread adopts them.)

Lifetime: PR_SET_PDEATHSIG (SIGTERM, handled) plus end-of-file on the socket: when the
manager dies, the server kills all runs and their descendants, then exits. Each run
has PR_SET_PDEATHSIG (SIGKILL) towards the server.

May import ``child``, ``procs``, ``registry``, and (at start) ``app``, ``cfgscheduler``,
``context``, ``wire`` and ``records``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import gc
import json
import os
import select
import signal
import socket
import sys
import sysconfig
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

from supervisor.core.registry import Registry
from supervisor.runs import procs
from supervisor.runs.child import (
    CANCEL_FD,
    EXIT_ORPHANED,
    EXIT_SETUP_FAILED,
    RECORDS_FD,
    Job,
    install_logging,
    run_child,
    setup_stdio,
)

MAX_MESSAGE: Final = 64 * 1024
RUN_FDS: Final = 5  # records_w, stdout_w, stderr_w, cancel_r, status_w
_BLOCKED: Final = {signal.SIGCHLD, signal.SIGTERM}
SHUTDOWN_SECONDS: Final = 5.0


@dataclass(slots=True)
class _Run:
    run_id: str
    status_fd: int


class Server:
    """The server's state and loop (runs in the fork server process only)."""

    def __init__(self, sock: socket.socket, parent: int) -> None:
        self.sock = sock
        self.parent = parent
        self.runs: dict[int, _Run] = {}
        self.registry: Registry | None = None
        self.stopping = False
        self.pid = os.getpid()
        self.marker = procs.marker_slot()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # -- start --------------------------------------------------------------------------

    def install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(self._wake_w)

    def load(self, app_spec: str) -> None:
        from supervisor.cfgscheduler import enable
        from supervisor.core.app import load_app

        before = set(sys.modules)
        try:
            self.registry = enable(load_app(app_spec)).registry
        except Exception as error:
            self.send({"op": "load_failed", "error": str(error) or type(error).__name__})
            raise SystemExit(2) from None
        # The app's own modules (not the standard library's or installed packages'):
        # the launcher restarts this server when one of these files changes.
        paths = sysconfig.get_paths()
        libraries = tuple(
            os.path.realpath(paths[key]) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if key in paths
        )
        files = []
        for name in sorted(set(sys.modules) - before):
            path = getattr(sys.modules[name], "__file__", None)
            if isinstance(path, str) and os.path.isfile(path):
                path = os.path.realpath(path)
                if not path.startswith(libraries):
                    st = os.stat(path)
                    files.append([path, st.st_mtime_ns, st.st_size, st.st_ino])
        import supervisor

        self.send(
            {
                "op": "ready",
                "pid": os.getpid(),
                "modules": files,
                "package": os.path.dirname(os.path.abspath(supervisor.__file__)),
                "threads": threading.active_count(),
            }
        )

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(json.dumps(message).encode())

    # -- loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self.stopping:
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 512):
                            pass
                elif not self.stopping:
                    self.handle_message()
            self.reap()
            if os.getppid() != self.parent:
                self.stopping = True
        self.shutdown()

    def handle_message(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, RUN_FDS + 1)
        except (ConnectionError, OSError):
            data, fds = b"", []
        if not data:
            self.stopping = True
            _close_all(fds)
            return
        try:
            message = json.loads(data)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            op = None  # a garbled request: ignored (a spawn's caller times out)
        if op == "spawn":
            self.spawn(message, fds)
            return
        _close_all(fds)
        if op == "signal":
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pid = int(message["pid"])
                if pid in self.runs:
                    os.killpg(pid, int(message["signal"]))
        elif op == "exit":
            self.stopping = True

    def spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        number = message.get("req")
        if len(fds) != RUN_FDS:
            _close_all(fds)
            self.send({"req": number, "ok": False, "error": f"expected {RUN_FDS} fds"})
            return
        try:
            job = Job.from_json(message["job"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            _close_all(fds)
            self.send({"req": number, "ok": False, "error": f"bad job: {error}"})
            return
        status_fd = fds[4]
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid = os.fork()
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
            _close_all(fds)
            self.send({"req": number, "ok": False, "error": f"fork failed: {error}"})
            return
        if pid == 0:
            self.become_run(job, fds)  # never returns
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
        _close_all(fds[:4])
        self.runs[pid] = _Run(job.run_id, status_fd)
        try:
            started = procs.create_time(pid)
        except Exception:
            started = 0.0
        self.send({"req": number, "ok": True, "pid": pid, "create_time": started})

    def become_run(self, job: Job, fds: list[int]) -> None:
        """In the forked child: become the run's process. Never returns."""
        try:
            os.setsid()
            procs.set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self.pid:
                os._exit(EXIT_ORPHANED)
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
            self.sock.detach()
            # Copy the run's fds out of the way, then into place: 0-4 and nothing else.
            # (fd 0 is /dev/null already; sys.stdout/stderr and faulthandler were set up
            # on fds 1 and 2 by the server, so they now write to the run's pipes.)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds[:4]]
            os.dup2(high[1], 1)
            os.dup2(high[2], 2)
            os.dup2(high[0], RECORDS_FD, inheritable=False)
            os.dup2(high[3], CANCEL_FD, inheritable=False)
            os.closerange(CANCEL_FD + 1, _max_fd())
            procs.mark_this_process(job.run_id, self.marker)
            registry = self.registry
            assert registry is not None
        except BaseException:
            os._exit(EXIT_SETUP_FAILED)
        run_child(
            lambda: registry.get(job.scheduler_id),
            job,
            records_fd=RECORDS_FD,
            cancel_fd=CANCEL_FD,
        )

    # -- reaping ------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            run = self.runs.pop(pid, None)
            if run is not None:
                # The main process is a zombie: its group id cannot be recycled yet.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                procs.sweep(run.run_id, roots=[os.getpid()], wait=2.0)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = None
            if run is not None:
                _report(run, status)

    def shutdown(self) -> None:
        """Kill every run and every descendant, reap them, report, and return."""
        for pid in self.runs:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for pid in procs.descendants([self.pid]):
                with contextlib.suppress(OSError):
                    pidfd = os.pidfd_open(pid)
                    try:
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    finally:
                        os.close(pidfd)
            try:
                while True:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    run = self.runs.pop(pid, None)
                    if run is not None:
                        _report(run, status)
            except ChildProcessError:
                break
            if time.monotonic() > deadline:
                break
            poller.poll(50)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        for run in self.runs.values():
            _report(run, None)
        self.runs.clear()


def _report(run: _Run, status: int | None) -> None:
    with contextlib.suppress(OSError):
        if status is not None:
            os.write(run.status_fd, f"{status}\n".encode())
    with contextlib.suppress(OSError):
        os.close(run.status_fd)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@functools.cache
def _max_fd() -> int:
    try:
        return max(256, os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


def _warm_up() -> None:
    """Run the per-run code paths once, so their lazy set-up is not repeated per run."""
    from datetime import UTC, datetime

    from supervisor.core.records import Level
    from supervisor.runs.context import Context, make_record
    from supervisor.runs.wire import encode_log

    class _Null:
        def write(self, record: object) -> None:
            encode_log(make_record("warm-up", Level.INFO, "warm-up", {"n": 1.5}))

    undo = install_logging(_Null(), "warm-up")
    undo()
    Context(scheduler_id="warm-up", run_id="warm-up", trigger="manual", deadline=None, sink=_Null())
    _Null().write(None)
    Job.from_json(
        Job(scheduler_id="w", run_id="w", trigger="m", deadline=datetime.now(UTC)).to_json()
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The fork server process: ``--socket-fd N --app SPEC --parent PID [--path DIR]``."""
    parser = argparse.ArgumentParser(prog="supervisor fork server")
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--path", action="append", default=[])
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.socket_fd)
    server = Server(sock, args.parent)
    server.install_signals()
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.parent:
        return
    procs.become_subreaper()
    sys.path[0:0] = args.path
    # Import what every run needs before the app, so children share it.
    import supervisor.runs.context
    import supervisor.runs.wire  # noqa: F401

    setup_stdio()  # inherited by every run: fds 1 and 2 will be its pipes
    _max_fd()
    server.load(args.app)
    _warm_up()
    gc.collect()
    gc.freeze()
    server.serve()
