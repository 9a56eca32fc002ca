"""Pure presentation for the Admin Center: durations for people, the run-duration chart,
log field values, outcomes with their exit codes, and the ``<time>`` element every page
uses for an absolute time (always with its zone).

Nothing here touches HTTP; every function is a value in, value out.
May import ``core``, markupsafe and the stdlib.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from supervisor.core.definitions import Command, Kind, Options, Settings
from supervisor.core.durations import format_duration
from supervisor.core.records import Outcome, RunRecord
from supervisor.core.settings import KIND_FIELDS

KIND_WORDS = {
    Kind.ONE_SHOT: "One-shot",
    Kind.SCHEDULE: "Repeating",
    Kind.MANUAL: "Manual",
    Kind.CRON: "Cron",
}

OUTCOME_WORDS = {
    Outcome.SUCCEEDED: "Succeeded",
    Outcome.FAILED: "Failed",
    Outcome.CRASHED: "Crashed",
    Outcome.TIMED_OUT: "Timed out",
    Outcome.CANCELLED: "Cancelled",
    Outcome.INTERRUPTED: "Interrupted",
}

# The settings a form shows for each kind (the others do not affect that kind); the form
# is read by ``core.settings.read_form``.
FORM_FIELDS = KIND_FIELDS

FIELD_LABELS = {
    "start_delay": "Start delay",
    "pause_time": "Pause between runs",
    "cron": "Cron expression",
    "timezone": "Time zone",
    "timeout": "Timeout",
    "disabled": "Disabled",
    "retries": "Retries",
    "retry_delay": "First retry after",
}

FIELD_HINTS = {
    "start_delay": "Once after each start, e.g. 10s or 1m30s.",
    "pause_time": "From the end of one run to the start of the next, e.g. 10s, 5m, 1h30m.",
    "cron": "5 fields, or 6 with seconds first, e.g. 0 3 * * mon-fri.",
    "timezone": "An IANA time zone, e.g. Europe/Berlin.",
    "timeout": "Longest allowed run; empty for no limit.",
    "disabled": "A disabled scheduler plans no runs until enabled again.",
    "retries": "How often a failed, crashed or timed-out run is tried again; 0 for never.",
    "retry_delay": "Wait before the first retry; each further one waits twice as long.",
}


def human_duration(value: timedelta | None) -> str:
    """A duration rounded for reading: ``250 ms``, ``12.3 s``, ``4m05s``, ``2h10m``."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def run_duration(run: RunRecord, now: datetime) -> timedelta:
    """How long a run took, or has taken so far."""
    return (run.ended_at or now) - run.started_at


def setting_text(name: str, settings: Settings) -> str:
    """A setting as the form shows it (durations written as ``1m30s``)."""
    value = getattr(settings, name)
    if value is None:
        return ""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def field_value(value: object) -> str:
    """A structured log field's value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


DURATION_SETTINGS = frozenset({"start_delay", "pause_time", "timeout"})


def audit_value(key: str, value: object) -> str:
    """A settings value from the audit trail (durations there are seconds) for reading."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in DURATION_SETTINGS and isinstance(value, int | float) and value >= 0:
        return format_duration(timedelta(seconds=value))
    return field_value(value)


# -- the run-duration chart ----------------------------------------------------------------

CHART_WIDTH = 640
CHART_HEIGHT = 120
CHART_GAP = 2
CHART_MIN_SLOTS = 20  # so a few runs make bars of a sensible width, not full-width slabs


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # outcome-<value> or outcome-running
    title: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    longest: str  # the top of the scale, for the axis label
    outcomes: tuple[tuple[str, str], ...]  # (css class, word) of outcomes present


def duration_chart(runs: Sequence[RunRecord], now: datetime, *, slots: int = 50) -> Chart:
    """Bars of run durations, oldest left, newest right; ``runs`` come newest first."""
    chosen = list(reversed(runs[:slots]))
    durations = [max(run_duration(run, now).total_seconds(), 0.0) for run in chosen]
    top = max(durations, default=0.0) or 1.0
    slot_width = CHART_WIDTH / max(len(chosen), CHART_MIN_SLOTS)
    bars = []
    present: dict[str, str] = {}
    offset = CHART_WIDTH - slot_width * len(chosen)  # newest at the right edge
    for index, (run, seconds) in enumerate(zip(chosen, durations, strict=True)):
        height = max(2.0, (seconds / top) * (CHART_HEIGHT - 4))
        if run.outcome is None:
            css, word = "outcome-running", "Running"
        else:
            css, word = f"outcome-{run.outcome.value}", OUTCOME_WORDS[run.outcome]
        present.setdefault(css, word)
        started = run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        bars.append(
            Bar(
                x=round(offset + index * slot_width + CHART_GAP / 2, 2),
                y=round(CHART_HEIGHT - height, 2),
                width=round(max(slot_width - CHART_GAP, 1.0), 2),
                height=round(height, 2),
                css=css,
                title=f"{word} · {human_duration(timedelta(seconds=seconds))} · {started}",
                run_id=run.run_id,
            )
        )
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        bars=tuple(bars),
        longest=human_duration(timedelta(seconds=top)) if chosen else "",
        outcomes=tuple(present.items()),
    )


# -- times ----------------------------------------------------------------------------------
#
# One convention for every page: the server renders ``<time datetime="ISO-8601 with offset"
# data-fmt="…">server text with its zone</time>`` and the script reformats every such
# element (also ones added later) in the browser's zone with ``Intl.DateTimeFormat``, zone
# shown. ``data-fmt`` says how: ``datetime`` (date and seconds), ``clock`` (hours and
# minutes, with the date unless today), ``log`` (to the millisecond, with the date unless
# today), ``relative`` (a clock time followed by "3 min ago" / "in 5 min") or ``ago``
# (only "3 min ago": a duration, not an absolute time, so no zone). With
# ``data-zone`` the script formats in that zone instead (a cron scheduler's own zone).

TIME_FORMS = frozenset({"datetime", "clock", "log", "relative"})


def zoned_text(
    moment: datetime,
    *,
    form: str = "datetime",
    zone: tzinfo | None = None,
    now: datetime | None = None,
) -> str:
    """``moment`` as the server writes it, always with its zone: ``2026-03-01 12:22:00 UTC``
    (``datetime``), ``12:22 UTC`` (``clock``, dated unless on ``now``'s day), ``12:22:01.250
    UTC`` (``log``, likewise); in ``zone`` (default UTC), labelled with its abbreviation."""
    if form not in TIME_FORMS:
        raise ValueError(f"unknown time form {form!r}")
    local = moment.astimezone(zone or UTC) if moment.utcoffset() is not None else moment
    label = local.tzname() or "UTC"
    same_day = now is not None and now.astimezone(zone or UTC).date() == local.date()
    if form == "datetime":
        return local.strftime("%Y-%m-%d %H:%M:%S ") + label
    if form == "log":
        clock = local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d} {label}"
        return clock if same_day or now is None else local.strftime("%Y-%m-%d ") + clock
    clock = local.strftime("%H:%M ") + label
    return clock if same_day else local.strftime("%Y-%m-%d ") + clock


def time_tag(
    moment: datetime | None,
    form: str = "datetime",
    *,
    zone: str | None = None,
    now: datetime | None = None,
    css: str = "",
    empty: str = "—",
    text: str | None = None,
) -> Markup:
    """The ``<time>`` element of the convention above (``empty`` in a span for None).

    ``zone``: an IANA name; the text is then in that zone and the script keeps it there.
    ``text``: the server's text when the caller wrote it already (it must name its zone).
    """
    if moment is None:
        return Markup(f'<span class="none">{escape(empty)}</span>')  # noqa: S704 - escaped
    tz = ZoneInfo(zone) if zone else None
    if text is None:
        shown = "clock" if form == "relative" else form
        text = zoned_text(moment, form=shown, zone=tz, now=now)
    utc = zoned_text(moment, form="datetime")
    extra = ""
    if css:
        extra += f' class="{escape(css)}"'
    if zone:
        extra += f' data-zone="{escape(zone)}"'
    return Markup(  # noqa: S704 - every value escaped
        f'<time datetime="{moment.isoformat()}" data-fmt="{escape(form)}" title="{utc}"'
        f"{extra}>{escape(text)}</time>"
    )


# -- outcomes -------------------------------------------------------------------------------


def outcome_text(outcome: Outcome | None, exit_code: int | None = None) -> str:
    """An outcome for reading; a failed run that exited non-zero says its code:
    ``Failed (exit code 3)``. None is a run still going: ``Running``. Callers pass the
    exit code of command runs only: a Python runner that raised exits 1 by convention,
    which would say nothing its traceback does not."""
    if outcome is None:
        return "Running"
    word = OUTCOME_WORDS[outcome]
    if (
        outcome is Outcome.FAILED
        and isinstance(exit_code, int)
        and not isinstance(exit_code, bool)
        and exit_code != 0
    ):
        return f"{word} (exit code {exit_code})"
    return word


def runs_a_command(options: Options) -> bool:
    """Whether the scheduler's runs are a program of its own (whose exit code means
    something), not a Python function run in the child."""
    return isinstance(options.runner, Command)


def schedule_text(status_kind: Kind, settings: Settings) -> str:
    """What plans a scheduler's runs, for the card and the status panel; a cron
    expression with its own zone: ``0 3 * * * (Europe/Berlin)``."""
    if status_kind is Kind.CRON:
        return f"{settings.cron or '—'} ({settings.timezone or 'UTC'})"
    if status_kind is Kind.SCHEDULE:
        pause = settings.pause_time
        return "" if pause is None else f"every {format_duration(pause)} after a run ends"
    if status_kind is Kind.ONE_SHOT:
        return "once after start"
    return "on demand"
