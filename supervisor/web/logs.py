"""Handler for the log viewer: a page of records by cursor, filtered by level and run.

May import ``supervisor.web.*`` below the app and the stdlib.
"""

from __future__ import annotations

from typing import Any

from supervisor.core.records import LogQuery
from supervisor.web.replies import cursor, level, short_text
from supervisor.web.site import Request, Site, subject_of

LOG_PAGE = 200
RUN_HISTORY = 50


def logs(site: Site, request: Request, sid: str) -> Any:
    subject = subject_of(request)
    status = site.use_cases.status(subject, sid)
    min_level = level(request.query.get("level"))
    run_id = short_text(request.query.get("run"), field="run")
    before = cursor(request.query.get("before"))
    after = cursor(request.query.get("after"))

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
        live=not has_newer and before is None,
        tail_after=page[-1][0] if page else (after or 0),
        level_name="" if min_level is None else min_level.name.lower(),
    )
