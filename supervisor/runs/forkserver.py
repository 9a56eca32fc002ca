"""The fork server: a single-threaded process that imported the app once and forks runs.

The manager has threads, and forking a threaded process can deadlock the child, so runs
are forked from this dedicated process instead, started as a fresh interpreter. It
talks to the manager over a ``SOCK_SEQPACKET`` Unix socket pair with the typed messages
of ``forkmessages``; the fds of a run travel with its spawn request as SCM_RIGHTS.

Spares: most runs are not forked when they are asked for. Asked to ``prepare``, the
server forks a spare (into the cgroup the manager made for it) and hands the manager
the spare's pidfd, the read end of its status pipe and a socket to it (``Prepared``);
to start a run the manager claims the spare here (``ClaimRequest``: its run id) and
sends the job straight to the spare, which becomes the run: no round trip through the
server on a run's start. Where no spare is there, ``SpawnRequest`` forks the run and
answers ``Spawned`` (its pidfd); that run waits at a gate until the answer is sent.
Forks (spares and spawns) are made one at a time in the order asked, with the ends of
runs reaped in between: a run's status never waits behind a batch of forks.

Runs do not depend on the server once they have started. The manager holds a pidfd of
each run's main process and its pipes; runs have no parent-death signal towards the
server. While the server lives it reaps its runs: when a run's main process exits, the
server reads its status without reaping it (``WNOWAIT``), kills the run's process group
(the zombie keeps the group id from being recycled), kills what is left in its cgroup if
the run was forked into one (nothing it starts can leave it), else sweeps descendants
that carry the run's marker, writes the status to the run's status pipe, and only then
reaps it. If the server dies (even by SIGKILL), its runs go on:
they reparent to the manager, a subreaper, which reaps them itself; a status already
written is never lost, and a status not yet written belongs to a zombie not yet reaped.

Signals: a run's ``os.getppid()`` is this server, so a runner can signal it. Every signal
that would end it and can be caught is blocked (SIGHUP, SIGINT, SIGUSR1, ...: a blocked
signal is never delivered, and a child starts with none pending), and SIGTERM only wakes
it to check whether the manager is gone. Runs get default signal dispositions back
(``procs.reset_signal_dispositions``; the server works out once which ones differ).

Lifetime: PR_SET_PDEATHSIG (SIGTERM) plus end-of-file on the socket: when the manager
dies or says ``exit``, the server kills all its runs and their descendants, then exits.

Code freshness: the app's own modules (not the standard library's or installed
packages') are compiled from source, never from ``__pycache__``, whose check (mtime in
seconds and size) misses a change made within the same second keeping the size; their
content hashes go to the manager, which restarts the server when one changes.

Runs and spares are forked straight into their cgroups with ``clone3(CLONE_INTO_CGROUP)``
(``clone``) where a probe at start (``--probe-cgroup``, a cgroup the launcher made for it)
says the kernel allows it: that avoids a move into the cgroup, which waits for an RCU
grace period. Elsewhere the child joins its cgroup after ``fork``.

May import ``child``, ``clone``, ``forker``, ``atfork``, ``procs``, ``cgroups``, ``job``,
``forkmessages``, ``registry``, and (at start) ``app``, ``context``, ``wire`` and ``records``.
"""

from __future__ import annotations

import _socket
import collections
import contextlib
import fcntl
import functools
import gc
import importlib.machinery
import os
import select
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from typing_extensions import Buffer

from supervisor.core.registry import Registry
from supervisor.runs import atfork, cgroups, clone, procs
from supervisor.runs.child import (
    CANCEL_FD,
    EXIT_SETUP_FAILED,
    RECORDS_FD,
    ForkedLogging,
    install_logging,
    run_child,
    setup_stdio,
)
from supervisor.runs.forker import Forker, ForkerUnavailable
from supervisor.runs.forkmessages import (
    RUN_FDS,
    SPARE_RUN_FDS,
    ClaimRequest,
    ExitRequest,
    LoadFailed,
    Message,
    ModuleFile,
    Prepared,
    PrepareFailed,
    PrepareRequest,
    ProtocolError,
    Ready,
    SignalRequest,
    Spawned,
    SpawnFailed,
    SpawnRequest,
    decode,
    encode,
    module_file,
    receive,
    spare_job,
)
from supervisor.runs.job import Job

_BLOCKED: Final = {signal.SIGCHLD, signal.SIGTERM}
SHUTDOWN_SECONDS: Final = 5.0
# How long the end of a run waits for its leftover processes to die before its status.
SWEEP_SECONDS: Final = 2.0
# Signals that would end the server (their default action) and can be caught: blocked,
# so a runner signalling its parent harms nobody (blocked rather than ignored: a child
# needs only its mask cleared). (SIGTERM is handled, SIGCHLD wakes.)
_GUARDED: Final = tuple(
    getattr(signal, name)
    for name in (
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGPWR",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGSTKFLT",
    )
    if hasattr(signal, name)
) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


@dataclass(slots=True)
class _Run:
    """A child of the server: a run, or a spare (``run_id`` None until it is claimed)."""

    run_id: str | None
    status_fd: int
    # The cgroup it was forked into (``clone3``): what it starts cannot leave it, so
    # killing the cgroup, not a walk of ``/proc``, finds them. None if not known to be.
    cgroup: str | None = None


class Server:
    """The server's state and loop (runs in the fork server process only)."""

    def __init__(self, sock: socket.socket, parent: int) -> None:
        self.sock = sock
        self.parent = parent
        self.runs: dict[int, _Run] = {}  # runs and spares, by pid
        # What is to be forked, in the order asked (and the fds of each spawn request).
        self.forks: collections.deque[SpawnRequest | PrepareRequest] = collections.deque()
        self._fork_fds: dict[int, list[int]] = {}
        # "" if runs are forked into their cgroups (``clone``), else why not.
        self.placement = "clone3 not tried"
        self.registry: Registry | None = None
        self.stopping = False
        self.pid = os.getpid()
        self.marker = procs.marker_slot()
        # What a child sets to get a fresh program's signal dispositions (once loaded).
        self.signal_resets: list[procs.SignalReset] | None = None
        # Each run's records sink and logging forwarding, built once (once loaded).
        self.forked_logging: ForkedLogging | None = None
        # Forks the spares (``forker``), once started; None: this process forks them.
        self.forker: Forker | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # -- start --------------------------------------------------------------------------

    def install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            # The parent-death signal, or a runner's: only the former ends the server.
            if os.getppid() != self.parent:
                self.stopping = True

        procs.set_signal_mask(signal.SIG_BLOCK, _GUARDED)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self._wake_w)

    def load(self, app_spec: str) -> None:
        from supervisor.core.app import load_app
        from supervisor.core.registry import registry_of

        before = set(sys.modules)
        libraries = _library_dirs()
        _compile_app_from_source(libraries)
        load_started = time.time()
        try:
            self.registry = registry_of(load_app(app_spec))
        except Exception as error:
            self.send(LoadFailed(error=str(error) or type(error).__name__))
            raise SystemExit(2) from None
        # The app's own modules: the launcher restarts this server when one changes.
        files: list[ModuleFile] = []
        for name in sorted(set(sys.modules) - before):
            path = getattr(sys.modules[name], "__file__", None)
            if isinstance(path, str) and os.path.isfile(path):
                path = os.path.realpath(path)
                if not path.startswith(libraries):
                    files.append(module_file(path))
        import supervisor

        self.send(
            Ready(
                pid=os.getpid(),
                package=os.path.dirname(os.path.abspath(supervisor.__file__)),
                modules=tuple(files),
                load_started=load_started,
                placement=self.placement,
            )
        )

    def start_forker(self) -> None:
        """Fork the forker, which forks the spares from now on (this process keeps forking
        them if it cannot be started)."""
        plan = procs.signal_resets() if self.signal_resets is None else self.signal_resets
        with contextlib.suppress(OSError):
            # The forker sets the runs' signal dispositions for itself once: its spares
            # inherit them (each set in a spare was some 15 page copies).
            self.forker = Forker.start(
                lambda cgroup, sock_fd, placed: self.become_spare(
                    cgroup, sock_fd, placed=placed, resets=()
                ),
                blocked=_BLOCKED,
                max_fd=_max_fd(),
                dispositions=plan,
            )

    def drop_forker(self) -> None:
        """Fork spares here from now on; the forker ends (reaped by the loop)."""
        if self.forker is not None:
            self.forker.close()
            with contextlib.suppress(OSError):
                os.kill(self.forker.pid, signal.SIGKILL)  # not reaped yet: still ours
            self.forker = None

    def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        if fds:
            socket.send_fds(self.sock, [encode(message)], list(fds))
        else:
            self.sock.send(encode(message))

    # -- loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self.stopping:
            for fd, _ in poller.poll(0 if self.forks else None):
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 512):
                            pass
            # Every message first, also when only a child's end woke us: a spare's claim
            # is queued before the spare could get its job, so a run is never reaped as
            # a spare (its marker not swept).
            while not self.stopping and self.handle_message():
                pass
            self.reap()
            # One fork at a time (in the order asked), reaping in between: a run's status
            # never waits behind a batch of forks.
            if self.forks and not self.stopping:
                work = self.forks.popleft()
                if isinstance(work, SpawnRequest):
                    self.spawn(work, self._fork_fds.pop(work.req, []))
                else:
                    self.prepare(work.cgroup)
            if os.getppid() != self.parent:
                self.stopping = True
        self.shutdown()

    def handle_message(self) -> bool:
        """Handle one waiting message; False if none was waiting."""
        try:
            data, fds = receive(self.sock, RUN_FDS + 1, wait=False)
        except BlockingIOError:
            return False
        except (ConnectionError, OSError):
            data, fds = b"", []
        if not data:
            self.stopping = True
            _close_all(fds)
            return False
        try:
            message = decode(data)
        except ProtocolError:
            message = None  # a garbled request: ignored (a spawn's caller times out)
        if isinstance(message, SpawnRequest):
            self._fork_fds[message.req] = fds
            self.forks.append(message)
            return True
        _close_all(fds)
        if isinstance(message, PrepareRequest):
            self.forks.append(message)
        elif isinstance(message, ClaimRequest):
            run = self.runs.get(message.pid)
            if run is not None and run.run_id is None:
                run.run_id = message.run_id
        elif isinstance(message, SignalRequest):
            run = self.runs.get(message.pid)
            if run is not None and run.run_id is not None:
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(message.pid, message.signal)
        elif isinstance(message, ExitRequest):
            self.stopping = True
        return True

    def spawn(self, request: SpawnRequest, fds: list[int]) -> None:
        """Fork a run for a job no spare was there for (or naming its own cgroup)."""
        number = request.req
        if len(fds) != RUN_FDS:
            _close_all(fds)
            self.send(SpawnFailed(req=number, error=f"expected {RUN_FDS} fds"))
            return
        job = request.job
        status_fd = fds[4]
        # The run waits at this gate until the manager has its answer: a runner that
        # stopped or killed this server at once would otherwise leave the spawn unanswered.
        try:
            gate_r, gate_w = os.pipe()
        except OSError as error:
            _close_all(fds)
            self.send(SpawnFailed(req=number, error=f"cannot create a pipe: {error}"))
            return
        cgroup = job.cgroup
        procs.set_signal_mask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid, placed = self._fork_into(cgroup)
        except OSError as error:
            procs.set_signal_mask(signal.SIG_UNBLOCK, _BLOCKED)
            _close_all([*fds, gate_r, gate_w])
            self.send(SpawnFailed(req=number, error=f"fork failed: {error}"))
            return
        if pid == 0:
            os.close(gate_w)
            self.become_run(replace(job, cgroup=None) if placed else job, [*fds[:4], gate_r])
        procs.set_signal_mask(signal.SIG_UNBLOCK, _BLOCKED)
        _close_all([*fds[:4], gate_r])
        self.runs[pid] = _Run(job.run_id, status_fd, cgroup if placed else None)
        try:
            started = procs.create_time(pid)
        except Exception:
            started = 0.0
        # Not reaped before this server reads the next message: the pid is the run's.
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as error:
            os.close(gate_w)  # the run ends at its gate; reaped (and reported) by the loop
            self.send(SpawnFailed(req=number, error=f"cannot watch the run: {error}"))
            return
        try:
            self.send(Spawned(req=number, pid=pid, create_time=started), [pidfd])
        finally:
            os.close(pidfd)
            with contextlib.suppress(OSError):
                os.write(gate_w, b"g")
            os.close(gate_w)

    def _fork_into(self, cgroup: str | None) -> tuple[int, bool]:
        """Fork: straight into ``cgroup`` where ``clone3`` can, else with ``os.fork`` (the
        child joins it itself). (pid, whether the child is in ``cgroup`` already);
        raises ``OSError``."""
        if self.placement == "" and cgroup is not None:
            try:
                fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                fd = -1  # gone? the child's own join says why, in the run's log
            if fd >= 0:
                try:
                    return clone.fork_into(fd), True
                except OSError:
                    pass  # this cgroup only (the probe said it works): fork and join
                finally:  # (in the child too)
                    with contextlib.suppress(OSError):
                        os.close(fd)
        return os.fork(), False

    def probe(self, cgroup: str | None) -> None:
        """Choose, once, how runs get into their cgroups (``placement``)."""
        if cgroup is not None:
            self.placement = clone.probe(cgroup) or ""

    def prepare(self, cgroup: str | None) -> None:
        """Fork a spare (into ``cgroup`` if given) that waits for its job from the manager,
        and hand the manager its pidfd, its status pipe and a socket to it."""
        made: list[int] = []
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            made += [ours.detach(), theirs.detach()]
            made += os.pipe()
        except OSError as error:
            _close_all(made)
            self.send(PrepareFailed(cgroup=cgroup, error=f"cannot make its pipes: {error}"))
            return
        ours_fd, theirs_fd, status_r, status_w = made
        try:
            pid, placed = self._fork_spare(cgroup, theirs_fd)
        except OSError as error:
            _close_all(made)
            self.send(PrepareFailed(cgroup=cgroup, error=f"fork failed: {error}"))
            return
        os.close(theirs_fd)
        # Reaped only by the loop, after this answer: the pid is the spare's.
        self.runs[pid] = _Run(None, status_w, cgroup if placed else None)
        handed = [ours_fd, status_r]
        try:
            started = procs.create_time(pid)
            handed.append(os.pidfd_open(pid))
            self.send(
                Prepared(cgroup=cgroup, pid=pid, create_time=started, placed=placed),
                [handed[2], status_r, ours_fd],
            )
        except Exception as error:  # the spare ends at end-of-file; reaped by the loop
            with contextlib.suppress(OSError):
                self.send(PrepareFailed(cgroup=cgroup, error=f"cannot hand it over: {error}"))
        finally:
            _close_all(handed)

    def _fork_spare(self, cgroup: str | None, sock_fd: int) -> tuple[int, bool]:
        """Fork a spare that will wait on ``sock_fd``: by the forker, else here. (pid,
        whether it is in ``cgroup`` already); raises ``OSError``."""
        if self.forker is not None:
            try:
                return self.forker.fork_spare(cgroup, sock_fd, into=self.placement == "")
            except ForkerUnavailable:
                self.drop_forker()
        procs.set_signal_mask(signal.SIG_BLOCK, _BLOCKED)
        try:
            pid, placed = self._fork_into(cgroup)
        finally:
            if os.getpid() == self.pid:
                procs.set_signal_mask(signal.SIG_UNBLOCK, _BLOCKED)
        if pid == 0:
            self.become_spare(cgroup, sock_fd, placed=placed)  # never returns
        return pid, placed

    def become_spare(
        self,
        cgroup: str | None,
        sock_fd: int,
        *,
        placed: bool,
        resets: Sequence[procs.SignalReset] | None = None,
    ) -> None:
        """In a forked spare: join ``cgroup`` (unless ``placed`` in it by ``clone3``),
        wait for the job from the manager on ``sock_fd``, become its run. ``resets``: the
        signal dispositions to set (None: ``signal_resets``; the forker's spares have them)."""
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            _socket.socket.detach(self.sock)  # (``socket.socket``'s touches more)
            # Nothing of the server's stays open here (its socket, the runs' status
            # pipes, other spares): their ends must close when the server does.
            os.closerange(3, sock_fd)
            os.closerange(sock_fd + 1, _max_fd())
            procs.reset_signal_dispositions(self.signal_resets if resets is None else resets)
            joined = placed
            if not placed and cgroup is not None:
                try:
                    from supervisor.runs import cgroups

                    cgroups.join_self(cgroup)
                    joined = True
                except OSError:
                    pass  # ``run_child`` tries again, and says so if it fails
            # (The C type, not ``socket.socket``: fewer objects touched, fewer pages copied.)
            sock = _socket.socket(fileno=sock_fd)
            data, fds = receive(sock, SPARE_RUN_FDS)
            if not data:
                os._exit(0)  # the manager dropped this spare: nothing to run
            assert len(fds) == SPARE_RUN_FDS
            sock.close()
            job = spare_job(data, joined=cgroup if joined else None)
        except BaseException:
            os._exit(EXIT_SETUP_FAILED)
        # No gate: the manager had this process's pidfd before it sent the job.
        self._enter_run(job, fds)

    def become_run(self, job: Job, fds: list[int]) -> None:
        """In the forked child: become the run's process. Never returns."""
        try:
            os.setsid()  # (``run_child`` joins the job's cgroup first of all)
            signal.set_wakeup_fd(-1)
            procs.reset_signal_dispositions(self.signal_resets)
            self.sock.detach()
            if not os.read(fds[4], 1):  # the gate
                os._exit(EXIT_SETUP_FAILED)  # the server died before it answered
            os.close(fds[4])
        except BaseException:
            os._exit(EXIT_SETUP_FAILED)
        self._enter_run(job, fds[:4])

    def _enter_run(self, job: Job, fds: list[int]) -> None:
        """Put the run's fds (``fds``: records, stdout, stderr, cancel) in place, mark the
        process, run the job. Never returns."""
        try:
            # Copy the run's fds out of the way, then into place: 0-4 and nothing else.
            # (fd 0 is /dev/null already; sys.stdout/stderr and faulthandler were set up
            # on fds 1 and 2 by the server, so they now write to the run's pipes.)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
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
            forked=self.forked_logging,
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
            if self.forker is not None and pid == self.forker.pid:
                self.drop_forker()  # it died: spares are forked here from now on
            run = self.runs.pop(pid, None)
            if run is not None:
                # The main process is a zombie: its group id cannot be recycled yet.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                if run.cgroup is not None:
                    _kill_cgroup(run.cgroup)
                elif run.run_id is not None:
                    # Not below the other runs' main processes nor the spares: orphans
                    # of this run were handed to this server (the subreaper), not them.
                    procs.sweep(
                        run.run_id, roots=[self.pid], wait=SWEEP_SECONDS, skip=set(self.runs)
                    )
                # Written before the zombie is reaped: if this server dies now, the
                # manager has the status, or reaps the zombie itself.
                _report(run, procs.status_of(info))
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def shutdown(self) -> None:
        """Kill every run and every descendant, reap them, report, and return."""
        self.drop_forker()
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


def _library_dirs() -> tuple[str, ...]:
    """Where the standard library and installed packages live (not the app)."""
    paths = sysconfig.get_paths()
    return tuple(
        os.path.realpath(paths[key]) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if key in paths
    )


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the app's modules from their source every time: never reads or writes
    ``__pycache__`` for them (other modules load as usual)."""

    skip: tuple[str, ...] = ()

    def _ours(self, path: str) -> bool:
        return not os.path.realpath(path).startswith(self.skip)

    def get_data(self, path: str) -> bytes:
        if path.endswith(tuple(importlib.machinery.BYTECODE_SUFFIXES)) and self._ours(self.path):
            raise OSError("the app's bytecode cache is not used")
        return super().get_data(path)

    def set_data(self, path: str, data: Buffer, *, _mode: int = 0o666) -> None:
        if not self._ours(self.path):
            super().set_data(path, data, _mode=_mode)


def _compile_app_from_source(libraries: tuple[str, ...]) -> None:
    import supervisor

    package = os.path.dirname(os.path.realpath(supervisor.__file__)) + os.sep
    _SourceOnlyLoader.skip = (*libraries, package)
    hook = importlib.machinery.FileFinder.path_hook(
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
    )
    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()


def _kill_cgroup(path: str) -> None:
    """Kill what is left in a run's cgroup (one read when nothing is), as ``procs.sweep``
    would have: before its status is reported."""
    cgroup = cgroups.RunCgroup(Path(path), 2)  # (forked into it: cgroup v2)
    if cgroup.pids():
        cgroup.kill(timeout=SWEEP_SECONDS)


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
    job = Job(scheduler_id="w", run_id="w", trigger="m", cgroup="/w")
    spare_job(encode(SpawnRequest(req=0, job=job)), joined="/w")
    # The C library functions a run's process calls first (``_enter_run``): bound here,
    # lazily, once, not by the dynamic linker in every run (a few pages each). Both are
    # no-ops on fd 0 (dup3 refuses the same fd).
    os.dup2(0, 0)
    with contextlib.suppress(OSError):
        os.dup2(0, 0, inheritable=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Arguments:
    socket_fd: int
    app: str
    parent: int
    path: tuple[str, ...] = ()
    probe_cgroup: str | None = None


def parse_args(argv: Sequence[str]) -> Arguments:
    """The fork server's command line; exits with status 2 and a message naming the
    problem on stderr if it is not one. (Not argparse: its help formatter imports
    ``shutil``, which loads zlib, bz2 and lzma, six shared objects every fork copies.)"""
    values: dict[str, str] = {}
    paths: list[str] = []
    options = ("--socket-fd", "--app", "--parent", "--path", "--probe-cgroup")
    rest = list(argv)
    try:
        while rest:
            option = rest.pop(0)
            if option not in options:
                raise ValueError(f"unknown argument {option!r}")
            if not rest:
                raise ValueError(f"{option} needs a value")
            value = rest.pop(0)
            if option == "--path":
                paths.append(value)
            elif option in values:
                raise ValueError(f"{option} given twice")
            else:
                values[option] = value
        missing = [o for o in ("--socket-fd", "--app", "--parent") if o not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        numbers = {}
        for option in ("--socket-fd", "--parent"):
            try:
                numbers[option] = int(values[option])
            except ValueError:
                raise ValueError(f"{option}: not an integer: {values[option]!r}") from None
    except ValueError as error:
        print(f"supervisor fork server: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return Arguments(
        socket_fd=numbers["--socket-fd"],
        app=values["--app"],
        parent=numbers["--parent"],
        path=tuple(paths),
        probe_cgroup=values.get("--probe-cgroup"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The fork server process: ``--socket-fd N --app SPEC --parent PID [--path DIR]``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sock = socket.socket(fileno=args.socket_fd)
    server = Server(sock, args.parent)
    server.install_signals()
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.parent:
        return
    procs.become_subreaper()
    sys.path[0:0] = list(args.path)
    # Import what every run needs before the app, so children share it.
    import supervisor.runs.context
    import supervisor.runs.wire  # noqa: F401

    setup_stdio()  # inherited by every run: fds 1 and 2 will be its pipes
    _max_fd()
    server.probe(args.probe_cgroup)
    server.load(args.app)
    _warm_up()
    server.signal_resets = procs.signal_resets()
    server.forked_logging = ForkedLogging(RECORDS_FD)
    atfork.drop_lock_hooks()  # (before the freeze: it looks the hook lists up)
    gc.collect()
    gc.freeze()
    server.start_forker()
    server.serve()
