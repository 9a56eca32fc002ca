"""What the supervisor observes and keeps: states, outcomes, runs, log records, audit entries.

Frozen values shared by the store, the backends, the CLI and the web app. Times are
aware UTC datetimes. May import ``definitions`` and the stdlib only.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from supervisor.core.definitions import Kind, Settings


class State(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    DISABLED = "disabled"
    STOPPED = "stopped"
    FAILING = "failing"  # its last start failed (the store or the launcher raised)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the runner raised
    CRASHED = "crashed"  # signal, abort, segfault, OOM kill, non-zero exit
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # stopped by an operator or shutdown
    INTERRUPTED = "interrupted"  # the manager died while it ran


class Trigger(enum.Enum):
    START = "start"  # ONE_SHOT after start delay
    SCHEDULE = "schedule"
    CRON = "cron"
    MISSED = "missed"  # a CRON run missed while the supervisor was down
    MANUAL = "manual"  # Execute Now
    RETRY = "retry"  # a retry after a failed, crashed or timed-out run (setting ``retries``)


def default_trigger(kind: Kind) -> Trigger:
    """What starts a run of ``kind`` when nobody pressed Execute Now."""
    return {
        Kind.SCHEDULE: Trigger.SCHEDULE,
        Kind.CRON: Trigger.CRON,
        Kind.ONE_SHOT: Trigger.START,
        Kind.MANUAL: Trigger.MANUAL,
    }[kind]


class Level(enum.IntEnum):
    """Log levels, numbered like the stdlib ``logging`` module."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, text: str) -> Level:
        name = text.strip().upper()
        if name == "WARN":
            name = "WARNING"
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown log level {text!r}") from None

    @classmethod
    def from_number(cls, number: int) -> Level:
        """The nearest level at or below ``number`` (stdlib custom levels map down)."""
        for level in sorted(cls, reverse=True):
            if number >= level:
                return level
        return cls.DEBUG


class Source(enum.Enum):
    LOGGER = "logger"
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRecord:
    time: datetime
    level: Level
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    run_id: str
    source: Source

    def __init__(
        self,
        *,
        time: datetime,
        level: Level,
        message: str,
        fields: Mapping[str, Any] | None = None,
        run_id: str,
        source: Source,
    ) -> None:
        # The generated __init__ of a frozen class, made cheaper: a run printing a
        # million lines builds a million records (bench/bench_log_flood.py).
        _set_time(self, time)
        _set_level(self, level)
        _set_message(self, message)
        _set_fields(self, {} if fields is None else fields)
        _set_run_id(self, run_id)
        _set_source(self, source)


# Each slot's own setter (a frozen class refuses ``self.x = ...``).
_set_time, _set_level, _set_message, _set_fields, _set_run_id, _set_source = (
    getattr(LogRecord, name).__set__
    for name in ("time", "level", "message", "fields", "run_id", "source")
)


class LogsFound(list[tuple[int, "LogRecord"]]):
    """An answer of ``logs`` (records with cursors, oldest first) that also tells
    ``scanned_to``: the highest cursor its search examined (None: the source does not
    tell), so a follow that found nothing need not read the same records again."""

    __slots__ = ("scanned_to",)

    def __init__(
        self, items: Iterable[tuple[int, LogRecord]] = (), *, scanned_to: int | None = None
    ) -> None:
        super().__init__(items)
        self.scanned_to = scanned_to


@dataclass(frozen=True, slots=True, kw_only=True)
class LogQuery:
    """Which log records to read, as (cursor, record) in cursor order.

    ``after``/``before`` are cursors from earlier answers. With ``after``: the oldest
    ``limit`` records whose cursor is greater (and less than ``before`` if given).
    Otherwise the newest ``limit`` records (with a cursor less than ``before`` if given).
    ``limit`` 0 asks for nothing. Negative numbers raise ``ValueError``.

    Filters (all must hold, see ``matches``): ``scheduler_id`` (None: every scheduler),
    ``run_id``, ``min_level``; ``text``, found case-insensitively (ASCII letters fold,
    others compare as they are) in the message, a field's name or a field's value;
    ``fields``, (name, value) pairs each naming a field whose value, as text, equals
    ``value`` (see ``field_text``); ``since`` <= record time < ``until`` (aware
    datetimes; naive ones raise ``ValueError``).
    """

    scheduler_id: str | None
    run_id: str | None = None
    min_level: Level | None = None
    after: int | None = None
    before: int | None = None
    limit: int = 200
    text: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit must not be negative, got {self.limit}")
        for name, cursor in (("after", self.after), ("before", self.before)):
            if cursor is not None and cursor < 0:
                raise ValueError(f"{name} must not be negative, got {cursor}")
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
        for pair in self.fields:
            if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
                raise ValueError(f"fields must be (name, value) pairs of text, got {pair!r}")
            if not pair[0]:
                raise ValueError("a field filter needs a field name")
        if self.text == "":
            object.__setattr__(self, "text", None)

    @property
    def searches(self) -> bool:
        """Whether records are filtered by more than scheduler, run and level."""
        return bool(
            self.text is not None or self.fields or self.since is not None or self.until is not None
        )

    def scanned_to(self, found: Sequence[tuple[int, object]], highest: int) -> int:
        """The highest cursor an answer of this query examined, given what it ``found``
        (oldest first) and the ``highest`` cursor stored when it ran: a full forward page
        stops at its last record; anything else looked at every record up to ``highest``
        (below ``before``). A follow continues after it even when nothing matched."""
        if self.after is not None and self.limit > 0 and len(found) >= self.limit:
            return found[-1][0]
        top = highest if self.before is None else min(highest, self.before - 1)
        return max(top, self.after or 0)

    def matches(self, record: LogRecord, *, scheduler_id: str | None = None) -> bool:
        """Whether ``record`` passes the filters other than cursors and ``limit``
        (``scheduler_id``: the record's scheduler, checked when both are given)."""
        if (
            self.scheduler_id is not None
            and scheduler_id is not None
            and scheduler_id != self.scheduler_id
        ):
            return False
        if self.run_id is not None and record.run_id != self.run_id:
            return False
        if self.min_level is not None and record.level < self.min_level:
            return False
        if self.since is not None and record.time < self.since:
            return False
        if self.until is not None and record.time >= self.until:
            return False
        for name, value in self.fields:
            if name not in record.fields or field_text(record.fields[name]) != value:
                return False
        if self.text is not None:
            needle = fold(self.text)
            if needle in fold(record.message):
                return True
            return any(
                needle in fold(str(name)) or needle in fold(field_text(value))
                for name, value in record.fields.items()
            )
        return True


_ASCII_LOWER: dict[int, int] = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def fold(text: str) -> str:
    """``text`` with ASCII letters lower-cased, as SQLite's ``lower`` does."""
    return text.translate(_ASCII_LOWER)


def field_text(value: Any) -> str:
    """A field value as ``field=value`` filters compare it: text as it is; true, false
    and null as JSON spells them; numbers as digits; lists and objects as compact JSON."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    run_id: str
    scheduler_id: str
    trigger: Trigger
    triggered_by: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    # Its log is incomplete: records were dropped (``dropped_log_records`` > 0).
    log_truncated: bool = False
    # Records of its log the store did not keep: over the cap, or lost before reaching it.
    dropped_log_records: int = 0
    host: str | None = None  # the host that ran it, when several run one app (--cluster)


class DecisionKind(enum.Enum):
    """What an operator decided about a scheduler (with an optional reason)."""

    STOPPED = "stopped"  # Stop: until Start (or the next start of the supervisor)
    DISABLED = "disabled"  # the ``disabled`` setting: until enabled
    PAUSED = "paused"  # a time-boxed pause: it resumes by itself at ``until``


MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Who stopped, disabled or paused a scheduler, when, why, and (a pause) until when.

    ``reason`` is free text from the operator (None: none given; at most
    ``MAX_REASON_CHARS``, one line); ``until`` is set for ``PAUSED`` only and comes after
    ``at``. Times are aware. Invalid values raise ``ValueError``.
    """

    kind: DecisionKind
    actor: str
    at: datetime
    reason: str | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, DecisionKind):
            raise ValueError("kind must be a DecisionKind")
        if not isinstance(self.actor, str) or not self.actor:
            raise ValueError("actor must be a non-empty string")
        if self.at.tzinfo is None:
            raise ValueError("at must be an aware datetime")
        if self.reason is not None:
            if not isinstance(self.reason, str):
                raise ValueError("reason must be text")
            if len(self.reason) > MAX_REASON_CHARS:
                raise ValueError(f"reason must be at most {MAX_REASON_CHARS} characters")
            if not self.reason.strip() or any(c in self.reason for c in "\r\n\x00"):
                raise ValueError("reason must be one non-empty line")
        if (self.until is None) != (self.kind is not DecisionKind.PAUSED):
            raise ValueError("until is set for a pause, and only for a pause")
        if self.until is not None and (self.until.tzinfo is None or self.until <= self.at):
            raise ValueError("until must be an aware time after the pause began")

    def describe(self) -> str:
        """One line for people: ``stopped by alice 02:14 UTC: ERP maintenance``."""
        text = f"{self.kind.value} by {self.actor} {self.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if self.until is not None:
            until = self.until.astimezone(UTC)
            text = f"paused until {until:%Y-%m-%d %H:%M} UTC by {self.actor}"
        return text if self.reason is None else f"{text}: {self.reason}"


def clean_reason(text: str | None) -> str | None:
    """An operator's reason as a ``Decision`` keeps it: stripped, None when empty;
    ``ValueError`` when longer than ``MAX_REASON_CHARS`` or not one line."""
    if text is None or not text.strip():
        return None
    reason = " ".join(text.split())
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"reason must be at most {MAX_REASON_CHARS} characters")
    if "\x00" in reason or not reason.isprintable():
        raise ValueError("reason must be printable text")
    return reason


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerStatus:
    id: str
    name: str
    description: str
    kind: Kind
    state: State
    settings: Settings
    defaults: Settings
    current_run_id: str | None = None
    last_started_at: datetime | None = None
    last_completed_at: datetime | None = None
    next_planned_at: datetime | None = None
    last_outcome: Outcome | None = None
    last_error: str | None = None
    last_actor: str | None = None
    actions: tuple[tuple[str, str], ...] = ()  # (action id, title)
    # Starts that failed in a row (0 once a run starts again); the last one's message.
    failed_starts: int = 0
    start_error: str | None = None
    # The current run's phase: "starting" (being launched), "running" or "stopping".
    run_phase: str | None = None
    # What holds a run's processes together so Stop ends them all: "cgroup v2",
    # "cgroup v1", "process group + marker sweep" or "systemd unit".
    containment: str | None = None
    # The current run's process (None while none runs or it is being launched), and when
    # the public ``state`` began (None where the backend does not know).
    current_pid: int | None = None
    state_since: datetime | None = None
    # The operator's decision in force (stopped, disabled or paused; who, when, why).
    decision: Decision | None = None
    # A retry is planned (``next_planned_at``): its number, and how many ``retries`` allow.
    retry_attempt: int = 0
    retries: int = 0
    # The host that owns the scheduler when several run one app (--cluster); None: no host
    # does, or there is no cluster.
    host: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    time: datetime
    actor: str
    action: str
    scheduler_id: str | None
    detail: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
