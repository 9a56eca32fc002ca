"""Handlers for the logs: one scheduler's log viewer (a page of records by cursor,
filtered by level and run, or opened at one record: its permalink), and the log search
over one or every scheduler.

The search form's filters travel in the URL (``q``: free text; ``fields``: ``name=value``
terms, space-separated, values with spaces in quotes; ``level``; ``scheduler``; ``run``;
``since``/``until``: an ISO time, or a duration ago such as ``1h``; an ISO time without
an offset is in the browser's zone, ``offset``, else UTC), so a search is a link. A
record's permalink is ``/schedulers/<id>/logs?at=<cursor>``: the log around it, the record
highlighted (``#log-<cursor>`` scrolls to it).
May import ``supervisor.web.*`` below the app and the stdlib.
"""

from __future__ import annotations

import dataclasses
import shlex
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import urlencode

from supervisor.core.errors import DefinitionError
from supervisor.core.records import Level, LogQuery
from supervisor.usecases import reads
from supervisor.web.render import scheduler_url
from supervisor.web.replies import Refused, cursor, level, short_text
from supervisor.web.site import Request, Site, subject_of

LOG_PAGE = 200
SEARCH_PAGE = 100
RUN_HISTORY = 50
SEARCH_FILTERS = ("q", "fields", "level", "scheduler", "run", "since", "until", "offset")
# An ISO time without an offset is in the browser's zone: ``offset``, minutes east of UTC,
# which the page's script fills in (as the decisions' forms have it); without it UTC.
MAX_OFFSET_MINUTES = 18 * 60
# Searches a page offers with one click: (title, filters).
PRESETS = (
    ("Errors in the last hour", {"level": "error", "since": "1h"}),
    ("Warnings and worse today", {"level": "warning", "since": "24h"}),
    ("Everything in the last 15 minutes", {"since": "15m"}),
)


def url(path: str, **query: object) -> str:
    """``path`` with the non-empty ``query`` values, encoded."""
    pairs = [(k, str(v)) for k, v in query.items() if v is not None and v != ""]
    return path + ("?" + urlencode(pairs) if pairs else "")


def permalink(scheduler_id: str, cursor: int) -> str:
    """The URL that opens a scheduler's log at one record, highlighted."""
    return url(scheduler_url(scheduler_id, "logs"), at=cursor) + f"#log-{cursor}"


def logs(site: Site, request: Request, sid: str) -> Any:
    subject = subject_of(request)
    status = site.use_cases.status(subject, sid)
    min_level = level(request.query.get("level"))
    run_id = short_text(request.query.get("run"), field="run")
    before = cursor(request.query.get("before"))
    after = cursor(request.query.get("after"))
    at = cursor(request.query.get("at"))

    def fetch(*, before: int | None = None, after: int | None = None, limit: int) -> Any:
        return site.use_cases.logs(
            subject,
            LogQuery(
                scheduler_id=sid,
                run_id=run_id,
                min_level=min_level,
                before=before,
                after=after,
                limit=limit,
            ),
        )

    if at is not None:  # a permalink: the record and what surrounds it
        page = [*fetch(before=at + 1, limit=LOG_PAGE // 2), *fetch(after=at, limit=LOG_PAGE // 2)]
    else:
        page = fetch(before=before, after=after, limit=LOG_PAGE)
    has_older = bool(page) and bool(fetch(before=page[0][0], limit=1))
    has_newer = bool(page) and bool(fetch(after=page[-1][0], limit=1))
    if not page and after is not None:
        has_older = True
    runs = site.use_cases.runs(subject, sid, limit=RUN_HISTORY)
    return site.page(
        request,
        "logs.html",
        s=status,
        records=page,
        level=min_level,
        run_id=run_id,
        runs=runs,
        has_older=has_older,
        has_newer=has_newer,
        live=not has_newer and before is None and at is None,
        tail_after=page[-1][0] if page else (after or 0),
        level_name="" if min_level is None else min_level.name.lower(),
        highlight=at,
        found=at is None or any(position == at for position, _ in page),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SearchForm:
    """The search filters as the URL has them (empty text: not given)."""

    q: str = ""
    fields: str = ""
    level: str = ""
    scheduler: str = ""
    run: str = ""
    since: str = ""
    until: str = ""
    offset: str = ""

    @classmethod
    def read(cls, query: dict[str, str]) -> SearchForm:
        values = {}
        for name in SEARCH_FILTERS:
            text = short_text(query.get(name), field=name, limit=500)
            values[name] = "" if text is None else text.strip()
        return cls(**values)

    @property
    def given(self) -> bool:
        """Whether any filter is set (the zone alone is none)."""
        return any(getattr(self, name) for name in SEARCH_FILTERS if name != "offset")

    def query(self, *, now: datetime, limit: int) -> LogQuery:
        """The ``LogQuery`` these filters ask for; ``DefinitionError`` naming the filter
        that does not read."""
        try:
            terms = shlex.split(self.fields)
        except ValueError as error:
            raise DefinitionError("fields", f"{error} (quote values holding spaces)") from None
        try:
            min_level = Level.parse(self.level) if self.level else None
        except ValueError as error:
            raise DefinitionError("level", str(error)) from None
        zone = self._zone()
        return LogQuery(
            scheduler_id=self.scheduler or None,
            run_id=self.run or None,
            min_level=min_level,
            text=self.q or None,
            fields=reads.parse_fields(terms, field="fields"),
            since=self._time(self.since, now=now, field="since", zone=zone),
            until=self._time(self.until, now=now, field="until", zone=zone),
            limit=limit,
        )

    def _zone(self) -> tzinfo:
        if not self.offset:
            return UTC
        try:
            minutes = int(self.offset)
        except ValueError:
            raise DefinitionError("offset", "must be whole minutes") from None
        if abs(minutes) > MAX_OFFSET_MINUTES:
            raise DefinitionError("offset", "is not a time zone offset")
        return timezone(timedelta(minutes=minutes))

    @staticmethod
    def _time(text: str, *, now: datetime, field: str, zone: tzinfo) -> datetime | None:
        return reads.parse_when(text, now=now, field=field, naive=zone) if text else None

    def link(self, **changes: object) -> str:
        """The search page with these filters (and ``changes``: paging cursors)."""
        values: dict[str, object] = {name: getattr(self, name) for name in SEARCH_FILTERS}
        values.update(changes)
        return url("/logs", **values)


def search(site: Site, request: Request) -> Any:
    subject = subject_of(request)
    form = SearchForm.read(request.query)
    before = cursor(request.query.get("before"))
    after = cursor(request.query.get("after"))
    statuses = site.use_cases.list(subject)
    names = {status.id: status.name for status in statuses}
    if form.scheduler and form.scheduler not in names:
        raise Refused(404, f"no scheduler {form.scheduler!r}")
    error = None
    hits: list[reads.LogHit] = []
    has_older = has_newer = False
    if form.given:
        try:
            query = form.query(now=site.clock.now(), limit=SEARCH_PAGE)
        except (DefinitionError, ValueError) as problem:
            error = str(problem)
        else:
            query = dataclasses.replace(query, before=before, after=after)
            hits = reads.search_logs(site.use_cases, subject, query)
            if hits:
                edges = dataclasses.replace(query, after=None, before=None, limit=1)
                older = dataclasses.replace(edges, before=hits[0].cursor)
                newer = dataclasses.replace(edges, after=hits[-1].cursor)
                has_older = bool(site.use_cases.logs(subject, older))
                has_newer = bool(site.use_cases.logs(subject, newer))
            elif after is not None:
                has_older = True
    return site.page(
        request,
        "log_search.html",
        form=form,
        error=error,
        hits=hits,
        names=names,
        statuses=statuses,
        levels=list(Level),
        presets=[(title, url("/logs", **filters)) for title, filters in PRESETS],
        older=form.link(before=hits[0].cursor) if has_older and hits else None,
        newer=form.link(after=hits[-1].cursor) if has_newer and hits else None,
        newest=form.link() if before is not None or after is not None else None,
        permalink=permalink,
    )
