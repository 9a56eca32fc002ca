"""Reads through the use cases as one subject: a backend's status reads and log search.

``UseCaseReads`` is what the notification watcher and the metrics collector read
(``notify.feed.RunSource``). ``search_logs`` answers a ``LogQuery`` with each record's
scheduler and run named, for the Admin Center's search and the CLI. Permission-checked
like every use case; reads write no audit. May import ``core`` and ``usecases``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Final

from supervisor.core.access import Permission, Subject
from supervisor.core.durations import parse_duration
from supervisor.core.errors import DefinitionError, UnknownRun
from supervisor.core.records import LogQuery, LogRecord, LogsFound, RunRecord, SchedulerStatus
from supervisor.usecases import serialize

if TYPE_CHECKING:
    from supervisor.usecases.schedulers import UseCases


def reader(name: str) -> Subject:
    """A subject that may list schedulers and read their runs, nothing else."""
    return Subject(name=name, permissions=frozenset({Permission.LIST, Permission.STATUS}))


class UseCaseReads:
    def __init__(self, use_cases: UseCases, subject: Subject) -> None:
        self._use_cases = use_cases
        self._subject = subject

    def statuses(self) -> list[SchedulerStatus]:
        return self._use_cases.list(self._subject)

    def runs(self, scheduler_id: str, *, limit: int = 50) -> list[RunRecord]:
        return self._use_cases.runs(self._subject, scheduler_id, limit=limit)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogHit:
    """A record found by ``search_logs``: its cursor, its scheduler, and its run (None
    when the run is gone or the record belongs to none, e.g. systemd's own messages)."""

    cursor: int
    record: LogRecord
    scheduler_id: str
    run: RunRecord | None


# The most records one ``search`` answer holds (each is built in memory): a client pages.
SEARCH_PAGE_LIMIT: Final = 5000


class LogHits(list[LogHit]):
    """An answer of ``search_logs``, with ``scanned_to``: the highest cursor the search
    examined (None: the source does not tell); a follow continues after it."""

    __slots__ = ("scanned_to",)

    def __init__(self, hits: Sequence[LogHit] = (), *, scanned_to: int | None = None) -> None:
        super().__init__(hits)
        self.scanned_to = scanned_to


def parse_when(text: str, *, now: datetime, field: str, naive: tzinfo | None = None) -> datetime:
    """``text`` as an aware time: ISO 8601, or a duration before ``now`` (``90s``, ``30m``,
    ``1h30m``, ``2d``). An ISO time without an offset is in ``naive`` (None: this host's
    zone). ``DefinitionError`` naming ``field`` otherwise."""
    stripped = text.strip()
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        pass
    else:
        if moment.utcoffset() is not None:
            return moment
        return moment.astimezone() if naive is None else moment.replace(tzinfo=naive)
    try:
        return now - parse_duration(stripped, field=field)
    except DefinitionError:
        raise DefinitionError(
            field,
            f"expected an ISO time (2026-03-01T12:00+01:00) or a duration ago (1h), got {text!r}",
        ) from None


def parse_fields(pairs: Sequence[str], *, field: str) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` texts as (name, value) pairs (the value may hold ``=``);
    ``DefinitionError`` naming ``field`` for one without a name or ``=``."""
    out: list[tuple[str, str]] = []
    for pair in pairs:
        name, equals, value = pair.partition("=")
        name = name.strip()
        if not equals or not name:
            raise DefinitionError(field, f"expected NAME=VALUE, got {pair!r}")
        out.append((name, value))
    return tuple(out)


def search_logs(use_cases: UseCases, subject: Subject, query: LogQuery) -> LogHits:
    """``UseCases.logs`` with each record's scheduler and run: one run read per distinct
    run in the answer. Raises what ``UseCases.logs`` raises."""
    found = use_cases.logs(subject, query)
    runs: dict[str, RunRecord | None] = {}
    hits: list[LogHit] = []
    for cursor, record in found:
        if record.run_id not in runs:
            runs[record.run_id] = _run_or_none(use_cases, subject, record.run_id)
        run = runs[record.run_id]
        scheduler_id = run.scheduler_id if run is not None else query.scheduler_id or ""
        hits.append(LogHit(cursor=cursor, record=record, scheduler_id=scheduler_id, run=run))
    return LogHits(hits, scanned_to=found.scanned_to if isinstance(found, LogsFound) else None)


def _run_or_none(use_cases: UseCases, subject: Subject, run_id: str) -> RunRecord | None:
    if not run_id:
        return None
    try:
        return use_cases.run(subject, run_id)
    except UnknownRun:
        return None


# -- on the wire (the control socket's ``search`` op) ----------------------------------------


def query_args(query: LogQuery) -> dict[str, Any]:
    """The control socket arguments of ``query`` (``service.control`` reads them back)."""
    return {
        "id": query.scheduler_id,
        "run_id": query.run_id,
        "level": None if query.min_level is None else query.min_level.name.lower(),
        "after": query.after,
        "before": query.before,
        "limit": query.limit,
        "text": query.text,
        "fields": [list(pair) for pair in query.fields],
        "since": serialize.iso(query.since),
        "until": serialize.iso(query.until),
    }


def hits_json(hits: LogHits) -> dict[str, Any]:
    """The answer of ``search``: the records (with cursor and scheduler) oldest first,
    each run they belong to once, by run ID, and the highest cursor examined."""
    runs = {hit.run.run_id: serialize.run_json(hit.run) for hit in hits if hit.run is not None}
    records = [
        {**serialize.log_json(hit.record, cursor=hit.cursor), "scheduler_id": hit.scheduler_id}
        for hit in hits
    ]
    return {"records": records, "runs": runs, "scanned_to": hits.scanned_to}
