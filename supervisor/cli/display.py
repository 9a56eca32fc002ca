"""How the CLI shows things to a person: times with their zone, spans ("3 min 4 s"),
colours (only on a terminal, never with ``NO_COLOR`` or ``--no-color``), and tables cut
to the terminal's width.

``Display`` is chosen once per command (``Display.choose``) from the flags, the
environment and whether standard output is a terminal; everything else here is a pure
function of it. Cells reach a table already passed through ``terminal.printable``; the
escape sequences added here are the only ones the CLI writes. ``--json`` output never
goes through here.

May import ``cli.terminal`` and the stdlib.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TextIO

from supervisor.cli.terminal import printable

ELLIPSIS: Final = "…"
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S %Z"


class Style(enum.Enum):
    """What a word means to the eye; each maps to one SGR sequence."""

    BAD = "1;31"  # bold red: failed, crashed, timed out, failing
    WARN = "33"  # yellow: stopped, cancelled, interrupted
    GOOD = "32"  # green: succeeded
    ACTIVE = "1;32"  # bold green: running
    DIM = "2"  # disabled, headers of the log tail
    BOLD = "1"


# The words of states and outcomes, and how they are shown.
WORD_STYLES: Final[Mapping[str, Style]] = {
    "failed": Style.BAD,
    "crashed": Style.BAD,
    "timed_out": Style.BAD,
    "failing": Style.BAD,
    "interrupted": Style.WARN,
    "cancelled": Style.WARN,
    "stopped": Style.WARN,
    "succeeded": Style.GOOD,
    "running": Style.ACTIVE,
    "disabled": Style.DIM,
}


def wants_color(*, is_tty: bool, environ: Mapping[str, str], no_color: bool) -> bool:
    """Colour only on a terminal that is not ``dumb``, unless ``--no-color`` or a
    non-empty ``NO_COLOR`` (no-color.org) says otherwise."""
    if no_color or environ.get("NO_COLOR", ""):
        return False
    return is_tty and environ.get("TERM", "") != "dumb"


@dataclass(frozen=True, slots=True, kw_only=True)
class Display:
    """``utc``: times in UTC instead of the local zone; ``color``: SGR colours;
    ``width``: the terminal's columns to fit tables in (None: not a terminal, no cut)."""

    utc: bool = False
    color: bool = False
    width: int | None = None

    @classmethod
    def choose(
        cls,
        *,
        utc: bool,
        no_color: bool,
        is_tty: bool,
        environ: Mapping[str, str],
        columns: int,
    ) -> Display:
        return cls(
            utc=utc,
            color=wants_color(is_tty=is_tty, environ=environ, no_color=no_color),
            width=max(columns, 40) if is_tty else None,
        )

    def time(self, value: datetime | None) -> str:
        """``2026-12-03 14:00:05 CET``: always with its zone (``UTC`` with ``--utc``)."""
        if value is None:
            return "-"
        return value.astimezone(UTC if self.utc else None).strftime(TIME_FORMAT)

    def paint(self, text: str, style: Style | None) -> str:
        if not self.color or style is None or not text:
            return text
        return f"\x1b[{style.value}m{text}\x1b[0m"

    def word(self, text: str) -> str:
        """A state or outcome, in its colour."""
        return self.paint(text, WORD_STYLES.get(text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        """Aligned columns (what a run or a user wrote made printable first); on a
        terminal the widest column is cut with "…" until the line fits; states and
        outcomes in their colour."""
        shown = [[printable(cell, continuation=" ") for cell in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in shown)]) for i, h in enumerate(headers)]
        if self.width is not None:
            widths = fit(widths, [len(h) for h in headers], self.width)
        lines = [
            "  ".join(
                self.paint(h.ljust(w), Style.BOLD) for h, w in zip(headers, widths, strict=True)
            ).rstrip()
        ]
        for row in shown:
            cells = []
            for cell, width in zip(row, widths, strict=True):
                cut = cell if len(cell) <= width else cell[: max(width - 1, 0)] + ELLIPSIS
                cells.append(self.paint(cut, WORD_STYLES.get(cell)) + " " * (width - len(cut)))
            lines.append("  ".join(cells).rstrip())
        return lines


def terminal_columns(stream: TextIO, environ: Mapping[str, str]) -> int:
    """The terminal's width: ``$COLUMNS`` if set, else the terminal's own, else 80 (as
    ``shutil.get_terminal_size``, whose import would cost every command its archive
    modules)."""
    try:
        return int(environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def fit(widths: list[int], minimum: list[int], width: int) -> list[int]:
    """Column widths whose lines (two spaces between columns) fit in ``width``: the
    widest column is narrowed first, none below its header (or 8)."""
    widths = list(widths)
    floors = [max(m, min(w, 8)) for w, m in zip(widths, minimum, strict=True)]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        candidates = [i for i, w in enumerate(widths) if w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def span(duration: timedelta) -> str:
    """A duration as a person reads it: ``12 s``, ``3 min 4 s``, ``2 h 5 min``,
    ``3 days 4 h`` (two units at most, rounded down)."""
    seconds = max(int(duration.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    if minutes:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    return f"{secs} s"


def ago(value: datetime, now: datetime) -> str:
    """``5 min ago``, or ``in 5 min`` for a time still ahead."""
    if value > now:
        return f"in {span(value - now)}"
    return f"{span(now - value)} ago"
