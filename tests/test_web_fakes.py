"""Test doubles for the Admin Center tests: an in-memory backend, an audit trail, users,
and a small WSGI client. ``FakeBackend`` is one of the implementations
``test_backend_contract`` runs the Backend suite over, so the web tests rest on a fake
that keeps the contract the manager and systemd keep.
"""

from __future__ import annotations

import itertools
import threading
import uuid
import wsgiref.util
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from io import BytesIO
from typing import Any
from urllib.parse import urlencode, urlsplit

from supervisor.core.access import su
from supervisor.core.clock import FakeClock
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import (
    ActionFailed,
    AlreadyRunning,
    BackendError,
    UnknownAction,
    UnknownRun,
)
from supervisor.core.passwords import ScryptCost, hash_password
from supervisor.core.records import (
    AuditEntry,
    Decision,
    DecisionKind,
    Level,
    LogQuery,
    LogRecord,
    Outcome,
    RunRecord,
    SchedulerStatus,
    Source,
    State,
    Trigger,
)
from supervisor.core.registry import Registry
from supervisor.core.settings import EffectiveSettings, from_store
from supervisor.manager.machine import stopped_refusal
from supervisor.store.protocols import Changed, KeepOne, UserChange
from supervisor.usecases.schedulers import Definitions, UseCases
from supervisor.web.config import HEADER_NAMES_KEY, AdminConfig
from supervisor.web.events import StreamLimits

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def noop(_ctx: object) -> None:
    return None


@dataclass(slots=True)
class _Slot:
    options: Options
    stopped: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)  # newest first
    current: RunRecord | None = None
    failed_starts: int = 0  # > 0: the state is FAILING (its starts fail)
    decision: Decision | None = None


class FakeBackend:
    """Fulfils ``supervisor.usecases.backend.Backend`` in memory; records every command."""

    def __init__(self, registry: Registry, clock: FakeClock) -> None:
        self.registry = registry
        self.clock = clock
        self.slots = {o.id: _Slot(o) for o in registry}
        self.logs_: list[tuple[int, str, LogRecord]] = []
        self.cursors = itertools.count(1)
        self.commands: list[tuple[str, ...]] = []
        self.lock = threading.Lock()
        self.recent_reads: list[list[str]] = []  # the IDs asked of each call of recent_runs

    def _slot(self, scheduler_id: str) -> _Slot:
        self.registry.get(scheduler_id)
        return self.slots[scheduler_id]

    def _settings(self, slot: _Slot) -> Settings:
        return from_store(slot.options, slot.overrides).effective

    def _status(self, slot: _Slot) -> SchedulerStatus:
        settings = self._settings(slot)
        if slot.current is not None:
            state = State.RUNNING
        elif slot.failed_starts:
            state = State.FAILING
        elif settings.disabled:
            state = State.DISABLED
        elif slot.stopped:
            state = State.STOPPED
        else:
            state = State.PAUSED
        finished = next((r for r in slot.runs if r.outcome is not None), None)
        next_at = None
        if state is State.PAUSED and slot.options.kind is Kind.SCHEDULE:
            base = finished.ended_at if finished and finished.ended_at else START
            next_at = base + settings.pause_time
        return SchedulerStatus(
            id=slot.options.id,
            name=slot.options.name,
            description=slot.options.description,
            kind=slot.options.kind,
            state=state,
            settings=settings,
            defaults=slot.options.defaults,
            current_run_id=None if slot.current is None else slot.current.run_id,
            last_started_at=slot.runs[0].started_at if slot.runs else None,
            last_completed_at=None if finished is None else finished.ended_at,
            next_planned_at=next_at,
            last_outcome=None if finished is None else finished.outcome,
            last_error=None if finished is None else finished.error,
            actions=tuple((a.id, a.title) for a in slot.options.actions),
            failed_starts=slot.failed_starts,
            decision=slot.decision
            if state in (State.STOPPED, State.DISABLED)
            and slot.decision is not None
            and slot.decision.kind.value in (state.value, "paused")
            else None,
        )

    # -- Backend ---------------------------------------------------------------------------

    def status_version(self) -> None:
        return None  # tests change slots directly: statuses are read every time

    def statuses(self) -> list[SchedulerStatus]:
        with self.lock:
            return [self._status(s) for s in self.slots.values()]

    def status(self, scheduler_id: str) -> SchedulerStatus:
        with self.lock:
            return self._status(self._slot(scheduler_id))

    def start(self, scheduler_id: str, *, actor: str) -> None:
        with self.lock:
            slot = self._slot(scheduler_id)
            slot.stopped = False
            if slot.decision is not None and slot.decision.kind is not DecisionKind.DISABLED:
                slot.decision = None
            self.commands.append(("start", scheduler_id, actor))

    def stop(self, scheduler_id: str, *, actor: str, reason: str | None = None) -> None:
        with self.lock:
            slot = self._slot(scheduler_id)
            slot.stopped = True
            slot.decision = Decision(
                kind=DecisionKind.STOPPED, actor=actor, at=self.clock.now(), reason=reason
            )
            self.commands.append(("stop", scheduler_id, actor))
        if slot.current is not None:
            self.finish(scheduler_id, Outcome.CANCELLED, error="stopped by an operator")

    def execute(self, scheduler_id: str, *, actor: str) -> str:
        with self.lock:
            slot = self._slot(scheduler_id)
            if slot.current is not None:
                raise AlreadyRunning(scheduler_id, slot.current.run_id)
            run = RunRecord(
                run_id=uuid.uuid4().hex,
                scheduler_id=scheduler_id,
                trigger=Trigger.MANUAL,
                triggered_by=actor,
                started_at=self.clock.now(),
            )
            slot.current = run
            slot.runs.insert(0, run)
            self.commands.append(("execute", scheduler_id, actor))
            return run.run_id

    def overrides(self, scheduler_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self._slot(scheduler_id).overrides)

    def pause(
        self, scheduler_id: str, *, actor: str, until: datetime, reason: str | None = None
    ) -> None:
        with self.lock:
            slot = self._slot(scheduler_id)
            if slot.stopped and (slot.decision is None or slot.decision.until is None):
                raise BackendError(stopped_refusal(scheduler_id, slot.decision))  # as the manager
            slot.stopped = True
            slot.decision = Decision(
                kind=DecisionKind.PAUSED,
                actor=actor,
                at=self.clock.now(),
                reason=reason,
                until=until,
            )
            self.commands.append(("pause", scheduler_id, actor))

    def update_settings(
        self,
        scheduler_id: str,
        settings: EffectiveSettings,
        *,
        disabled_by: Decision | None = None,
    ) -> None:
        with self.lock:
            slot = self._slot(scheduler_id)
            slot.overrides = dict(settings.overrides)
            if disabled_by is not None:
                slot.decision = disabled_by
            self.commands.append(("update_settings", scheduler_id))

    def reset_settings(self, scheduler_id: str) -> None:
        with self.lock:
            self._slot(scheduler_id).overrides = {}
            self.commands.append(("reset_settings", scheduler_id))

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        with self.lock:
            return list(self._slot(scheduler_id).runs[:limit])

    def recent_runs(
        self, scheduler_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RunRecord]]:
        with self.lock:
            self.recent_reads.append(list(scheduler_ids))
            chosen = [(sid, self.slots[sid]) for sid in scheduler_ids if sid in self.slots]
            return {sid: list(slot.runs[:limit]) for sid, slot in chosen if slot.runs}

    def run(self, run_id: str) -> RunRecord:
        with self.lock:
            for slot in self.slots.values():
                for run in slot.runs:
                    if run.run_id == run_id:
                        return run
        raise UnknownRun(f"no run with id {run_id!r}")

    def logs(self, query: LogQuery) -> list[tuple[int, LogRecord]]:
        if query.scheduler_id is not None:
            self.registry.get(query.scheduler_id)
        with self.lock:
            chosen = [
                (c, r)
                for c, sid, r in self.logs_
                if query.matches(r, scheduler_id=sid)
                and (query.after is None or c > query.after)
                and (query.before is None or c < query.before)
            ]
        limit = query.limit
        return chosen[:limit] if query.after is not None else chosen[-limit:] if limit else []

    def run_action(self, scheduler_id: str, action_id: str, *, actor: str) -> str:
        options = self.registry.get(scheduler_id)
        action = options.action(action_id)
        if action is None:
            raise UnknownAction(f"scheduler {scheduler_id!r} has no action {action_id!r}")
        with self.lock:
            self.commands.append(("action", scheduler_id, action_id, actor))
        try:
            return str(action.action())
        except Exception as error:
            raise ActionFailed(f"{type(error).__name__}: {error}") from error

    # -- test helpers ------------------------------------------------------------------------

    def finish(self, scheduler_id: str, outcome: Outcome, *, error: str | None = None) -> None:
        with self.lock:
            slot = self._slot(scheduler_id)
            assert slot.current is not None
            done = replace(slot.current, ended_at=self.clock.now(), outcome=outcome, error=error)
            slot.runs[slot.runs.index(slot.current)] = done
            slot.current = None

    def log(
        self,
        scheduler_id: str,
        message: str,
        *,
        run_id: str | None = None,
        level: Level = Level.INFO,
        source: Source = Source.LOGGER,
        **fields: Any,
    ) -> int:
        with self.lock:
            slot = self._slot(scheduler_id)
            if run_id is None:
                run_id = slot.runs[0].run_id if slot.runs else "r-none"
            cursor = next(self.cursors)
            record = LogRecord(
                time=self.clock.now(),
                level=level,
                message=message,
                fields=fields,
                run_id=run_id,
                source=source,
            )
            self.logs_.append((cursor, scheduler_id, record))
            return cursor


class MemoryAudit:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self.lock = threading.Lock()

    def add_audit(self, entry: AuditEntry) -> None:
        with self.lock:
            self.entries.append(entry)

    def audit(
        self,
        *,
        scheduler_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[tuple[int, AuditEntry]]:
        with self.lock:
            numbered = list(enumerate(self.entries, start=1))
        chosen = [
            (c, e)
            for c, e in numbered
            if (scheduler_id is None or e.scheduler_id == scheduler_id)
            and (actor is None or e.actor == actor)
            and (action is None or e.action == action)
            and (since is None or e.time >= since)
            and (until is None or e.time < until)
            and (before is None or c < before)
        ]
        return list(reversed(chosen))[:limit]


@dataclass(frozen=True, slots=True)
class MemoryUser:
    name: str
    role: str
    password_hash: str
    created_at: datetime = START
    stamp: str = "s0"


class MemoryUsers:
    """A ``UserDirectory`` in memory (the real one is ``SqliteStore``), with its own audit
    trail of logins and password changes (``entries``)."""

    def __init__(self) -> None:
        self.users: dict[str, MemoryUser] = {}
        self.entries: list[AuditEntry] = []
        self.lock = threading.Lock()

    def get_user(self, name: str) -> MemoryUser | None:
        return self.users.get(name)

    def list_users(self) -> list[MemoryUser]:
        return [self.users[n] for n in sorted(self.users)]

    def add_user(self, name: str, *, role: str, password_hash: str) -> None:
        self.users[name] = MemoryUser(name, role, password_hash)

    def change_user(self, name: str, change: UserChange, *, keep: KeepOne | None = None) -> Changed:
        with self.lock:
            before = self.users.get(name)
            if before is None or change.stale(before):  # type: ignore[arg-type]
                return Changed.STALE
            after = change.applied(before)  # type: ignore[arg-type]
            others = (
                sum(keep.holds_for(u) for n, u in self.users.items() if n != name) if keep else 1
            )
            if keep is not None and keep.refuses(before, after, others):  # type: ignore[arg-type]
                return Changed.REFUSED
            if after is None:
                del self.users[name]
            else:
                self.users[name] = after  # type: ignore[assignment]
            return Changed.DONE

    def add_audit(self, entry: AuditEntry) -> None:
        with self.lock:
            self.entries.append(entry)

    def actions(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e.actor, e.action) for e in self.entries]


_HASHES: dict[str, str] = {}


# scrypt at the product's cost takes ~0.4 s and 128 MiB a check; the web tests check
# thousands of logins, so their users' hashes (and the app's cost) are cheap ones.
TEST_COST = ScryptCost(n=1 << 10, r=8, p=1)


def fast_hash(password: str) -> str:
    """One cheap hash per password, reused."""
    if password not in _HASHES:
        _HASHES[password] = hash_password(password, cost=TEST_COST)
    return _HASHES[password]


FAST = AdminConfig(
    password_cost=TEST_COST,
    streams=StreamLimits(
        heartbeat_seconds=0.05, status_poll_seconds=0.01, tail_poll_seconds=0.01, max_seconds=5
    ),
)


PASSWORD = "correct horse battery staple"
ROLE_USERS = {"viewer": "vera", "operator": "otto", "admin": "ada"}


def make_world(
    options: list[Options] | None = None, *, users: Any = None
) -> tuple[UseCases, FakeBackend, MemoryAudit, Any, FakeClock]:
    registry = Registry(app_name="demo")
    definitions = Definitions(registry)
    for item in options if options is not None else default_options():
        definitions.configure(su(), item)
    clock = FakeClock(START)
    backend = FakeBackend(registry, clock)
    audit = MemoryAudit()
    use_cases = UseCases(registry, backend=backend, audit=audit, clock=clock)
    directory = users if users is not None else MemoryUsers()
    for role, name in ROLE_USERS.items():
        if directory.get_user(name) is None:
            directory.add_user(name, role=role, password_hash=fast_hash(PASSWORD))
    return use_cases, backend, audit, directory, clock


def default_options() -> list[Options]:
    from supervisor.core.definitions import CustomAction

    return [
        Options(
            id="jobs.hello",
            name="Hello World Job",
            description="Runs once after startup and logs a greeting",
            kind=Kind.ONE_SHOT,
            runner=noop,
        ),
        Options(
            id="jobs.repeat",
            name="Fail with random",
            description="Runs scheduled and fails in random ways",
            kind=Kind.SCHEDULE,
            runner=noop,
            defaults=Settings(start_delay=timedelta(seconds=1), pause_time=timedelta(seconds=10)),
            actions=[CustomAction(id="count", title="Count things", action=lambda: "42 things")],
        ),
        Options(
            id="jobs.nightly",
            name="Nightly report",
            description="Builds the report at 03:00 Berlin time",
            kind=Kind.CRON,
            runner=noop,
            defaults=Settings(cron="0 3 * * *", timezone="Europe/Berlin"),
        ),
        Options(id="jobs.manual", name="Rebuild index", kind=Kind.MANUAL, runner=noop),
    ]


# -- a tiny WSGI client --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Client:
    """Calls a WSGI app in-process, keeping cookies like a browser would."""

    def __init__(
        self, app: Callable[..., Any], *, remote_addr: str = "127.0.0.1", https: bool = False
    ) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}
        self.remote_addr = remote_addr
        self.https = https

    def _environ(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        parts = urlsplit(path)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "REMOTE_ADDR": self.remote_addr,
            "wsgi.input": BytesIO(body),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.url_scheme": "https" if self.https else "http",
        }
        if body:
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        # like our server: every header name as sent; names with "_" are not folded in
        environ[HEADER_NAMES_KEY] = list(headers or {})
        for name, value in (headers or {}).items():
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            environ[key] = value
        wsgiref.util.setup_testing_defaults(environ)
        return environ

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], Iterator[bytes]]:
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            captured["status"] = int(status.split()[0])
            captured["headers"] = headers
            return lambda _data: None

        result = self.app(environ, start_response)
        iterator = iter(result)
        first = next(iterator, b"")

        def chunks() -> Iterator[bytes]:
            try:
                if first:
                    yield first
                yield from iterator
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        headers = captured["headers"]
        for name, value in headers:
            if name.lower() == "set-cookie":
                cookie: SimpleCookie = SimpleCookie()
                cookie.load(value)
                for key, morsel in cookie.items():
                    if morsel["max-age"] == "0":
                        self.cookies.pop(key, None)
                    else:
                        self.cookies[key] = morsel.value
        return captured["status"], headers, chunks()

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        # surrogatepass: hostile tests send what no browser would
        body = (
            urlencode(form, encoding="utf-8", errors="surrogatepass").encode()
            if form is not None
            else b""
        )
        status, out_headers, chunks = self._call(self._environ(method, path, body, headers))
        text = b"".join(chunks).decode("utf-8", errors="replace")
        return Response(status, out_headers, text)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: Mapping[str, str] | None = None, **kwargs: Any) -> Response:
        return self.request("POST", path, form=form or {}, **kwargs)

    def open_stream(
        self, path: str, *, headers: Mapping[str, str] | None = None
    ) -> tuple[int, list[tuple[str, str]], Iterator[bytes]]:
        """Start a streaming GET; the caller reads chunks and must close the iterator."""
        return self._call(self._environ("GET", path, b"", headers))

    def csrf(self, path: str = "/", *, headers: Mapping[str, str] | None = None) -> str:
        page = self.get(path, headers=headers)
        marker = 'name="csrf" value="'
        start = page.body.index(marker) + len(marker)
        return page.body[start : page.body.index('"', start)]

    def login(self, name: str, password: str = PASSWORD) -> Response:
        token = self.csrf("/login")
        return self.post("/login", {"name": name, "password": password, "csrf": token})
