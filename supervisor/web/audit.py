"""Handler for the audit trail page: who did what and when, newest first, by cursor.

May import ``supervisor.web.*`` below the app and the stdlib.
"""

from __future__ import annotations

from typing import Any

from supervisor.web import present
from supervisor.web.replies import cursor, short_text
from supervisor.web.site import Request, Site, subject_of

AUDIT_PAGE = 50


def audit(site: Site, request: Request) -> Any:
    subject = subject_of(request)
    scheduler_id = short_text(request.query.get("scheduler"), field="scheduler")
    before = cursor(request.query.get("before"))
    entries = site.use_cases.audit(
        subject, scheduler_id=scheduler_id, limit=AUDIT_PAGE + 1, before=before
    )
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    rows = []
    for position, entry in entries:
        keys = sorted(set(entry.before or {}) | set(entry.after or {}))
        changes = [
            (
                key,
                present.audit_value(key, (entry.before or {}).get(key)),
                present.audit_value(key, (entry.after or {}).get(key)),
                (entry.before or {}).get(key) != (entry.after or {}).get(key),
            )
            for key in keys
        ]
        rows.append((position, entry, changes))
    return site.page(
        request,
        "audit.html",
        rows=rows,
        scheduler_id=scheduler_id or "",
        older=entries[-1][0] if more and entries else None,
    )
