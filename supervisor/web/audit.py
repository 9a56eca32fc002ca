"""Handler for the audit trail page: who did what and when, newest first, by cursor,
narrowed by user, action, scheduler and a date range given in the URL.

The dates are whole days in UTC (the zone the page shows its times in): ``from`` is the
first day shown, ``to`` the last.
May import ``supervisor.web.*`` below the app and the stdlib.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from supervisor.web import present
from supervisor.web.replies import Refused, cursor, short_text
from supervisor.web.site import Request, Site, subject_of

AUDIT_PAGE: Final = 50
# Offered as suggestions in the action filter (any action can be typed).
KNOWN_ACTIONS: Final = (
    "login",
    "login refused",
    "change password",
    "add user",
    "set role",
    "disable user",
    "enable user",
    "remove user",
    "set password",
    "start",
    "stop",
    "execute",
    "update settings",
    "reset settings",
)


def day(text: str | None, *, field: str) -> date | None:
    """A ``YYYY-MM-DD`` date from the URL, or None when empty."""
    if not text:
        return None
    try:
        if len(text) != 10 or not text.isascii():
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise Refused(400, f"{field}: give a date as YYYY-MM-DD") from None


def actor_url(actor: str) -> str:
    """The audit page of one actor (a name that is not valid UTF-8 gets U+FFFD)."""
    return "/audit?" + urlencode({"user": actor}, errors="replace")


def audit(site: Site, request: Request) -> Any:
    subject = subject_of(request)
    filters = {
        "scheduler": short_text(request.query.get("scheduler"), field="scheduler") or "",
        "user": short_text(request.query.get("user"), field="user") or "",
        "action": short_text(request.query.get("action"), field="action") or "",
    }
    first = day(request.query.get("from"), field="from")
    last = day(request.query.get("to"), field="to")
    if first is not None and last is not None and last < first:
        raise Refused(400, "the date range ends before it starts")
    before = cursor(request.query.get("before"))
    entries = site.use_cases.audit(
        subject,
        scheduler_id=filters["scheduler"] or None,
        actor=filters["user"] or None,
        action=filters["action"] or None,
        since=None if first is None else datetime.combine(first, time(), UTC),
        until=None if last is None else datetime.combine(last + timedelta(days=1), time(), UTC),
        limit=AUDIT_PAGE + 1,
        before=before,
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
        rows.append((position, entry, changes, actor_url(entry.actor)))
    filters["from"] = "" if first is None else first.isoformat()
    filters["to"] = "" if last is None else last.isoformat()
    return site.page(
        request,
        "audit.html",
        rows=rows,
        filters=filters,
        filtered=any(filters.values()),
        known_actions=KNOWN_ACTIONS,
        scheduler_id=filters["scheduler"],
        older=entries[-1][0] if more and entries else None,
    )
