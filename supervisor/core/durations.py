"""Durations as people type them: ``90s``, ``5m``, ``1h30m``, ``250ms``.

Used by settings (``start_delay``, ``pause_time``, ``timeout``) and the CLI. Grammar:
one or more ``<number><unit>`` parts, optional whitespace between them, units ``d h m s
ms us`` (lower case), each unit at most once and from largest to smallest (``1h30m``,
never ``30m1h`` or ``1m1m``: a typo there is more likely than a wish to add). Numbers may
have a fraction (``1.5s``, ``0.5h``) but the result must be whole microseconds. A bare
number is seconds (``30``, ``1.5``, ``0``). Nothing negative, nothing over 366 days.

Imports only the standard library and ``supervisor.core.errors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from supervisor.core.errors import DefinitionError

if TYPE_CHECKING:
    from fractions import Fraction

MAX_DURATION = timedelta(days=366)

# Largest first: the order parts must appear in, and the order format_duration writes.
_UNIT_MICROSECONDS = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
_UNIT_ORDER = list(_UNIT_MICROSECONDS)
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+", re.ASCII)
_PART = re.compile(r"\s*([\d.]+)\s*([^\d\s.]*)\s*", re.ASCII)


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """Read ``text`` as a duration; raise ``DefinitionError(field, ...)`` if it is not one."""

    def bad(problem: str) -> DefinitionError:
        return DefinitionError(field, f"invalid duration {text!r}: {problem}")

    stripped = text.strip()
    if not stripped:
        raise bad("it is empty (write e.g. 90s, 5m or 1h30m)")
    if stripped.startswith("-"):
        raise bad("it is negative")
    # (fractions loads decimal: imported here, not by every process that loads settings)
    from fractions import Fraction

    if _NUMBER_RE.fullmatch(stripped):
        micros = Fraction(stripped) * _UNIT_MICROSECONDS["s"]
    else:
        micros = _sum_parts(stripped, bad)
    if micros.denominator != 1:
        raise bad("it is finer than a microsecond")
    if micros > _micros(MAX_DURATION):
        raise bad("it is longer than 366 days")
    return timedelta(microseconds=int(micros))


def _sum_parts(text: str, bad: Callable[[str], DefinitionError]) -> Fraction:
    from fractions import Fraction

    total = Fraction(0)
    position = 0
    last_rank = -1
    while position < len(text):
        match = _PART.match(text, position)
        if match is None:
            raise bad(f"unexpected {text[position:].strip()!r} (write e.g. 90s, 5m or 1h30m)")
        number, unit = match.groups()
        if not _NUMBER_RE.fullmatch(number):
            raise bad(f"malformed number {number!r}")
        if unit not in _UNIT_MICROSECONDS:
            problem = "a number needs a unit" if not unit else f"unknown unit {unit!r}"
            raise bad(f"{problem} (use {', '.join(_UNIT_ORDER)})")
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise bad("units must each appear once, largest first (like 1h30m)")
        last_rank = rank
        total += Fraction(number) * _UNIT_MICROSECONDS[unit]
        position = match.end()
    return total


def format_duration(duration: timedelta) -> str:
    """Write ``duration`` in the shortest canonical form ``parse_duration`` reads back.

    ``90s`` comes out as ``1m30s``, zero as ``0s``, 1.25 s as ``1s250ms``.
    Raises ``ValueError`` for a negative duration, which has no written form.
    """
    remaining = _micros(duration)
    if remaining < 0:
        raise ValueError(f"a negative duration has no written form: {duration!r}")
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNIT_MICROSECONDS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _micros(duration: timedelta) -> int:
    return (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds
