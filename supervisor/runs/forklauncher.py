"""The fork-server launcher: runs forked in a few milliseconds from a server that imported
the app once (see ``forkserver``), watched from the manager without depending on it.

For each run the manager creates the pipes (records, stdout, stderr, cancel) and a status
pipe, and sends them with the ``SpawnRequest``; the answer carries a pidfd of the run's
main process, on which the manager sees it end. Normally the server has reaped it by
then and writes its wait status on the status pipe. If the server is gone (a runner
killed it, say), the status pipe reaches end-of-file without one: the run has been
reparented to this process (a subreaper, made so by ``start``) and is reaped here. A
server that does not report within ``STATUS_SECONDS`` (stopped) is continued, then
killed. A dead server is replaced at the next spawn; a server whose app files changed
(content hashes) is replaced, and drained: it serves its runs in progress to their end.

Where runs get cgroups, each server keeps up to ``SPARES`` spare processes, each in a fresh
cgroup (``PrepareRequest``): moving a process into a cgroup waits for an RCU grace period
(tens of milliseconds on a busy machine), and a spare has done that before its run is
asked for; they are made in batches (when half are used), because moves made together
share a grace period. A run that finds no spare is forked and joins its cgroup itself.

Starting a server is bounded (``start_timeout``) and cancellable: ``close`` from another
thread, or a spawn's own ``cancel`` event, makes a start in progress give up promptly.

May import ``forkmessages``, ``supervision``, ``containment``, ``spawner``, ``job``,
``procs``, ``errors`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.runs import procs
from supervisor.runs.containment import Containment
from supervisor.runs.forkmessages import (
    MAX_PACKET,
    ExitRequest,
    LoadFailed,
    ModuleFile,
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
)
from supervisor.runs.job import Job
from supervisor.runs.procs import MARKER_ENV
from supervisor.runs.spawner import Spawner, boot_code, path_args
from supervisor.runs.supervision import RunPipes, RunProcess, close_quietly

if TYPE_CHECKING:
    from supervisor.runs.cgroups import RunCgroup

START_TIMEOUT: Final = 60.0
SPARES: Final = 8
SPAWN_TIMEOUT: Final = 30.0
# How long a dying fork server may take to exit (it kills its runs first).
SERVER_EXIT_SECONDS: Final = 5.0
# How long the server may take to report a run's status once its main process ended
# (it sweeps the run's marked processes first, waiting up to 2 s for them).
STATUS_SECONDS: Final = 5.0
# How often a start in progress looks at its cancel events.
_CANCEL_POLL_SECONDS: Final = 0.05
# A file modified this close to now may change again with the same mtime (the kernel's
# timestamps are coarse): its content is compared until it is older than this.
_RACY_SECONDS: Final = 1.0


class _Cancelled(Exception):
    """A start was given up because the launcher closed or the caller cancelled."""


class _Stamp:
    """What the manager knows of one module file: its stat and content when loaded."""

    def __init__(self, module: ModuleFile) -> None:
        self.path = module.path
        self.sha256 = module.sha256
        self.stat = (module.mtime_ns, module.size, module.inode)
        self.settled = False

    def changed(self) -> bool:
        """Has the content changed since the server imported it?"""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stat == self.stat and self.settled:
            return False
        now = module_file(self.path)
        if now.sha256 != self.sha256:
            return True
        self.stat = (now.mtime_ns, now.size, now.inode)
        self.settled = time.time() - now.mtime_ns / 1e9 > _RACY_SECONDS
        return False

    def digest(self) -> str:
        return module_file(self.path).sha256


class _Server:
    """The manager's handle on one fork server process."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.modules: tuple[_Stamp, ...] = ()
        self.spares: list[RunCgroup] = []  # cgroups a spare process waits in
        self.live = 0
        self.draining = False
        self.closed = False
        self._requests = 0
        self._send_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        spawner: Spawner,
        *,
        app_spec: str,
        python: str,
        cwd: str | None,
        paths: Sequence[str],
        timeout: float,
        cancelled: Callable[[], bool],
    ) -> _Server:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        env[MARKER_ENV] = procs.MARKER_PLACEHOLDER  # last: overwritten in place per run
        argv = [
            python,
            "-c",
            boot_code("runs.forkserver"),
            "--socket-fd",
            str(theirs.fileno()),
            "--app",
            app_spec,
            "--parent",
            str(os.getpid()),
            *path_args(paths),
        ]

        def launch() -> subprocess.Popen[bytes]:
            with procs.owning_children() as own:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                    env=env,
                    cwd=cwd,
                )
                own(popen.pid)
                return popen

        try:
            popen = spawner.call(launch)
        except OSError as error:
            ours.close()
            raise BackendError(f"cannot start the fork server: {error}") from error
        finally:
            theirs.close()
        server = cls(popen, ours)
        try:
            server._handshake(app_spec, timeout, cancelled)
        except BaseException:
            server.kill()
            raise
        return server

    def _handshake(self, app_spec: str, timeout: float, cancelled: Callable[[], bool]) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        deadline = time.monotonic() + timeout
        while not poller.poll(_CANCEL_POLL_SECONDS * 1000):
            if cancelled():
                raise _Cancelled
            if time.monotonic() >= deadline:
                raise AppLoadError(
                    f"--app {app_spec!r}: the app did not finish importing within "
                    f"{timeout:g}s (its fork server was stopped)"
                )
        try:
            data = self.sock.recv(MAX_PACKET)
        except OSError as error:
            raise BackendError(f"the fork server failed to start: {error}") from error
        if not data:
            raise AppLoadError(
                f"--app {app_spec!r}: the fork server exited while loading the app (see its stderr)"
            )
        try:
            message = decode(data)
        except ProtocolError as error:
            raise BackendError(str(error)) from error
        if isinstance(message, LoadFailed):
            raise AppLoadError(message.error)
        if not isinstance(message, Ready):
            raise BackendError(f"unexpected message from the fork server: {message!r}")
        expected = str(Path(__file__).resolve().parents[1])
        if os.path.realpath(message.package) != os.path.realpath(expected):
            raise BackendError(
                f"the fork server imported supervisor from {message.package}, not {expected}"
            )
        self.modules = tuple(_Stamp(module) for module in message.modules)

    def stale(self) -> bool:
        """Has a module file of the app changed since the server imported it?"""
        return any(stamp.changed() for stamp in self.modules)

    def digests(self) -> tuple[str, ...]:
        return tuple(stamp.digest() for stamp in self.modules)

    def alive(self) -> bool:
        if self.closed:
            return False
        if self.popen.poll() is None:
            return True
        procs.disown_child(self.pid)  # reaped just now by poll()
        return False

    def request_spawn(self, job: Job, fds: Sequence[int]) -> tuple[int, float, int]:
        """Have the server fork ``job``: (pid, create time, pidfd). Callers serialize
        these (the launcher's lock). Raises ``OSError``/``ProtocolError`` if the server
        is gone or garbled, ``TimeoutError``, or ``BackendError`` if it refused."""
        self._requests += 1
        number = self._requests
        with self._send_lock:
            socket.send_fds(self.sock, [encode(SpawnRequest(req=number, job=job))], list(fds))
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the fork server did not answer within {SPAWN_TIMEOUT:g}s")
            if not poller.poll(math.ceil(remaining * 1000)):
                continue
            reply, pidfds, _, _ = socket.recv_fds(self.sock, MAX_PACKET, 1)
            if not reply:
                close_quietly(pidfds)
                raise ConnectionError("the fork server closed the connection")
            answer = decode(reply)
            if isinstance(answer, Spawned | SpawnFailed) and answer.req == number:
                break  # (an answer to an abandoned request is skipped)
            close_quietly(pidfds)
        if isinstance(answer, SpawnFailed):
            close_quietly(pidfds)
            raise BackendError(f"the fork server could not start the run: {answer.error}")
        if len(pidfds) != 1:
            close_quietly(pidfds)
            raise ProtocolError("the fork server's answer carried no pidfd")
        return answer.pid, answer.create_time, pidfds[0]

    def prepare(self, cgroup: RunCgroup) -> None:
        """Have the server fork a spare process into ``cgroup`` (raises ``OSError``)."""
        with self._send_lock:
            self.sock.send(encode(PrepareRequest(cgroup=str(cgroup.path))))
        self.spares.append(cgroup)

    def signal_group(self, pid: int, signum: int) -> None:
        """Have the server signal the run's process group, unless the run was reaped."""
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(encode(SignalRequest(pid=pid, signal=int(signum))))

    def wait_exit(self, timeout: float) -> None:
        """Wait until the server process has exited (it is dying); reap it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
            procs.disown_child(self.pid)

    def resume(self) -> None:
        """SIGCONT the server (stopped by someone)."""
        with contextlib.suppress(OSError):
            self.popen.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (a failed start, or stuck), reap it."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.popen.kill()
        self.popen.wait()
        procs.disown_child(self.pid)

    def close(self, *, timeout: float = SERVER_EXIT_SECONDS) -> None:
        """Ask the server to exit (it kills its runs), wait for it, and reap it."""
        self.request_exit()
        self.wait_closed(time.monotonic() + timeout)

    def request_exit(self) -> None:
        """Ask the server to exit (it kills its runs first); see ``wait_closed``."""
        if self.closed:
            return
        self.closed = True
        with self._send_lock, contextlib.suppress(OSError):
            self.sock.send(encode(ExitRequest()))
        with contextlib.suppress(OSError):
            self.sock.close()

    def wait_closed(self, deadline: float) -> None:
        """Wait for the server to exit until ``deadline`` (monotonic), then kill it; reap."""
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        procs.disown_child(self.pid)


class _ForkedRun(RunProcess):
    """A run forked by a fork server, watched through its pidfd. When it has ended, the
    server reports its status on the status pipe; if the server is gone (or stuck), the
    run was handed to us, its subreaper, and we reap it ourselves."""

    def __init__(
        self,
        *,
        job: Job,
        pid: int,
        create_time: float,
        pipes: RunPipes,
        cgroup: RunCgroup | None,
        release_cgroup: Callable[[RunCgroup], None] | None,
        status_r: int,
        pidfd: int,
        server: _Server,
        on_done: Callable[[_ForkedRun], None],
    ) -> None:
        super().__init__(
            job=job,
            pid=pid,
            create_time=create_time,
            pipes=pipes,
            cgroup=cgroup,
            release_cgroup=release_cgroup,
        )
        self.server = server
        self._status_r = status_r
        self._pidfd = pidfd
        self._reaped = False
        self._server = server
        self._on_done = on_done

    def _exit_fd(self) -> int:
        return self._pidfd

    def _on_exit_fd(self) -> bool:
        """The main process ended: its status from the server, else reaped here."""
        if self._reaped:
            return True
        status = self._server_status()
        if status is not None:
            self._status = status
            self._reaped = True  # by the server
            return True
        return self._reap()

    def _server_status(self) -> int | None:
        """The status the server writes once it has killed the run's group and swept its
        marked processes; None at end-of-file (the server is gone). A server that says
        nothing for ``STATUS_SECONDS`` is stuck (stopped, say): it is continued, then
        killed (the launcher replaces it), and the run is ours to reap."""
        poller = select.poll()
        poller.register(self._status_r, select.POLLIN)
        data = b""
        deadline = time.monotonic() + STATUS_SECONDS
        nudged = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if nudged:
                    self._server.kill()
                    return None
                self._server.resume()
                nudged = True
                deadline = time.monotonic() + 1.0
                continue
            if not poller.poll(math.ceil(remaining * 1000)):
                continue
            try:
                chunk = os.read(self._status_r, 64)
            except OSError:
                chunk = b""
            if not chunk:
                try:
                    return int(data.strip())
                except ValueError:
                    return None
            data += chunk
            if data.endswith(b"\n"):
                with contextlib.suppress(ValueError):
                    return int(data.strip())
                return None

    def _reap(self) -> bool:
        """The pidfd is readable: the main process ended. Reap it (we are its parent now)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, flags)
        except ChildProcessError:
            # Not ours yet: its old parent, the server, is still dying.
            self._server.wait_exit(SERVER_EXIT_SECONDS)
            try:
                info = os.waitid(os.P_PIDFD, self._pidfd, flags)
            except ChildProcessError:
                self._status_problem = (
                    "the run's exit status was lost: its fork server stopped and the run "
                    "was not handed to the manager"
                )
                self._reaped = True
                return True
        if info is None:
            return False
        # A zombie: its group id cannot be recycled yet.
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        procs.sweep(self.run_id, roots=[os.getpid()])
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
        self._status = procs.status_of(info)
        self._reaped = True
        return True

    @property
    def orphaned(self) -> bool:
        """Is its fork server gone (so nobody but us will kill it)?"""
        return not self._server.alive()

    def kill(self) -> None:
        """SIGKILL the run's group (and cgroup): the launcher is closing."""
        with contextlib.suppress(Exception):
            self._signal_group(signal.SIGKILL)
            if self.cgroup is not None:
                self.cgroup.kill()

    def _signal_group(self, signum: int) -> None:
        if self._reaped:
            return
        if self._server.alive():
            self._server.signal_group(self.pid, signum)
            if signum == signal.SIGKILL:  # whatever the server's state, the run dies
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signum)
        elif not select.select([self._pidfd], [], [], 0)[0]:
            # Not ended, so not reaped (its server is gone, it is ours or soon will be):
            # its group id is still its own.
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signum)

    def _close_exit_fds(self) -> None:
        close_quietly([self._status_r, self._pidfd])

    def _release(self) -> None:
        if not self._reaped and not self._server.alive():
            # Supervision failed before the end: do not leave a zombie of ours.
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(self.pid, 0)
        procs.disown_child(self.pid)
        self._on_done(self)


@dataclass(frozen=True, slots=True)
class _Failure:
    digests: tuple[str, ...]
    error: str


class ForkServerLauncher:
    """Forks runs from a fork server that imported the app (``module:attribute``) once.

    ``python``: the interpreter for the fork server (default: this one); ``cwd``: its
    working directory (default: ours; ``load_app`` puts it on ``sys.path``);
    ``sys_path``: directories to put first on its ``sys.path``; ``start_timeout``:
    seconds the app may take to import in a new server.
    """

    def __init__(
        self,
        app_spec: str,
        *,
        python: str | None = None,
        cwd: str | None = None,
        sys_path: Sequence[str] = (),
        start_timeout: float = START_TIMEOUT,
        containment: Containment | None = None,
    ) -> None:
        self.app_spec = app_spec
        self.start_timeout = start_timeout
        self._python = python or sys.executable
        self._cwd = cwd
        self._paths = tuple(sys_path)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._spawner: Spawner | None = None
        self._server: _Server | None = None
        self._draining: list[_Server] = []
        self._runs: set[_ForkedRun] = set()
        self._failed: _Failure | None = None
        self._containment = containment
        self._swept = False
        self.restarts = 0

    @property
    def containment(self) -> str:
        """What contains the runs: ``cgroup v2``, ``cgroup v1`` or process groups."""
        if self._containment is None:
            self._containment = Containment.detect()
        return self._containment.kind

    @property
    def server_pid(self) -> int | None:
        """The pid of the current fork server (for tests and diagnostics)."""
        server = self._server
        return None if server is None else server.pid

    def start(self) -> None:
        """Start the fork server; raises ``AppLoadError`` if the app does not import (or
        not within ``start_timeout``), ``BackendError`` if ``close`` interrupted it."""
        _become_subreaper()
        with self._lock:
            self._closing.clear()
            if self._containment is None:
                self._containment = Containment.detect()
            if not self._swept:
                self._swept = True
                self._containment.sweep_leftovers()
            if self._spawner is None:
                self._spawner = Spawner("fork-server-starter")
            if self._server is None:
                self._server = self._start_server(None)
                self._top_up(self._server)

    def _start_server(self, cancel: threading.Event | None) -> _Server:
        assert self._spawner is not None
        try:
            return _Server.start(
                self._spawner,
                app_spec=self.app_spec,
                python=self._python,
                cwd=self._cwd,
                paths=self._paths,
                timeout=self.start_timeout,
                cancelled=lambda: (
                    self._closing.is_set() or (cancel is not None and cancel.is_set())
                ),
            )
        except _Cancelled:
            raise BackendError(
                "the fork server's start was given up: "
                "the launcher is closing or the run was cancelled"
            ) from None

    def close(self, *, timeout: float = SERVER_EXIT_SECONDS) -> None:
        """Stop every fork server (their runs in progress are killed, and so are runs
        whose server died), within ``timeout`` seconds in all; a start in progress in
        another thread gives up promptly."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            servers = [*self._draining, *([self._server] if self._server else [])]
            self._server = None
            self._draining = []
            spawner, self._spawner = self._spawner, None
            orphans = [run for run in self._runs if run.orphaned]
            for server in servers:
                self._drop_spares(server)
        for server in servers:
            server.request_exit()
        for run in orphans:
            run.kill()
        for server in servers:
            server.wait_closed(deadline)
        if spawner is not None:
            spawner.close()
        if self._containment is not None:
            self._containment.close()

    def check_reload(self) -> bool:
        """Restart the fork server if the app's code changed; True if it was restarted.

        Raises ``AppLoadError`` if the changed app no longer imports (the old server
        is kept meanwhile, so runs in progress are not disturbed).
        """
        with self._lock:
            return self._reload_if_stale(None)

    def _reload_if_stale(self, cancel: threading.Event | None) -> bool:
        server = self._server
        if server is None or self._closing.is_set():
            raise BackendError("the launcher is not started")
        alive = server.alive()
        if alive and not server.stale():
            return False
        if alive and self._failed is not None and self._failed.digests == server.digests():
            raise AppLoadError(self._failed.error)
        try:
            fresh = self._start_server(cancel)
        except AppLoadError as error:
            if alive:
                self._failed = _Failure(server.digests(), str(error))
            raise
        self._failed = None
        self._server = fresh
        self.restarts += 1
        self._retire(server)
        self._top_up(fresh)
        return True

    def _retire(self, server: _Server) -> None:
        """Close ``server`` once its runs are done (lock held)."""
        server.draining = True
        self._drop_spares(server)
        if server.live == 0 or not server.alive():
            server.close(timeout=5.0)
        else:
            self._draining.append(server)

    def _run_done(self, run: _ForkedRun) -> None:
        server = run.server
        with self._lock:
            self._runs.discard(run)
            server.live -= 1
            if server.draining and server.live <= 0 and server in self._draining:
                self._draining.remove(server)
                server.close(timeout=5.0)

    def spawn(self, job: Job, *, cancel: threading.Event | None = None) -> RunProcess:
        """Start ``job``; raises ``BackendError`` if it cannot be (also when ``cancel``
        is set while a fork server is being started for it)."""
        pipes = RunPipes.create()
        try:
            status_r, status_w = os.pipe()
        except OSError as error:
            close_quietly([*pipes.our_ends(), *pipes.run_ends()])
            raise BackendError(f"cannot create the run's pipes: {error}") from error
        run_ends = [*pipes.run_ends(), status_w]
        containment = self._containment
        cgroup: RunCgroup | None = None
        try:
            with self._lock:
                server, cgroup, pid, started, pidfd = self._spawn_locked(job, run_ends, cancel)
                server.live += 1
                run = _ForkedRun(
                    job=job if cgroup is None else replace(job, cgroup=str(cgroup.path)),
                    pid=pid,
                    create_time=started,
                    pipes=pipes,
                    cgroup=cgroup,
                    release_cgroup=containment.release if containment is not None else None,
                    status_r=status_r,
                    pidfd=pidfd,
                    server=server,
                    on_done=self._run_done,
                )
                self._runs.add(run)
                self._top_up(server)
        except BaseException:
            close_quietly([*pipes.our_ends(), status_r])
            raise
        finally:
            close_quietly(run_ends)
        return run

    def _take_cgroup(self, server: _Server, job: Job) -> RunCgroup | None:
        """A cgroup for the run: one a spare waits in, else a new one (lock held); None
        if the job names its own (the caller's to manage) or there are no cgroups."""
        if job.cgroup is not None:
            return None
        if server.spares:
            return server.spares.pop(0)
        containment = self._containment
        return None if containment is None else containment.create(job.run_id)

    def _top_up(self, server: _Server) -> None:
        """Have ``server`` keep ``SPARES`` spare processes in fresh cgroups (lock held)."""
        containment = self._containment
        if containment is None or containment.root is None or len(server.spares) > SPARES // 2:
            return
        if not server.alive():
            return
        # In a batch: moves into cgroups made together share the kernel's grace period.
        while len(server.spares) < SPARES:
            cgroup = containment.create(f"spare-{os.urandom(6).hex()}")
            if cgroup is None:
                return
            try:
                server.prepare(cgroup)
            except OSError:
                containment.release(cgroup)
                return

    def _drop_spares(self, server: _Server) -> None:
        """The server is going: the cgroups its spares waited in go too."""
        containment = self._containment
        spares, server.spares = server.spares, []
        if containment is not None:
            for cgroup in spares:
                containment.release(cgroup)

    def _spawn_locked(
        self, job: Job, fds: Sequence[int], cancel: threading.Event | None
    ) -> tuple[_Server, RunCgroup | None, int, float, int]:
        cgroup: RunCgroup | None = None
        try:
            self._reload_if_stale(cancel)
            server = self._server
            assert server is not None
            cgroup = self._take_cgroup(server, job)
            named = job if cgroup is None else replace(job, cgroup=str(cgroup.path))
            try:
                return (server, cgroup, *self._request(server, named, fds))
            except (OSError, ProtocolError):
                # The server died or garbled its answer: start a new one, try once more
                # (in the same cgroup; the new server has no spare in it).
                self._retire(server)
                self._server = None
                self._server = server = self._start_server(cancel)
                self.restarts += 1
                return (server, cgroup, *self._request(server, named, fds))
        except BaseException as error:
            if cgroup is not None and self._containment is not None:
                self._containment.release(cgroup)
            if isinstance(error, AppLoadError):
                raise BackendError(f"the app failed to load: {error}") from error
            if isinstance(error, OSError | ProtocolError):
                raise BackendError(f"cannot start the run: {error}") from error
            raise

    def _request(self, server: _Server, job: Job, fds: Sequence[int]) -> tuple[int, float, int]:
        # Registered before the server could die and hand the run to us, so that
        # ``reap_orphans`` never takes its status.
        with procs.owning_children() as own:
            try:
                pid, started, pidfd = server.request_spawn(job, fds)
            except BaseException:
                # A run forked before the server failed must not go on unwatched.
                procs.sweep(job.run_id, roots=[os.getpid()], wait=1.0)
                raise
            own(pid)
        return pid, started, pidfd


def _become_subreaper() -> None:
    try:
        procs.become_subreaper()
    except OSError as error:
        raise BackendError(f"cannot become the subreaper of the runs: {error}") from error


def _remove(cgroup: RunCgroup | None) -> None:
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup.remove()
