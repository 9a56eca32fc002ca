"""When a pause ends, as an operator writes it after ``supervisor pause ID --until``.

Three forms: a time of day (``18:00``: today, or tomorrow once it has passed), a date and
time (``2026-12-03T18:00``, in the local zone unless it carries an offset), or a
duration from now (``2h``, ``90m``, ``1h30m``). A pure function of the text and ``now``:
a time without an offset is read in the zone of ``now``: pass ``now`` in a named zone
(``zone_named``: the CLI's local zone, the browser's) so a date across a DST change gets
that date's offset; a fixed offset is only a fallback. Shared by the CLI and the Admin
Center.

May import ``core.durations``, ``core.errors`` and the stdlib.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

from supervisor.core.durations import parse_duration
from supervisor.core.errors import DefinitionError

_TIME_OF_DAY: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
FIELD: Final = "until"
HINT: Final = "write e.g. 18:00, 2026-12-03T18:00 or 2h"


def parse_until(text: str, *, now: datetime) -> datetime:
    """The aware time ``text`` names, after ``now``; ``DefinitionError`` naming ``until``."""
    if now.tzinfo is None:
        raise ValueError("now must be aware")
    text = text.strip()
    if not text:
        raise DefinitionError(FIELD, f"is empty ({HINT})")
    match = _TIME_OF_DAY.fullmatch(text)
    if match is not None:
        hour, minute, second = (int(g) if g else 0 for g in match.groups())
        at = datetime.combine(now.date(), time(hour, minute, second), tzinfo=now.tzinfo)
        return at if at > now else at + timedelta(days=1)
    if text[0].isdigit() and ("-" in text or "T" in text):
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise DefinitionError(FIELD, f"{text!r} is not a date and time ({HINT})") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=now.tzinfo)
    else:
        try:
            # Elapsed time: counted in UTC (wall-clock arithmetic in a named zone would be
            # an hour off across a DST change).
            elapsed = parse_duration(text, field=FIELD)
            at = (now.astimezone(UTC) + elapsed).astimezone(now.tzinfo)
        except DefinitionError:
            raise DefinitionError(FIELD, f"{text!r} is not a time or a duration ({HINT})") from None
    if at <= now:
        raise DefinitionError(FIELD, f"{at.isoformat()} has passed already")
    return at


def zone_named(name: str, *, field: str = "zone") -> ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Europe/Berlin``); ``DefinitionError`` naming
    ``field`` if there is no such zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only when a zone is named

    name = name.strip()
    if not name or len(name) > 64 or name.startswith("/") or ".." in name:
        raise DefinitionError(field, f"{name!r} is not a time zone name (e.g. Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise DefinitionError(field, f"{name!r} is not a known time zone") from None
