"""The fork-server launcher: runs forked in a few milliseconds from a server that imported
the app once (see ``forkserver``), watched from the manager without depending on it.

For each run the manager creates the pipes (records, stdout, stderr, cancel). Most runs
start on a spare: a process the server forked ahead (``PrepareRequest``), whose pidfd,
status pipe and socket the manager already holds; the start claims it at the server and
sends the job and the run's ends of the pipes to the spare itself (no answer to wait for,
no fork on the way). Where no spare is ready (or the job names its own cgroup) the
manager also creates a status pipe and sends a ``SpawnRequest``; the answer carries a
pidfd of the run's main process. On the pidfd the manager sees the run end. Normally the
server has reaped it by then and writes its wait status on the status pipe. If the
server is gone (a runner killed it, say), the status pipe reaches end-of-file without
one: the run has been reparented to this process (a subreaper, made so by ``start``) and
is reaped here. A server that does not report within ``STATUS_SECONDS`` (stopped) is
continued, then killed. A dead server is replaced at the next spawn, and a start that
finds no spare ready goes to a server that can answer (not one that is stopped, dead or
going) while there is one; a server whose app files changed (content hashes) is
replaced, and drained: it serves its runs in progress to their end (its spares are
dropped: they exit).

Each server keeps ``SPARES`` spares more than it has runs in progress, each in a fresh
cgroup where runs get cgroups: one more is asked for as each run ends (between runs, not
while one starts), and a batch when starts have used half the margin. Where runs get
cgroup v2 cgroups and the kernel allows ``clone3(CLONE_INTO_CGROUP)`` (the server probes
it once at its start, in a cgroup made for that), spares (and runs that find none) are
forked straight into their cgroups and no process is ever moved. Elsewhere a spare joins
its cgroup after fork: a move waits for an RCU grace period (tens of milliseconds on a
busy machine), made before its run is asked for; moves made together (a batch) share a
grace period. A run that finds no spare is forked and joins its cgroup itself.

Starting a server is bounded (``start_timeout``) and cancellable: ``close`` from another
thread, or a spawn's own ``cancel`` event, makes a start in progress give up promptly.

May import ``forkclient``, ``forkmessages``, ``supervision``, ``containment``, ``spawner``,
``job``, ``procs``, ``cpus``, ``errors`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from supervisor.core.errors import AppLoadError, BackendError
from supervisor.runs import cpus, procs
from supervisor.runs.containment import Containment
from supervisor.runs.filewatch import DirectoryWatch
from supervisor.runs.forkclient import (
    SERVER_EXIT_SECONDS,
    STATUS_SECONDS,
    ServerHandle,
    Spare,
    StartCancelled,
)
from supervisor.runs.forkmessages import ProtocolError
from supervisor.runs.job import Job
from supervisor.runs.spawner import Spawner
from supervisor.runs.supervision import RunPipes, RunProcess, close_quietly

if TYPE_CHECKING:
    from supervisor.runs.cgroups import RunCgroup

START_TIMEOUT: Final = 60.0
SPARES: Final = 8
MAX_SPARES: Final = 64
# Fork servers by default, at most (see ``default_server_count``).
MAX_SERVERS: Final = 4
FORKED_INTO: Final = "runs forked into their cgroup (clone3)"
JOINED: Final = "runs join their cgroup after fork"


def default_server_count() -> int:
    """Fork servers when none is asked for: one per core this process may use (its
    affinity and its cgroup's CPU quota: ``cpus``), at most ``MAX_SERVERS``.

    A server forks one run at a time. On 2 cores two servers started about as many runs
    as one or more (``bench_throughput.py`` compares the default with one server: in
    some sittings 5-10 % more with 8 schedulers, in others the same), for about the same
    CPU per run. Past the cores they only take memory (each imports the app and keeps
    its spares)."""
    return max(1, min(MAX_SERVERS, cpus.usable_cores()))


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
        server: ServerHandle,
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
        self.server = server  # the fork server that forked it
        self._status_r = status_r
        self._pidfd = pidfd
        self._reaped = False
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
                    self.server.kill()
                    return None
                self.server.resume()
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
            self.server.wait_exit(SERVER_EXIT_SECONDS)
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
        return not self.server.alive()

    def kill(self) -> None:
        """SIGKILL the run's group (and cgroup): the launcher is closing."""
        with contextlib.suppress(Exception):
            self._signal_group(signal.SIGKILL)
            if self.cgroup is not None:
                self.cgroup.kill()

    def _signal_group(self, signum: int) -> None:
        if self._reaped:
            return
        if self.server.alive():
            self.server.signal_group(self.pid, signum)
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
        if not self._reaped and not self.server.alive():
            # Supervision failed before the end: do not leave a zombie of ours.
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(self.pid, 0)
        procs.disown_child(self.pid)
        self._on_done(self)


@dataclass(frozen=True, slots=True)
class _Started:
    """A run's main process as a start left it (its pidfd and status pipe: the run's;
    ``job`` as the run was given it, naming its cgroup)."""

    job: Job
    server: ServerHandle
    cgroup: RunCgroup | None
    pid: int
    create_time: float
    pidfd: int
    status_r: int


@dataclass(frozen=True, slots=True)
class _Failure:
    digests: tuple[str, ...]
    error: str


class ForkServerLauncher:
    """Forks runs from a fork server that imported the app (``module:attribute``) once.

    ``python``: the interpreter for the fork server (default: this one); ``cwd``: its
    working directory (default: ours; ``load_app`` puts it on ``sys.path``);
    ``sys_path``: directories to put first on its ``sys.path``; ``start_timeout``:
    seconds the app may take to import in a new server; ``into_cgroup``: False to never
    fork runs into their cgroups with ``clone3`` (they join them after ``fork``);
    ``servers``: how many fork servers share the runs (default:
    ``default_server_count()``); each keeps its share of the spares.
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
        into_cgroup: bool = True,
        servers: int | None = None,
    ) -> None:
        if servers is None:
            servers = default_server_count()
        if servers < 1:
            raise ValueError(f"servers must be at least 1, got {servers}")
        self.app_spec = app_spec
        self._count = servers
        # Each server's share of the spare margin and of its cap.
        self._spares = max(1, math.ceil(SPARES / servers))
        self._max_spares = max(self._spares, math.ceil(MAX_SPARES / servers))
        self._into_cgroup = into_cgroup
        self.start_timeout = start_timeout
        self._python = python or sys.executable
        self._cwd = cwd
        self._paths = tuple(sys_path)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._spawner: Spawner | None = None
        self._servers: list[ServerHandle] = []  # the current ones, all of one app load
        # Watches the directories of the app's files: no change, no need to stat them.
        self._watch: DirectoryWatch | None = None
        self._stale_seen = False
        self._draining: list[ServerHandle] = []
        self._runs: set[_ForkedRun] = set()
        self._failed: _Failure | None = None
        self._containment = containment
        self._swept = False
        self._spare_prefix = f"spare-{os.urandom(6).hex()}-"
        self._spare_names = itertools.count(1)
        self.restarts = 0

    @property
    def containment(self) -> str:
        """What contains the runs: ``cgroup v2``, ``cgroup v1`` or process groups; with a
        cgroup, how runs get into it (forked into it with ``clone3``, or joined after
        ``fork``, and why), as the current fork server chose at its start."""
        if self._containment is None:
            self._containment = Containment.detect()
        kind = self._containment.kind
        root = self._containment.root
        if root is None:
            return kind
        server = self._servers[0] if self._servers else None
        if root.version != 2:
            return f"{kind}; {JOINED} (clone3 needs cgroup v2)"
        if server is None:
            return kind
        if server.placement == "":
            return f"{kind}; {FORKED_INTO}"
        return f"{kind}; {JOINED} ({server.placement})"

    @property
    def server_pid(self) -> int | None:
        """The pid of the first current fork server (for tests and diagnostics)."""
        servers = self._servers
        return servers[0].pid if servers else None

    @property
    def server_pids(self) -> tuple[int, ...]:
        """The pids of the current fork servers (for tests and diagnostics)."""
        return tuple(server.pid for server in self._servers)

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
            if not self._servers:
                self._install(self._start_servers(self._count, None))

    def _install(self, servers: list[ServerHandle]) -> None:
        """Make ``servers`` (a fresh load of the app) the current ones (lock held)."""
        self._servers = servers
        if self._watch is not None:
            self._watch.close()
        self._watch = DirectoryWatch(set().union(*(s.module_dirs() for s in servers)))
        self._stale_seen = False
        for server in servers:
            self._top_up(server)

    def _start_server(self, cancel: threading.Event | None) -> ServerHandle:
        return self._start_servers(1, cancel)[0]

    def _start_servers(self, count: int, cancel: threading.Event | None) -> list[ServerHandle]:
        """Start ``count`` servers, importing the app at the same time; all or none."""
        assert self._spawner is not None
        containment = self._containment
        probes: list[RunCgroup | None] = []
        root = None if containment is None else containment.root
        launched: list[ServerHandle] = []
        try:
            for _ in range(count):
                probe: RunCgroup | None = None
                # (CLONE_INTO_CGROUP is for cgroup v2 only.)
                if (
                    containment is not None
                    and root is not None
                    and self._into_cgroup
                    and root.version == 2
                ):
                    probe = containment.create(f"probe-{os.urandom(6).hex()}")
                probes.append(probe)
                launched.append(
                    ServerHandle.launch(
                        self._spawner,
                        app_spec=self.app_spec,
                        python=self._python,
                        cwd=self._cwd,
                        paths=self._paths,
                        probe_cgroup=None if probe is None else str(probe.path),
                    )
                )
            ready: list[ServerHandle] = []
            for server in launched:
                server.await_ready(
                    self.app_spec,
                    timeout=self.start_timeout,
                    cancelled=lambda: (
                        self._closing.is_set() or (cancel is not None and cancel.is_set())
                    ),
                )
                server.release_cgroup = None if containment is None else containment.release
                ready.append(server)
            return ready
        except BaseException as error:
            for server in launched:
                if not server.closed:
                    server.kill()
            if isinstance(error, StartCancelled):
                raise BackendError(
                    "the fork server's start was given up: "
                    "the launcher is closing or the run was cancelled"
                ) from None
            raise
        finally:
            for probe in probes:
                if probe is not None and containment is not None:
                    containment.release(probe)

    def close(self, *, timeout: float = SERVER_EXIT_SECONDS) -> None:
        """Stop every fork server (their runs in progress are killed, and so are runs
        whose server died), within ``timeout`` seconds in all; a start in progress in
        another thread gives up promptly. A server that does not exit in time (stopped,
        say) is killed, and its runs are killed here."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            servers = [*self._draining, *self._servers]
            self._servers = []
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            self._draining = []
            spawner, self._spawner = self._spawner, None
            runs = list(self._runs)
            for server in servers:
                self._drop_spares(server)
        orphans = [run for run in runs if run.orphaned]
        for server in servers:
            server.request_exit()
        for run in orphans:
            run.kill()
        # Every server was asked at once: they exit side by side, so one stopped server
        # uses up the deadline only for itself.
        killed = [server for server in servers if server.wait_closed(deadline)]
        for run in runs:
            if run.server in killed:
                run.kill()
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
        """Replace the servers if the app's files changed (all of them: a fresh load), or
        the ones that died (lock held); True if any was replaced."""
        servers = self._servers
        if not servers or self._closing.is_set():
            raise BackendError("the launcher is not started")
        live = [server for server in servers if server.alive()]
        stale = bool(live) and self._stale(live)
        if not stale and len(live) == len(servers):
            return False
        first = live[0] if live else None
        failed = self._failed
        if stale and first is not None and failed is not None and failed.digests == first.digests():
            raise AppLoadError(failed.error)
        replaced = servers if stale or not live else [s for s in servers if s not in live]
        try:
            fresh = self._start_servers(len(replaced), cancel)
        except AppLoadError as error:
            if first is not None:
                self._failed = _Failure(first.digests(), str(error))
            raise
        self._failed = None
        self.restarts += 1
        for server in replaced:
            self._retire(server)
        if len(replaced) == len(servers):
            self._install(fresh)
        else:
            for old, new in zip(replaced, fresh, strict=True):
                self._servers[self._servers.index(old)] = new
                self._top_up(new)
        return True

    def _stale(self, live: list[ServerHandle]) -> bool:
        """Has a file of the app changed since the servers imported it? The files are
        looked at only if something happened in their directories."""
        if self._watch is not None and not self._stale_seen and not self._watch.maybe_changed():
            return False
        # Once seen stale, looked at every time until fresh servers are in (a failed
        # reload is retried at each spawn, as the changed files are still there).
        self._stale_seen = any(server.stale() for server in live)
        return self._stale_seen

    def _retire(self, server: ServerHandle) -> None:
        """Close ``server`` once its runs are done (lock held); once."""
        if server.draining:
            return
        server.draining = True
        self._drop_spares(server)
        if server.live == 0 or not server.alive():
            server.close(timeout=5.0)
        else:
            self._draining.append(server)

    def _run_done(self, run: _ForkedRun) -> None:
        with self._lock:
            self._runs.discard(run)
            # Forked now, between runs, rather than while a run starts or ends.
            self._top_up(run.server, ended=True)
        self._run_done_on(run.server)

    def _run_done_on(self, server: ServerHandle) -> None:
        """One run (or reservation) fewer on ``server``; a drained one is closed."""
        with self._lock:
            server.live -= 1
            done = server.draining and server.live <= 0 and server in self._draining
            if done:
                self._draining.remove(server)
        if done:
            server.close(timeout=5.0)

    def spawn(self, job: Job, *, cancel: threading.Event | None = None) -> RunProcess:
        """Start ``job``; raises ``BackendError`` if it cannot be (also when ``cancel``
        is set while a fork server is being started for it). Several threads may spawn
        at once: the launcher's lock is held only to pick the server and to note the
        run. On a spare, a start is two messages and no wait; else a round trip to the
        server (which serializes those)."""
        pipes = RunPipes.create()
        try:
            server, spare = self._reserve(job, cancel)
            if spare is not None:
                started = self._start_on_spare(server, spare, job, pipes)
            else:
                started = self._spawn_on_server(server, job, pipes, cancel)
            run = _ForkedRun(
                job=started.job,
                pid=started.pid,
                create_time=started.create_time,
                pipes=pipes,
                cgroup=started.cgroup,
                release_cgroup=self._release_cgroup(),
                status_r=started.status_r,
                pidfd=started.pidfd,
                server=started.server,
                on_done=self._run_done,
            )
            with self._lock:
                self._runs.add(run)
                self._top_up(started.server)
        except BaseException:
            close_quietly(pipes.our_ends())
            raise
        finally:
            close_quietly(pipes.run_ends())
        return run

    def _release_cgroup(self) -> Callable[[RunCgroup], None] | None:
        containment = self._containment
        return None if containment is None else containment.release

    def _reserve(
        self, job: Job, cancel: threading.Event | None
    ) -> tuple[ServerHandle, Spare | None]:
        """The current server (reloaded if its app changed), reserved for one run (counted
        in its ``live``), and a spare of it for ``job`` if there is one."""
        try:
            with self._lock:
                self._reload_if_stale(cancel)
                server = self._pick()
                server.live += 1  # reserved: a retired server is not closed under it
        except AppLoadError as error:
            raise BackendError(f"the app failed to load: {error}") from error
        if job.cgroup is not None:
            return server, None  # a cgroup of the caller's: no spare waits in it
        return server, server.take_spare()

    def _pick(self) -> ServerHandle:
        """The current server with the fewest runs in progress among those with a spare
        ready, else among those that can answer (lock held): a server slow to fork its
        spares (starved of CPU) is not waited for while another has one, and one that is
        stopped, dead or going is not handed a start while another can take it (it would
        wait for that server's answer until the timeout). Among equals the first: runs one
        after another stay on one server (its memory warm in the caches), runs at the
        same time spread over all."""
        servers = self._servers
        if len(servers) == 1:
            return servers[0]
        ready = [server for server in servers if server.ready_count()]
        if ready:
            return min(ready, key=lambda server: server.live)
        # (Only where no spare is ready: what it costs is a read of /proc per server.)
        answering = [
            server
            for server in servers
            if not server.draining and server.alive() and not server.stopped()
        ]
        return min(answering or servers, key=lambda server: server.live)

    def _start_on_spare(
        self, server: ServerHandle, spare: Spare, job: Job, pipes: RunPipes
    ) -> _Started:
        """Hand ``job`` to ``spare``; if it is gone, to another spare or a fresh fork."""
        while True:
            named = job if spare.cgroup is None else replace(job, cgroup=str(spare.cgroup.path))
            try:
                # Registered before the server could die and hand the run to us, so that
                # ``reap_orphans`` never takes its status.
                with procs.owning_children() as own:
                    own(spare.pid)
                    server.start_on(spare, named, pipes.run_ends())
            except OSError:
                procs.disown_child(spare.pid)
                if spare.cgroup is not None and self._containment is not None:
                    self._containment.release(spare.cgroup)
                next_spare = server.take_spare()
                if next_spare is None:
                    return self._spawn_on_server(server, job, pipes, None)
                spare = next_spare
                continue
            return _Started(
                named,
                server,
                spare.cgroup,
                spare.pid,
                spare.create_time,
                spare.pidfd,
                spare.status_r,
            )

    def _top_up(self, server: ServerHandle, *, ended: bool = False) -> None:
        """Have ``server`` keep ``SPARES`` spare processes more than it has runs in
        progress (at most ``MAX_SPARES``), each in a fresh cgroup where runs get cgroups
        (lock held). Starts take them; each run's end (``ended``) makes one, between runs
        rather than while one starts; a start tops up in a batch once half the margin is
        used (where spares join their cgroups, moves made together share the kernel's
        grace period)."""
        containment = self._containment
        if containment is None or server.draining:
            return
        full = min(self._max_spares, self._spares + server.live)
        low = full - 1 if ended else server.live + self._spares // 2
        count = server.spare_count
        # (A dead server's ``prepare`` fails: no need to ask the kernel first.)
        if count > low or server.closed:
            return
        root = containment.root
        while count < full:
            cgroup = None
            if root is not None:
                # A random prefix per launcher (launchers of one process share a cgroup
                # directory) and a count: not a random name's syscall per spare.
                cgroup = containment.create(f"{self._spare_prefix}{next(self._spare_names)}")
                if cgroup is None:
                    return
            try:
                server.prepare(cgroup)
            except OSError:
                if cgroup is not None:
                    containment.release(cgroup)
                return
            count += 1

    def _drop_spares(self, server: ServerHandle) -> None:
        """The server is going: its spares go, and the cgroups they waited in."""
        containment = self._containment
        for cgroup in server.drop_spares():
            if containment is not None:
                containment.release(cgroup)

    def _spawn_on_server(
        self,
        reserved: ServerHandle,
        job: Job,
        pipes: RunPipes,
        cancel: threading.Event | None,
    ) -> _Started:
        """Have ``reserved`` (a server reserved for this run) fork ``job``; if that server
        failed, a new one. On failure the reservation is given back."""
        server: ServerHandle | None = reserved
        cgroup: RunCgroup | None = None
        status_r = status_w = -1
        try:
            status_r, status_w = os.pipe()
            fds = [*pipes.run_ends(), status_w]
            cgroup = self._new_cgroup(job)
            named = job if cgroup is None else replace(job, cgroup=str(cgroup.path))
            try:
                pid, started, pidfd = self._request(reserved, named, fds)
            except (OSError, ProtocolError):
                # The server died, is stuck (stopped) or garbled its answer: kill it (its
                # runs go on; a run it forked without answering ends at its gate), start
                # a new one (unless another spawn did already), try once more.
                failed, server = reserved, None
                try:
                    with self._lock:
                        if failed in self._servers:
                            failed.kill()
                            self._retire(failed)
                            index = self._servers.index(failed)
                            fresh = self._start_server(cancel)
                            self._servers[index] = fresh
                            self.restarts += 1
                            self._top_up(fresh)
                            server = fresh
                        elif not self._servers:
                            raise BackendError("the launcher is not started") from None
                        else:
                            server = self._pick()
                        server.live += 1
                finally:
                    self._run_done_on(failed)  # the reservation on the failed server
                pid, started, pidfd = self._request(server, named, fds)
            assert server is not None
            return _Started(named, server, cgroup, pid, started, pidfd, status_r)
        except BaseException as error:
            if server is not None:
                self._run_done_on(server)
            close_quietly([status_r])
            if cgroup is not None and self._containment is not None:
                self._containment.release(cgroup)
            if isinstance(error, AppLoadError):
                raise BackendError(f"the app failed to load: {error}") from error
            if isinstance(error, OSError | ProtocolError):
                raise BackendError(f"cannot start the run: {error}") from error
            raise
        finally:
            close_quietly([status_w])

    def _new_cgroup(self, job: Job) -> RunCgroup | None:
        """A new cgroup for the run; None if the job names its own (the caller's to
        manage) or there are no cgroups."""
        containment = self._containment
        if job.cgroup is not None or containment is None:
            return None
        return containment.create(job.run_id)

    def _request(
        self, server: ServerHandle, job: Job, fds: Sequence[int]
    ) -> tuple[int, float, int]:
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
