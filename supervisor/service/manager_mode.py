"""``supervisor run``: assemble the store, launcher, manager, control socket and Admin Center.

This is the composition root of manager mode; it owns the process-wide setup (subreaper,
signals, the state-directory lock). May import everything except ``cli``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from supervisor.core.app import Configurator, load_app
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import DefinitionError, StoreError
from supervisor.manager.shell import Manager, ManagerConfig
from supervisor.runs import launcher as launching
from supervisor.service.control import ControlServer, Dispatcher
from supervisor.service.paths import (
    APP_CWD_META,
    APP_SPEC_META,
    DATABASE_NAME,
    LOCK_NAME,
    ensure_state_dir,
)
from supervisor.store.sqlite import SqliteStore
from supervisor.usecases.schedulers import UseCases, enable

REAP_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    app_spec: str
    state_dir: Path
    admin: tuple[str, int] | None = ("127.0.0.1", 8080)
    fork_server: bool = True
    grace_seconds: float = 5.0
    catch_up_missed_cron: bool = True
    max_runs_per_scheduler: int = 100
    max_log_bytes_per_run: int = 1 << 20


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's lock: one manager per state directory."""
    try:
        handle = open(state_dir / LOCK_NAME, "a+")  # noqa: SIM115 - closed below
    except OSError as error:
        raise StoreError(
            f"cannot use state directory {state_dir}: {error.strerror or error}"
        ) from error
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another manager is already running with state directory {state_dir}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def recover_interrupted_runs(store: SqliteStore, clock: Clock) -> int:
    """Runs left in flight by a manager that died: kill what is left, mark them interrupted."""
    count = 0
    for unfinished in store.unfinished_runs():
        if unfinished.pid is not None and unfinished.create_time is not None:
            launching.kill_leftovers(
                unfinished.pid,
                unfinished.pgid or unfinished.pid,
                unfinished.create_time,
                run_id=unfinished.run.run_id,
            )
        store.mark_interrupted(
            unfinished.run.run_id,
            ended_at=clock.now(),
            error="the manager stopped while this run was in progress",
        )
        count += 1
    return count


class Service:
    """A running manager with its control socket (and Admin Center, when asked)."""

    def __init__(
        self,
        options: RunOptions,
        *,
        app: Configurator | None = None,
        clock: Clock | None = None,
        log: IO[str] | None = None,
        admin_factory: Callable[[UseCases, SqliteStore, RunOptions], AdminHandle] | None = None,
    ) -> None:
        self.options = options
        self.app = app or load_app(options.app_spec)
        self.schedulers = enable(self.app)
        self.clock = clock or SystemClock()
        self._log = log or sys.stderr
        self._admin_factory = admin_factory
        self._stack = contextlib.ExitStack()
        self.state_dir = ensure_state_dir(options.state_dir)
        self.store: SqliteStore | None = None
        self.manager: Manager | None = None
        self.use_cases: UseCases | None = None
        self._admin: AdminHandle | None = None

    def say(self, message: str) -> None:
        print(message, file=self._log, flush=True)

    def start(self) -> None:
        options = self.options
        stack = self._stack
        stack.enter_context(state_dir_lock(self.state_dir))
        store = SqliteStore.open(
            self.state_dir / DATABASE_NAME,
            max_runs_per_scheduler=options.max_runs_per_scheduler,
            max_log_bytes_per_run=options.max_log_bytes_per_run,
        )
        stack.callback(store.close)
        self.store = store
        # So commands that need the app without a manager (next-runs) can find it.
        store.set_meta(APP_SPEC_META, options.app_spec)
        store.set_meta(APP_CWD_META, os.getcwd())
        launching.become_subreaper()
        interrupted = recover_interrupted_runs(store, self.clock)
        if interrupted:
            self.say(f"marked {interrupted} run(s) left by a stopped manager as interrupted")
        launcher: launching.Launcher
        # Runs import the app the way this process did: same directory, same sys.path.
        cwd, sys_path = os.getcwd(), [p for p in sys.path if p]
        if options.fork_server:
            launcher = launching.ForkServerLauncher(options.app_spec, cwd=cwd, sys_path=sys_path)
        else:
            launcher = launching.FreshInterpreterLauncher(
                options.app_spec, cwd=cwd, sys_path=sys_path
            )
        launcher.start()
        stack.callback(launcher.close)
        manager = Manager(
            self.schedulers.registry,
            store=store,
            launcher=launcher,
            clock=self.clock,
            config=ManagerConfig(
                grace_seconds=options.grace_seconds,
                catch_up_missed_cron=options.catch_up_missed_cron,
            ),
        )
        use_cases = UseCases(
            self.schedulers.registry, backend=manager, audit=store, clock=self.clock
        )
        self.use_cases = use_cases
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
            stack.callback(self._admin.close)
        manager.open()
        stack.callback(manager.close)
        self.manager = manager
        control = ControlServer(
            self.state_dir,
            Dispatcher(
                use_cases,
                {"pid": os.getpid(), "app": options.app_spec, "backend": "manager"},
            ),
        )
        control.start()
        stack.callback(control.close)
        self.say(
            f"supervisor: running {len(self.schedulers.registry)} scheduler(s) of "
            f"{self.app.name!r}; state in {self.state_dir}"
        )

    def close(self) -> None:
        self._stack.close()

    def serve_until_signalled(self) -> None:
        """Block until SIGTERM or SIGINT, reaping orphaned grandchildren meanwhile."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop.wait(REAP_INTERVAL_SECONDS):
                launching.reap_orphans()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.say("supervisor: shutting down; asking runs to stop")


class AdminHandle(Protocol):
    """What the Admin Center server gives back: something to close."""

    def close(self) -> None: ...
