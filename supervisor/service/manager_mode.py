"""``supervisor run``: assemble the store, launcher, manager, control socket and Admin Center.

This is the composition root of manager mode; it owns the process-wide setup (subreaper,
signals, the state-directory lock). May import everything except ``cli``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from supervisor.cluster.timing import LeaseTiming
from supervisor.core.app import Configurator, load_app
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import DefinitionError, StoreError
from supervisor.core.storeproblems import LockFailure
from supervisor.manager.shell import Manager, ManagerConfig
from supervisor.notify.config import enable as notifications
from supervisor.notify.dispatch import Dispatcher as NotifyDispatcher
from supervisor.notify.targets import Target
from supervisor.notify.watcher import Watcher
from supervisor.runs import launcher as launching
from supervisor.runs import procs
from supervisor.runs.forkclient import SERVER_EXIT_SECONDS
from supervisor.service.control import SOCKET_NAME, ControlServer, Dispatcher
from supervisor.service.lock import StateDirLock
from supervisor.service.paths import (
    APP_CWD_META,
    APP_SPEC_META,
    DATABASE_NAME,
    LOCK_NAME,
    ensure_state_dir,
)
from supervisor.service.stores import open_postgres_store
from supervisor.service.storewatch import StoreProbe, WatchedStore, as_store
from supervisor.store.dsn import without_password
from supervisor.store.protocols import Store
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.health import StoreHealth, StoreProblem, StoreTrouble
from supervisor.usecases.pendingaudit import describe
from supervisor.usecases.reads import UseCaseReads, reader
from supervisor.usecases.schedulers import UseCases, enable

if TYPE_CHECKING:
    from supervisor.cluster.member import Member

REAP_INTERVAL_SECONDS = 1.0
# ``close`` ends within the grace plus this (what an operator, or systemd's
# TimeoutStopSec, waits for): every step of the shutdown takes its time from one deadline.
SHUTDOWN_MARGIN_SECONDS = 1.5
# Of that margin, what the steps after the runs' ends (the Admin Center, the fork
# servers, the store) keep for themselves.
AFTER_RUNS_SECONDS = 0.2
# Once the grace is over, how long the fork servers may take to exit (they kill their runs)
# before they are killed: a stopped one never would.
SERVERS_EXIT_SECONDS = 0.5
# A step of the shutdown is waited for at least this long, also past its deadline.
BOUNDED_STEP_MIN_SECONDS = 0.02
# ``fork_servers`` at most: each imports the app and keeps its spares (a typo of 100
# would start a hundred interpreters).
MAX_FORK_SERVERS = 64
APP_NAME_META = "app_name"  # beside paths.APP_SPEC_META: the name of the app last run


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    app_spec: str
    state_dir: Path
    admin: tuple[str, int] | None = ("127.0.0.1", 8080)
    fork_server: bool = True
    # How many fork servers start the runs (``--fork-servers``); None:
    # ``forklauncher.default_server_count()``.
    fork_servers: int | None = None
    grace_seconds: float = 5.0
    catch_up_missed_cron: bool = True
    max_runs_per_scheduler: int = 100
    max_log_bytes_per_run: int = 1 << 20
    # Where runs, logs, settings and users are kept: a ``postgresql://`` URL, or None for
    # SQLite (``state.db`` in ``state_dir``). The state directory holds the lock and the
    # control socket either way.
    store: str | None = field(default=None, repr=False)
    replace_app: bool = False  # take over a state directory another app used
    proxy_user_header: str | None = None  # the Admin Center trusts it from a loopback proxy
    allow_remote: bool = False  # the Admin Center may listen on a non-loopback address
    secure_cookies: bool = False  # force the session cookie's Secure flag
    forwarded_from: frozenset[str] = frozenset()  # proxies whose X-Forwarded-* count
    metrics_token: str | None = field(default=None, repr=False)  # a scraper's bearer token
    # Told of every scheduler's failures (with the app's own ``notify.enable`` targets).
    notify_targets: tuple[Target, ...] = ()
    # Several hosts run the app, coordinated by this PostgreSQL database (``--cluster``).
    cluster: str | None = field(default=None, repr=False)
    host_name: str | None = None  # this host's name there (default: hostname:state-dir-hash)
    lease_timing: LeaseTiming = field(default_factory=LeaseTiming)  # (``--lease-ttl``)

    def __post_init__(self) -> None:
        count = self.fork_servers
        if count is None:
            return
        if isinstance(count, bool) or not isinstance(count, int):
            raise DefinitionError("fork_servers", f"expected a whole number, got {count!r}")
        if not 1 <= count <= MAX_FORK_SERVERS:
            raise DefinitionError("fork_servers", f"must be 1 to {MAX_FORK_SERVERS}, got {count}")
        if not self.fork_server:
            raise DefinitionError(
                "fork_servers", "has no fork server to count: runs start in fresh interpreters"
            )


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[StateDirLock]:
    """Hold the state directory's lock: one manager per state directory (``lock``)."""
    lock = StateDirLock(state_dir)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


class StoreGuard(Protocol):
    """What keeps a manager the only one on a shared store (``postgres.exclusive``)."""

    def check(self) -> str | None:
        """Take the lock back if it was lost; a warning when that fails for now.
        ``StoreError`` once another manager holds it: this one must stop (its writes
        are refused from then on)."""
        ...

    @property
    def unreachable_since(self) -> datetime | None:
        """Since when (aware) the store has not answered, in the outage going on; None
        while it answers."""
        ...

    @property
    def last_failure(self) -> LockFailure | None:
        """Why the lock could not be taken at its last try (kind, when, the driver's
        words), while it is not held; None once it is."""
        ...

    def close(self) -> None: ...


def open_store(options: RunOptions, state_dir: Path) -> tuple[Store, str, StoreGuard | None]:
    """The store ``options`` name, how messages name it, and for PostgreSQL the manager
    lock, taken (one manager per store, as the state directory's lock is one per
    directory; with ``--cluster`` none: the cluster's hosts share the store).
    ``DefinitionError("--store")`` for a location that is no PostgreSQL URL or
    when psycopg is missing; ``StoreError`` for a store that cannot be used or that another
    manager uses (its message names the problem)."""
    limits = {
        "max_runs_per_scheduler": options.max_runs_per_scheduler,
        "max_log_bytes_per_run": options.max_log_bytes_per_run,
    }
    if options.store is None:
        store = SqliteStore.open(state_dir / DATABASE_NAME, **limits)
        return store, f"state directory {state_dir}", None
    shared = open_postgres_store(options.store, **limits)
    if options.cluster is not None:
        # The hosts of a cluster share the store: their leases keep one run per slot.
        return shared, shared.description, None
    guard = shared.exclusive()
    try:
        guard.acquire()
    except BaseException:
        shared.close()
        raise
    return shared, shared.description, guard


def check_app(
    store: Store,
    app: Configurator,
    app_spec: str,
    *,
    replace: bool,
    place: str,
) -> None:
    """Refuse to run ``app`` on a state directory another app has used, unless ``replace``.

    An app is known by its name (``Configurator(name)``), and by its spec where an older
    manager stored no name. Raises ``StoreError`` naming both apps and ``place`` (the state
    directory or database).
    """
    stored_name, stored_spec = store.get_meta(APP_NAME_META), store.get_meta(APP_SPEC_META)
    if replace or (stored_name is None and stored_spec is None):
        return
    same = stored_name == app.name if stored_name is not None else stored_spec == app_spec
    if not same:
        before = f"{stored_name!r} ({stored_spec})" if stored_name else f"{stored_spec}"
        raise StoreError(
            f"{place} belongs to app {before}, not to "
            f"{app.name!r} ({app_spec}); use --replace-app to take it over, or another "
            + ("--state-dir" if place.startswith("state directory") else "--store")
        )


def recover_interrupted_runs(store: Store, clock: Clock, *, host: str | None = None) -> int:
    """Runs left in flight by a manager that died: kill what is left, mark them interrupted.
    ``host``: the store is shared by a cluster; only the runs this host ran are its own."""
    count = 0
    for unfinished in store.unfinished_runs():
        if host is not None and unfinished.run.host != host:
            continue
        if unfinished.pid is not None and unfinished.create_time is not None:
            launching.kill_leftovers(
                unfinished.pid,
                unfinished.pgid or unfinished.pid,
                unfinished.create_time,
                run_id=unfinished.run.run_id,
            )
        else:
            # Its process was never recorded (the manager died, or the store failed,
            # between the run row and the pid): find it by its marker anywhere.
            procs.sweep(unfinished.run.run_id, roots=None)
        store.mark_interrupted(
            unfinished.run.run_id,
            ended_at=clock.now(),
            error="the manager stopped while this run was in progress",
        )
        count += 1
    return count


class Service:
    """A running manager with its control socket (and Admin Center, when asked).

    ``start()`` raises ``StoreError`` when another manager holds the state directory or
    another app used it, ``AppLoadError`` for an app that cannot be imported and
    ``DefinitionError("--admin")`` when the Admin Center cannot bind; ``close()`` undoes
    whatever ``start()`` did, in reverse.
    """

    def __init__(
        self,
        options: RunOptions,
        *,
        app: Configurator | None = None,
        clock: Clock | None = None,
        log: IO[str] | None = None,
        admin_factory: Callable[[UseCases, Store, RunOptions], AdminHandle] | None = None,
    ) -> None:
        self.app = app or load_app(options.app_spec)
        if options.store is None and self.app.store is not None:
            options = replace(options, store=self.app.store)  # ``--store`` wins over the app
        self.options = options
        self.schedulers = enable(self.app)
        self.clock = clock or SystemClock()
        self._log = log or sys.stderr
        self._admin_factory = admin_factory
        self._stack = contextlib.ExitStack()
        self.state_dir = ensure_state_dir(options.state_dir)
        self.store: Store | None = None
        self.manager: Manager | None = None
        self.use_cases: UseCases | None = None
        self._admin: AdminHandle | None = None
        self._lock: StateDirLock | None = None
        self._control: ControlServer | None = None
        self._dispatcher: Dispatcher | None = None
        self._control_inode: tuple[int, int] | None = None
        self._repair_failed = False
        self._store_guard: StoreGuard | None = None
        self._guard_warning: str | None = None
        # Whether the store answers, as the manager lock finds out each second; the use
        # cases read it (``supervisor status``, the Admin Center's banner).
        self.store_health = StoreHealth()
        self._store_seen: tuple[datetime, StoreProblem] | None = None  # last said
        self._launcher: launching.Launcher | None = None
        self._launcher_closed = False
        self._launcher_closing = threading.Lock()  # the manager's thread, or the closing one
        # Monotonic: when the shutdown began (the runs' grace with it) and when it must end.
        self._shutdown_began = math.inf
        self._shutdown_by = math.inf

    def _watch_runs(self, use_cases: UseCases) -> None:
        """One line per failed run on the log, and notifications where targets are set."""
        routing = notifications(self.app).routing(extra=self.options.notify_targets)
        dispatcher = NotifyDispatcher(err=self._log)
        watcher = Watcher(
            UseCaseReads(use_cases, reader("notify")),
            routing,
            dispatcher,
            app=self.app.name,
            clock=self.clock,
            err=self._log,
        )
        # Closed after the watcher (LIFO), delivering what is queued during the runs' grace.
        self._stack.callback(lambda: dispatcher.close(timeout=self._until(self._grace_ends)))
        watcher.start()
        self._stack.callback(self._bounded, watcher.close, "the notifications' watcher")

    def say(self, message: str) -> None:
        print(message, file=self._log, flush=True)

    def start(self) -> None:
        options = self.options
        stack = self._stack
        self._lock = stack.enter_context(state_dir_lock(self.state_dir))
        store, place, guard = open_store(options, self.state_dir)
        stack.callback(self._bounded, store.close, "closing the store")
        if options.store is None:
            # SQLite's writes tell whether the file takes them (a full disk, a read-only
            # or locked or corrupt file): the store line of status, list and the banner.
            store = as_store(
                WatchedStore(
                    store, self.store_health, self.clock, path=self.state_dir / DATABASE_NAME
                )
            )
            probe = StoreProbe(store, self.store_health, self.clock)
            probe.start()
            stack.callback(self._bounded, probe.close, "the store's probe")
        if guard is not None:
            stack.callback(self._bounded, guard.close, "the store's manager lock")
        self._store_guard = guard
        self.store = store
        check_app(store, self.app, options.app_spec, replace=options.replace_app, place=place)
        # So commands that need the app without a manager (next-runs) can find it.
        store.set_meta(APP_NAME_META, self.app.name)
        store.set_meta(APP_SPEC_META, options.app_spec)
        store.set_meta(APP_CWD_META, os.getcwd())
        launching.become_subreaper()
        gate = self._join_cluster()
        # Sharing a store with the other hosts of a cluster, a host recovers only its own
        # runs: another host's run in progress is that host's (or, once it died, its
        # heir's, who marks it when taking the lease over: ``cluster_gate``).
        own = None if gate is None or options.store is None else gate.host
        interrupted = recover_interrupted_runs(store, self.clock, host=own)
        if interrupted:
            self.say(f"marked {interrupted} run(s) left by a stopped manager as interrupted")
        launcher: launching.Launcher
        # Runs import the app the way this process did: same directory, same sys.path.
        cwd, sys_path = os.getcwd(), [p for p in sys.path if p]
        if options.fork_server:
            launcher = launching.ForkServerLauncher(
                options.app_spec, cwd=cwd, sys_path=sys_path, servers=options.fork_servers
            )
        else:
            launcher = launching.FreshInterpreterLauncher(
                options.app_spec, cwd=cwd, sys_path=sys_path
            )
        self._launcher = launcher
        launcher.start()
        stack.callback(self._close_launcher)
        manager = Manager(
            self.schedulers.registry,
            store=store,
            launcher=launcher,
            clock=self.clock,
            config=ManagerConfig(
                grace_seconds=options.grace_seconds,
                catch_up_missed_cron=options.catch_up_missed_cron,
            ),
            gate=gate,
        )
        use_cases = UseCases(
            self.schedulers.registry,
            backend=manager,
            audit=store,
            clock=self.clock,
            store_health=self.store_health,
        )
        self.use_cases = use_cases
        # Run before the store closes (LIFO), after everything that may still audit.
        stack.callback(self._write_kept_audit)
        # The Admin Center binds its port before any run starts: a wrong --admin fails
        # the start cleanly instead of after the first runs.
        if options.admin is not None and self._admin_factory is not None:
            host, port = options.admin
            try:
                self._admin = self._admin_factory(use_cases, store, options)
            except OSError as error:
                raise DefinitionError(
                    "--admin", f"cannot serve the Admin Center on {host}:{port}: {error}"
                ) from error
            stack.callback(self._bounded, self._admin.close, "the Admin Center")
        if gate is not None:
            gate.open()  # takes leases from now on; left after the manager closed (LIFO)
            stack.callback(self._bounded, gate.close, "leaving the cluster")
        manager.open()
        stack.callback(self._bounded, self._close_manager, "storing the runs' ends")
        self.manager = manager
        self._watch_runs(use_cases)
        self._dispatcher = Dispatcher(
            use_cases,
            {"pid": os.getpid(), "app": options.app_spec, "backend": "manager"},
        )
        self._serve_control()
        stack.callback(self._bounded, self._close_control, "the control socket")
        self.say(
            f"supervisor: running {len(self.schedulers.registry)} scheduler(s) of "
            f"{self.app.name!r}; state in {self.state_dir}"
            + ("" if options.store is None else f", store {place.removeprefix('PostgreSQL ')}")
        )

    def _join_cluster(self) -> Member | None:
        """The cluster membership ``--cluster`` asks for (not yet joined), or None."""
        dsn = self.options.cluster
        if dsn is None:
            return None
        try:
            from supervisor.cluster.member import Member, MemberConfig, default_host_id
        except ImportError as error:
            raise DefinitionError(
                "--cluster", f"needs psycopg 3 (the 'postgresql' extra): {error}"
            ) from error
        config = MemberConfig(
            dsn=dsn,
            host_id=self.options.host_name or default_host_id(self.state_dir),
            scheduler_ids=tuple(options.id for options in self.schedulers.registry),
            timing=self.options.lease_timing,
        )
        ttl = config.timing.ttl.total_seconds()
        self.say(f"supervisor: cluster: joining as {config.host_id} (lease ttl {ttl:g}s)")
        member = Member(
            config, clock=self.clock, report=lambda line: self.say(f"supervisor: {line}")
        )
        member.join()  # its name taken before it recovers the runs left under that name
        return member

    def _serve_control(self) -> None:
        assert self._dispatcher is not None
        control = ControlServer(self.state_dir, self._dispatcher)
        control.start()
        self._control = control
        info = os.lstat(control.path)
        self._control_inode = (info.st_dev, info.st_ino)

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def check_state_dir(self) -> None:
        """Put back a deleted (or replaced) control socket and lock file.

        Without its socket a running manager looks dead to the CLI; without its lock file
        it cannot be seen by its pid. Called every second by ``serve_until_signalled``.
        """
        if self._dispatcher is not None:
            path = self.state_dir / SOCKET_NAME
            try:
                info = os.lstat(path)
                current: tuple[int, int] | None = (info.st_dev, info.st_ino)
            except FileNotFoundError:
                current = None
            if current != self._control_inode:
                self._close_control()
                try:
                    self._serve_control()
                except OSError as error:  # tried again next second; the runs go on
                    self.say(f"supervisor: warning: cannot serve {SOCKET_NAME}: {error}")
                else:
                    self.say(f"supervisor: {SOCKET_NAME} was removed or replaced; serving it again")
        if self._store_guard is not None:  # a shared store's manager lock, as below
            # Raises StoreError once another manager has the store: serving ends.
            warning = self._store_guard.check()
            if warning and warning != self._guard_warning:  # once a streak, not every second
                self.say(f"supervisor: warning: {warning}")
            self._guard_warning = warning
            self._note_store_health(self._store_guard)
        self._say_store_health()
        self._catch_up_audit()
        if self._lock is not None:
            try:
                if self._lock.repair():
                    self.say(f"supervisor: {LOCK_NAME} was removed or replaced; locked it again")
                self._repair_failed = False
            except StoreError as error:
                if not self._repair_failed:  # say it once, not every second
                    self.say(f"supervisor: warning: {error}")
                self._repair_failed = True

    def _catch_up_audit(self) -> None:
        """Write the audit entries kept in memory while no outage is recorded: a write
        that failed without one (PostgreSQL's writes are not watched, a blip) or that
        ended after the outage did has no recovery to wait for. In the background, one
        catch-up at a time: the store may be slow to answer."""
        use_cases = self.use_cases
        if use_cases is not None and use_cases.pending_audit and self.store_health.outage() is None:
            use_cases.kept_audit.write_in_background()

    def _write_kept_audit(self) -> None:
        """At shutdown, one attempt to write the audit entries kept in memory, within
        what is left of the deadline; each one not written is said (their record)."""
        use_cases = self.use_cases
        if use_cases is None or not use_cases.pending_audit:
            return
        writer = threading.Thread(
            target=use_cases.kept_audit.write, name="audit-at-exit", daemon=True
        )
        writer.start()
        wait = self._until(self._shutdown_by) if self._shutdown_by != math.inf else None
        writer.join(None if wait is None else max(BOUNDED_STEP_MIN_SECONDS, wait))
        lost = use_cases.kept_audit.kept()
        if lost:
            self.say(
                f"supervisor: error: {len(lost)} audit entr{'y' if len(lost) == 1 else 'ies'}"
                " kept in memory could not be written to the store before exit:"
            )
            for entry in lost:
                self.say(f"supervisor: audit entry not written: {describe(entry)}")

    def _say_store_health(self) -> None:
        """One line when the SQLite store's writes start to fail (or fail otherwise) and
        one when the outage ends (the PostgreSQL lock says its own, above)."""
        if self._store_guard is not None:
            return
        outage = self.store_health.outage()
        seen = None if outage is None else (outage.since, outage.problem)
        if seen == self._store_seen:
            return
        if outage is not None:
            trouble = StoreTrouble.of(outage, self.clock.now())
            self.say(f"supervisor: warning: store: {trouble.text}")
        elif self._store_seen is not None:
            took = max(0, int((self.clock.now() - self._store_seen[0]).total_seconds()))
            self.say(f"supervisor: store: writes work again after {took} s")
        self._store_seen = seen

    def _note_store_health(self, guard: StoreGuard) -> None:
        """Tell the store's health what the manager lock found: an outage since its
        ``unreachable_since``, its reason the lock's ``last_failure`` (any password in it
        hidden), or none."""
        since = guard.unreachable_since
        if since is None:
            self.store_health.reachable()
            return
        failure = guard.last_failure
        reason = "the store does not answer" if failure is None else failure.reason
        if self.options.store is not None:
            reason = without_password(reason, self.options.store)
        self.store_health.unreachable(since=since, reason=reason)

    def close(self) -> None:
        """Shut down within the grace plus ``SHUTDOWN_MARGIN_SECONDS``: every run is
        cancelled first (its grace starts), then each part is closed in turn with what is
        left of that one deadline; runs left when the grace is over are killed, and
        their ends and logs are stored before this returns."""
        self._shutdown_began = time.monotonic()
        self._shutdown_by = (
            self._shutdown_began + self.options.grace_seconds + SHUTDOWN_MARGIN_SECONDS
        )
        if self.manager is not None:
            self.manager.begin_close()
        self._stack.close()

    @property
    def _grace_ends(self) -> float:
        return self._shutdown_began + self.options.grace_seconds

    @staticmethod
    def _until(deadline: float) -> float:
        """Seconds left until ``deadline`` (monotonic); 0 once past it."""
        return max(0.0, deadline - time.monotonic())

    def _bounded(self, step: Callable[[], None], what: str) -> None:
        """Carry ``step`` out on a thread of its own, waiting for it until the shutdown's
        deadline (without one: as long as it takes): a store that does not answer (locked
        past the deadline, say), or a server whose thread does not end (the control
        socket's, the Admin Center's: their closes join it), must not hold the exit; what
        did not end is named in a warning. What the store did not take is marked
        interrupted at the next start; what it stored stays stored."""
        if self._shutdown_by == math.inf:
            step()
            return
        failed: list[Exception] = []

        def carry_out() -> None:
            try:
                step()
            except Exception as error:  # raised here, in the closing thread
                failed.append(error)

        thread = threading.Thread(target=carry_out, name="shutdown-step", daemon=True)
        thread.start()
        # Past the deadline a quick step still gets a moment (not reported as late).
        thread.join(max(BOUNDED_STEP_MIN_SECONDS, self._until(self._shutdown_by)))
        if thread.is_alive():
            self.say(f"supervisor: warning: {what} did not end by the shutdown's deadline")
        elif failed:
            raise failed[0]

    def _close_manager(self) -> None:
        assert self.manager is not None
        self.manager.close(
            wait=self._until(self._shutdown_by - AFTER_RUNS_SECONDS),
            grace_over=lambda: self._close_launcher(SERVERS_EXIT_SECONDS),
        )

    def _close_launcher(self, timeout: float | None = None) -> None:
        """Close the launcher once (at the end of the grace, if runs are left: it kills
        them, and a stuck fork server too), within ``timeout`` (default: what is left)."""
        launcher = self._launcher
        with self._launcher_closing:
            if launcher is None or self._launcher_closed:
                return
            self._launcher_closed = True
        if timeout is None:
            timeout = self._until(self._shutdown_by)
        if isinstance(launcher, launching.ForkServerLauncher):
            launcher.close(timeout=min(timeout, SERVER_EXIT_SECONDS))
        else:
            launcher.close()

    def serve_until_signalled(self) -> None:
        """Block until SIGTERM or SIGINT, reaping orphaned grandchildren and keeping the
        control socket and lock file in place meanwhile. Raises ``StoreError`` when
        another manager took the store's lock (its message names it)."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop.wait(REAP_INTERVAL_SECONDS):
                launching.reap_orphans()
                try:
                    self.check_state_dir()
                except StoreError:
                    self.say("supervisor: another manager has the store; stopping the runs")
                    raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.say("supervisor: shutting down; asking runs to stop")


class AdminHandle(Protocol):
    """What the Admin Center server gives back: something to close."""

    def close(self) -> None: ...


def admin_factory(
    proxy_user_header: str | None = None,
    *,
    allow_remote: bool = False,
    secure_cookies: bool = False,
    forwarded_from: frozenset[str] = frozenset(),
    metrics_token: str | None = None,
) -> Callable[[UseCases, Store, RunOptions], AdminHandle]:
    """The Admin Center's ``start_admin`` with the command line's options: a reverse
    proxy's user header to trust, a non-loopback address allowed, Secure cookies forced,
    proxies whose forwarded headers count. Imported when called: the web stack costs
    ~60 ms to import."""
    from supervisor.web.server import start_admin

    def start(use_cases: UseCases, store: Store, options: RunOptions) -> AdminHandle:
        from supervisor.web.app import AdminConfig

        config = AdminConfig(
            app_name=use_cases.registry.app_name,
            proxy_user_header=proxy_user_header,
            secure_cookies=True if secure_cookies else None,
            forwarded_from=forwarded_from,
            metrics_token=metrics_token,
        )
        return start_admin(use_cases, store, options, config=config, allow_remote=allow_remote)

    return start


def run_manager(options: RunOptions) -> None:
    """``supervisor run``: start the manager, serve until SIGTERM/SIGINT, shut down."""
    service = Service(
        options,
        admin_factory=admin_factory(
            options.proxy_user_header,
            allow_remote=options.allow_remote,
            secure_cookies=options.secure_cookies,
            forwarded_from=options.forwarded_from,
            metrics_token=options.metrics_token,
        ),
    )
    try:
        service.start()
        service.serve_until_signalled()
    finally:
        service.close()
