"""The CLI's typed client: one ``Client`` protocol, answered by a manager over its control
socket (``ControlClient``) or in this process by use cases bound to systemd
(``UseCaseClient``, built by ``service.systemd_mode``).

Every method returns frozen values (``cli.views``, ``core.records``) and raises the typed
errors of ``core.errors``: an answer's exit code names its type (``error_from_answer``),
so ``except AlreadyRunning`` works the same against either backend. The wire is the one
the server in ``service.control`` speaks: one JSON request line, one JSON answer line.

Importing this module costs no croniter, jinja2, dateutil or bottle: the socket-only
commands (``list``, ``status``, ``stop``, ...) stay quick. When no manager runs, the read
commands read the state database instead (``open_reader``, through ``service.offline``,
imported then). An unknown scheduler ID comes back with the IDs that look like it
(``suggesting``).

May import ``views``, ``service.lock``, ``service.paths``, ``usecases`` (types),
``records``, ``definitions``, ``access``, ``errors`` and the stdlib
(``service.systemd_mode`` and ``service.offline`` where used).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from supervisor.cli import views
from supervisor.cli.views import ManagerInfo, StatusView, UnitFiles
from supervisor.core.access import Subject
from supervisor.core.errors import (
    ActionFailed,
    AlreadyRunning,
    AppLoadError,
    BackendError,
    DefinitionError,
    ManagerUnavailable,
    PermissionDenied,
    StoreError,
    SupervisorError,
    UnknownAction,
    UnknownRun,
    UnknownScheduler,
)
from supervisor.core.records import LogQuery, LogRecord, RunRecord
from supervisor.core.settings import SettingsChange
from supervisor.service.lock import holder
from supervisor.service.paths import SOCKET_NAME

if TYPE_CHECKING:
    from supervisor.systemd.backend import Systemd
    from supervisor.usecases.reads import LogHit, LogHits
    from supervisor.usecases.schedulers import SettingsView, UseCases

SOCKET_RETURN_SECONDS = 3.0  # a manager puts a deleted socket back within about a second
# The wire's constants, as ``service.control`` (the server) has them; not imported from
# there, which would load the server's thread pool and logging for every command.
PROTOCOL_VERSION = 1
MAX_SOCKET_PATH = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd


class Client(Protocol):
    """The operator commands' view of a backend (a manager, or systemd).

    Every method raises the ``SupervisorError`` its use case raised (``UnknownScheduler``,
    ``AlreadyRunning``, ``PermissionDenied``, ``DefinitionError`` for bad settings, ...)
    and ``ManagerUnavailable`` when no manager answers.
    """

    def info(self) -> ManagerInfo: ...

    def statuses(self) -> list[StatusView]:
        """Every scheduler, in definition order."""
        ...

    def status(self, scheduler_id: str) -> StatusView: ...

    def runs(self, scheduler_id: str, *, limit: int) -> list[RunRecord]: ...

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        """Records oldest first with their cursors, as ``query`` asks (``after`` continues
        from a cursor)."""
        ...

    def search_logs(self, query: LogQuery) -> LogHits:
        """``logs`` with each record's scheduler and run (``query.scheduler_id`` None:
        every scheduler's)."""
        ...

    def start(self, scheduler_id: str) -> None: ...

    def stop(self, scheduler_id: str, *, reason: str | None = None) -> str | None:
        """Stop it; a note when its audit entry is kept in memory (the store is down)."""
        ...

    def pause(self, scheduler_id: str, *, until: datetime, reason: str | None = None) -> None:
        """Plan nothing until ``until`` (aware), then resume (``BackendError`` in systemd
        mode, which has no timed pause)."""
        ...

    def resume(self, scheduler_id: str) -> None: ...

    def disable(self, scheduler_id: str, *, reason: str | None = None) -> None: ...

    def enable(self, scheduler_id: str) -> None: ...

    def execute(self, scheduler_id: str) -> str:
        """Start a run now; returns its run ID."""
        ...

    def run_action(self, scheduler_id: str, action_id: str) -> str: ...

    def find_settings(self, scheduler_id: str) -> SettingsView: ...

    def update_settings(self, scheduler_id: str, change: SettingsChange) -> SettingsView:
        """Apply ``change`` all at once or not at all (``DefinitionError`` naming the field)."""
        ...

    def reset_settings(self, scheduler_id: str) -> SettingsView: ...

    def close(self) -> None: ...


# -- errors from answers -------------------------------------------------------------------

_UNKNOWN_SCHEDULER = re.compile(r"no scheduler with id '([^']*)'")
_ALREADY_RUNNING = re.compile(r"scheduler '([^']*)' is already running \(run (.*)\)")
_PERMISSION = re.compile(r"user '([^']*)' lacks permission '([^']*)'")


class RemoteError(SupervisorError):
    """An error whose type the answer did not tell; carries the answer's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def error_from_answer(message: str, exit_code: int) -> SupervisorError:
    """The typed error an answer describes: its exit code names the type (``errors``).

    The message stays exactly the other side's; where a type has fields, they are read
    back from its message, and a message that does not fit gives a ``RemoteError``.
    """
    simple: dict[int, Callable[[str], SupervisorError]] = {
        6: AppLoadError,
        7: StoreError,
        8: ManagerUnavailable,
        9: BackendError,
        10: ActionFailed,
    }
    if exit_code in simple:
        return simple[exit_code](message)
    if exit_code == 2:
        field, separator, problem = message.partition(": ")
        if separator and field and " " not in field:
            return DefinitionError(field, problem)
    elif exit_code == 3:
        if match := _UNKNOWN_SCHEDULER.fullmatch(message):
            return UnknownScheduler(match[1])
        return UnknownAction(message) if "has no action" in message else UnknownRun(message)
    elif exit_code == 4:
        if match := _ALREADY_RUNNING.fullmatch(message):
            return AlreadyRunning(match[1], match[2])
    elif exit_code == 5 and (match := _PERMISSION.fullmatch(message)):
        return PermissionDenied(match[1], match[2])
    return RemoteError(message, exit_code)


# -- the manager's socket ------------------------------------------------------------------


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits in a socket address (long ones via /proc/self/fd)."""
    if len(str(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def _wire_change(change: SettingsChange) -> dict[str, Any]:
    """A settings change as the wire carries it (``SettingsChange.from_json`` reads it):
    the fields it sets, durations in seconds."""
    return {
        name: value.total_seconds() if isinstance(value, timedelta) else value
        for name, value in change.given().items()
    }


class ControlClient:
    """The manager of a state directory, over its control socket (a ``Client``).

    When the socket is missing but a manager holds the state directory (someone deleted
    ``control.sock``), it waits up to ``socket_wait`` seconds for the manager to serve it
    again, then says precisely what is wrong.
    """

    def __init__(
        self, state_dir: Path, *, timeout: float = 120.0, socket_wait: float = SOCKET_RETURN_SECONDS
    ) -> None:
        self.state_dir = state_dir
        self.path = state_dir / SOCKET_NAME
        self._timeout = timeout
        self._socket_wait = socket_wait

    def call(self, op: str, **args: Any) -> Any:
        """One request; the answer's result, or its error raised as its type."""
        request = json.dumps({"v": PROTOCOL_VERSION, "op": op, "args": args}).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(self._timeout)
            self._connect(connection)
            try:
                connection.sendall(request)
                answer_bytes = connection.makefile("rb").readline()
            except OSError as error:
                raise ManagerUnavailable(
                    f"lost the connection to the manager at {self.path}: {error}"
                ) from error
        try:
            answer = json.loads(answer_bytes) if answer_bytes else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ManagerUnavailable(f"the manager at {self.path} gave no answer (did it stop?)")
        if not answer.get("ok"):
            code = answer.get("exit_code", 1)
            raise error_from_answer(
                str(answer.get("error", "unknown error")),
                code if isinstance(code, int) and not isinstance(code, bool) else 1,
            )
        return answer.get("result")

    def _connect(self, connection: socket.socket) -> None:
        deadline = time.monotonic() + self._socket_wait
        while True:
            try:
                with _address(self.path) as address:
                    connection.connect(address)
                return
            except (FileNotFoundError, ConnectionRefusedError) as error:
                pid = holder(self.state_dir)
                if pid is None:
                    raise ManagerUnavailable(
                        f"no manager is running for state directory {self.state_dir} "
                        f"(start one with `supervisor run --app MODULE:ATTR`)"
                    ) from error
                if time.monotonic() >= deadline:
                    raise ManagerUnavailable(
                        f"a manager (pid {pid}) holds state directory {self.state_dir}, but "
                        f"its control socket {self.path} did not answer within "
                        f"{self._socket_wait:g}s (still starting, or the socket was deleted "
                        "and not served again): try again, or restart that manager"
                    ) from error
                time.sleep(0.05)  # polling the manager's repair, at most socket_wait
            except PermissionError as error:
                raise ManagerUnavailable(
                    f"cannot reach the manager at {self.path}: permission denied"
                ) from error

    def info(self) -> ManagerInfo:
        return views.info_from_json(self.call("ping"))

    def statuses(self) -> list[StatusView]:
        return [views.status_from_json(s) for s in views.items(self.call("list"), "list")]

    def status(self, scheduler_id: str) -> StatusView:
        return views.status_from_json(self.call("status", id=scheduler_id))

    def runs(self, scheduler_id: str, *, limit: int) -> list[RunRecord]:
        found = self.call("runs", id=scheduler_id, limit=limit)
        return [views.run_from_json(r) for r in views.items(found, "runs")]

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        args: dict[str, Any] = {"id": query.scheduler_id, "run_id": query.run_id}
        args["limit"] = query.limit
        args["level"] = None if query.min_level is None else query.min_level.name.lower()
        if query.after is not None:
            args["after"] = query.after
        if query.before is not None:
            args["before"] = query.before
        return [views.log_from_json(r) for r in views.items(self.call("logs", **args), "logs")]

    def search_logs(self, query: LogQuery) -> LogHits:
        from supervisor.usecases.reads import SEARCH_PAGE_LIMIT, LogHits

        if query.limit <= SEARCH_PAGE_LIMIT:
            return self._search_page(query)
        # the manager answers a page at a time: newest first, or onward from ``after``
        hits: list[LogHit] = []
        page = dataclasses.replace(query, limit=SEARCH_PAGE_LIMIT)
        scanned: int | None = None
        while len(hits) < query.limit:
            wanted = min(SEARCH_PAGE_LIMIT, query.limit - len(hits))
            found = self._search_page(dataclasses.replace(page, limit=wanted))
            if query.after is not None:
                hits.extend(found)
                scanned = found.scanned_to
                if len(found) < wanted or not found:
                    break
                page = dataclasses.replace(page, after=found[-1].cursor)
            else:
                hits[:0] = found
                if scanned is None:
                    scanned = found.scanned_to
                if len(found) < wanted or not found:
                    break
                page = dataclasses.replace(page, before=found[0].cursor)
        return LogHits(hits, scanned_to=scanned)

    def _search_page(self, query: LogQuery) -> LogHits:
        from supervisor.usecases.reads import LogHit, LogHits, query_args

        try:
            answer = self.call("search", **query_args(query))
        except SupervisorError as error:
            if not str(error).startswith("unknown operation"):
                raise
            return self._search_by_logs(query)  # a manager older than this CLI
        if not isinstance(answer, dict) or not isinstance(answer.get("runs"), dict):
            raise ManagerUnavailable("the manager's answer is not understood: search")
        runs = {str(k): views.run_from_json(v) for k, v in answer["runs"].items()}
        hits = []
        for raw in views.items(answer.get("records"), "search"):
            cursor, record = views.log_from_json(raw)
            scheduler_id = raw.get("scheduler_id")
            if not isinstance(scheduler_id, str):
                raise ManagerUnavailable("the manager's answer is not understood: search")
            run = runs.get(record.run_id)
            hits.append(LogHit(cursor=cursor, record=record, scheduler_id=scheduler_id, run=run))
        scanned = answer.get("scanned_to")  # an older manager does not tell
        if isinstance(scanned, bool) or not isinstance(scanned, int | None):
            raise ManagerUnavailable("the manager's answer is not understood: search")
        return LogHits(hits, scanned_to=scanned)

    def _search_by_logs(self, query: LogQuery) -> LogHits:
        """``search_logs`` from a manager that knows only the ``logs`` op: one scheduler's
        records by run and level (their runs unknown: None); a search it cannot do."""
        from supervisor.usecases.reads import LogHit, LogHits

        scheduler_id = query.scheduler_id
        if query.searches or scheduler_id is None:
            raise ManagerUnavailable(
                f"the manager at {self.path} is older than this command and cannot search "
                "logs: restart it, or name one scheduler without --grep, --field, --since "
                "or --until"
            )
        found = self.logs(query)
        hits = [LogHit(cursor=c, record=r, scheduler_id=scheduler_id, run=None) for c, r in found]
        return LogHits(hits)

    def start(self, scheduler_id: str) -> None:
        self.call("start", id=scheduler_id)

    def stop(self, scheduler_id: str, *, reason: str | None = None) -> str | None:
        note = self.call("stop", id=scheduler_id, reason=reason)
        return note if isinstance(note, str) else None

    def pause(self, scheduler_id: str, *, until: datetime, reason: str | None = None) -> None:
        self.call("pause", id=scheduler_id, until=until.isoformat(), reason=reason)

    def resume(self, scheduler_id: str) -> None:
        self.call("resume", id=scheduler_id)

    def disable(self, scheduler_id: str, *, reason: str | None = None) -> None:
        self.call("disable", id=scheduler_id, reason=reason)

    def enable(self, scheduler_id: str) -> None:
        self.call("enable", id=scheduler_id)

    def execute(self, scheduler_id: str) -> str:
        answer = self.call("execute", id=scheduler_id)
        if not isinstance(answer, dict) or not isinstance(answer.get("run_id"), str):
            raise ManagerUnavailable("the manager's answer is not understood: execute")
        return str(answer["run_id"])

    def run_action(self, scheduler_id: str, action_id: str) -> str:
        answer = self.call("action", id=scheduler_id, action=action_id)
        if not isinstance(answer, dict) or not isinstance(answer.get("result"), str):
            raise ManagerUnavailable("the manager's answer is not understood: action")
        return str(answer["result"])

    def find_settings(self, scheduler_id: str) -> SettingsView:
        return views.settings_view_from_json(self.call("settings", id=scheduler_id))

    def update_settings(self, scheduler_id: str, change: SettingsChange) -> SettingsView:
        answer = self.call("settings", id=scheduler_id, changes=_wire_change(change))
        return views.settings_view_from_json(answer)

    def reset_settings(self, scheduler_id: str) -> SettingsView:
        return views.settings_view_from_json(self.call("settings", id=scheduler_id, reset=True))

    def close(self) -> None:
        return None


# -- use cases in this process (systemd mode) ----------------------------------------------


class UseCaseClient:
    """A ``Client`` answered in this process by bound use cases, acting as ``subject``.

    ``units`` (systemd mode) says where a scheduler's unit files are, for ``status``;
    ``on_close`` releases what the composition root opened.
    """

    def __init__(
        self,
        use_cases: UseCases,
        subject: Subject,
        *,
        info: ManagerInfo,
        units: Callable[[str], UnitFiles] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._use_cases = use_cases
        self._subject = subject
        self._info = info
        self._units = units
        self._on_close = on_close

    def info(self) -> ManagerInfo:
        return self._info

    def statuses(self) -> list[StatusView]:
        return [StatusView.of(s) for s in self._use_cases.list(self._subject)]

    def status(self, scheduler_id: str) -> StatusView:
        status = self._use_cases.status(self._subject, scheduler_id)
        return StatusView.of(status, units=None if self._units is None else self._units(status.id))

    def runs(self, scheduler_id: str, *, limit: int) -> list[RunRecord]:
        return self._use_cases.runs(self._subject, scheduler_id, limit=limit)

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        return self._use_cases.logs(self._subject, query)

    def search_logs(self, query: LogQuery) -> LogHits:
        from supervisor.usecases.reads import search_logs

        return search_logs(self._use_cases, self._subject, query)

    def start(self, scheduler_id: str) -> None:
        self._use_cases.start(self._subject, scheduler_id)

    def stop(self, scheduler_id: str, *, reason: str | None = None) -> str | None:
        return self._use_cases.stop(self._subject, scheduler_id, reason=reason)

    def pause(self, scheduler_id: str, *, until: datetime, reason: str | None = None) -> None:
        self._use_cases.pause(self._subject, scheduler_id, until=until, reason=reason)

    def resume(self, scheduler_id: str) -> None:
        self._use_cases.resume(self._subject, scheduler_id)

    def disable(self, scheduler_id: str, *, reason: str | None = None) -> None:
        self._use_cases.disable(self._subject, scheduler_id, reason=reason)

    def enable(self, scheduler_id: str) -> None:
        self._use_cases.enable(self._subject, scheduler_id)

    def execute(self, scheduler_id: str) -> str:
        return self._use_cases.execute(self._subject, scheduler_id)

    def run_action(self, scheduler_id: str, action_id: str) -> str:
        return self._use_cases.run_action(self._subject, scheduler_id, action_id)

    def find_settings(self, scheduler_id: str) -> SettingsView:
        return self._use_cases.find_settings(self._subject, scheduler_id)

    def update_settings(self, scheduler_id: str, change: SettingsChange) -> SettingsView:
        return self._use_cases.update_settings(self._subject, scheduler_id, change)

    def reset_settings(self, scheduler_id: str) -> SettingsView:
        return self._use_cases.reset_settings(self._subject, scheduler_id)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


# -- reading while no manager runs ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reader:
    """The client of a read command; ``notice`` says (for stderr) that no manager runs
    and where the answers come from instead (None: a live backend answers)."""

    client: Client
    notice: str | None = None


def open_reader(
    state_dir: Path, environ: Mapping[str, str] | None = None, *, app_spec: str | None = None
) -> Reader:
    """The client for ``list``, ``status``, ``runs`` and ``logs``: the live backend, or,
    when no manager holds the state directory, its state database opened read-only
    (``service.offline.open_reads``, over ``app_spec`` or the app the directory last
    ran; ``ManagerUnavailable`` if there is no database either)."""
    from supervisor.service.mode import backend_choice

    if backend_choice(state_dir, environ) == "systemd":
        return Reader(client=systemd_client(state_dir))
    if holder(state_dir) is not None:
        return Reader(client=ControlClient(state_dir))
    if (state_dir / SOCKET_NAME).exists():
        # No lock seen (or /proc/locks unreadable): a socket that answers still wins.
        live = ControlClient(state_dir, socket_wait=0)
        try:
            live.info()
        except ManagerUnavailable:
            pass  # a socket left by a manager that was killed
        else:
            return Reader(client=live)
    from supervisor.core.access import os_user_name, su
    from supervisor.service.offline import open_reads

    reads = open_reads(state_dir, app_spec=app_spec)
    notice = f"no manager is running; read from state.db at {reads.database}"
    if reads.partial:
        notice += " (without its write-ahead log, which cannot be read without writing)"
    client = UseCaseClient(
        reads.use_cases,
        su(os_user_name()),
        info=ManagerInfo(pid=0, app=reads.app_spec, backend="state database"),
        on_close=reads.close,
    )
    return Reader(client=client, notice=notice)


# -- unknown IDs -----------------------------------------------------------------------------


def close_ids(wanted: str, known: Iterable[str]) -> tuple[str, ...]:
    """The known IDs that look like ``wanted`` (a typo, a missing prefix), best first."""
    import difflib

    ids = list(known)
    found = difflib.get_close_matches(wanted, ids, n=3, cutoff=0.6)
    found += [i for i in ids if wanted and wanted in i and i not in found]
    return tuple(found[:3])


class UnknownSchedulerHint(UnknownScheduler):
    """``UnknownScheduler`` with the known IDs that look like the one asked for."""

    def __init__(self, scheduler_id: str, suggestions: tuple[str, ...]) -> None:
        super().__init__(scheduler_id)
        self.suggestions = suggestions

    def hint(self) -> str:
        return f"did you mean {' or '.join(self.suggestions)}?" if self.suggestions else ""


class _Suggesting:
    """A ``Client`` whose ``UnknownScheduler`` errors name the IDs that look alike (while
    the client is still open to list them)."""

    def __init__(self, inner: Client) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in ("close", "statuses") or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except UnknownScheduler as error:
                if isinstance(error, UnknownSchedulerHint):
                    raise
                try:
                    known = [s.id for s in self._inner.statuses()]
                except SupervisorError:
                    known = []
                hint = UnknownSchedulerHint(
                    error.scheduler_id, close_ids(error.scheduler_id, known)
                )
                raise hint from error

        return call


def suggesting(client: Client) -> Client:
    """``client``, whose unknown-ID errors carry suggestions (``UnknownSchedulerHint``)."""
    return cast(Client, _Suggesting(client))


def open_client(state_dir: Path, environ: Mapping[str, str] | None = None) -> Client:
    """The client for the operator commands: the manager's socket, or systemd in this
    process when ``service.systemd_mode.backend_choice`` says so (acting as the OS user)."""
    from supervisor.service.mode import backend_choice

    if backend_choice(state_dir, environ) == "systemd":
        return systemd_client(state_dir)
    return ControlClient(state_dir)


def systemd_client(
    state_dir: Path,
    *,
    app_spec: str | None = None,
    systemd: Systemd | None = None,
    user_name: str | None = None,
) -> UseCaseClient:
    """A ``Client`` over the use cases bound to systemd (``service.systemd_mode``)."""
    from supervisor.core.access import os_user_name, su
    from supervisor.service.systemd_mode import open_systemd_mode

    mode = open_systemd_mode(state_dir, app_spec=app_spec, systemd=systemd)

    def units(scheduler_id: str) -> UnitFiles:
        # Units in /etc win over /run; runtime ones are gone after a reboot: say which.
        location = mode.backend.location(scheduler_id)
        return UnitFiles(
            kind=location.kind,
            service=location.service_path,
            timer=location.timer_path,
            start_timer=location.start_timer_path,
        )

    return UseCaseClient(
        mode.use_cases,
        su(user_name or os_user_name()),
        info=ManagerInfo(pid=os.getpid(), app=mode.app_spec, backend="systemd"),
        units=units,
        on_close=mode.close,
    )
