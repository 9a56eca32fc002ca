"""What the ``logs`` command needs besides printing: its filters read from the command
line, short run IDs resolved, and the line between two runs' records.

Times: an ISO 8601 time (without an offset: local time), or a duration ago (``90s``,
``30m``, ``1h30m``, ``2d``). ``--field NAME=VALUE`` compares a field's value as text
(``core.records.field_text``). ``--run`` takes a run ID or its start, as the Admin Center
shows it (8 characters); a start that fits several runs is refused naming them.
May import ``cli.client``, ``cli.terminal``, ``usecases.reads`` (where used: the socket-only
commands import none of it), ``records``, ``errors`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from supervisor.cli import terminal
from supervisor.cli.client import Client
from supervisor.core.errors import DefinitionError
from supervisor.core.records import RunRecord

if TYPE_CHECKING:
    from supervisor.usecases.reads import LogHit

# Runs of each scheduler searched for a short run ID (retention keeps fewer by default).
RUNS_SEARCHED = 1000
AMBIGUOUS_SHOWN = 5
# The manager's run IDs have 16 hex digits (systemd's invocation IDs 32): a text this long
# is taken as a whole ID.
WHOLE_RUN_ID = 16


def parse_when(text: str, *, now: datetime, option: str) -> datetime:
    """``text`` as an aware time (``usecases.reads.parse_when``; no offset: local time)."""
    from supervisor.usecases import reads

    return reads.parse_when(text, now=now, field=option)


def parse_fields(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    from supervisor.usecases import reads

    return reads.parse_fields(pairs, field="--field")


def resolve_run(control: Client, scheduler_id: str | None, given: str) -> str:
    """The run ID that ``given`` is or starts: among ``scheduler_id``'s runs (None: every
    scheduler's). A start that fits several runs raises ``DefinitionError``; one that fits
    none is returned as it is (the read then says the run is unknown or not that
    scheduler's), and so is one as long as a whole run ID (nothing to list)."""
    if len(given) >= WHOLE_RUN_ID:
        return given
    if scheduler_id is not None:
        scheduler_ids = [scheduler_id]
    else:
        scheduler_ids = [status.id for status in control.statuses()]
    runs: list[RunRecord] = []
    for sid in scheduler_ids:
        runs.extend(control.runs(sid, limit=RUNS_SEARCHED))
    if any(run.run_id == given for run in runs):
        return given
    fitting = sorted({run.run_id for run in runs if run.run_id.startswith(given)})
    if len(fitting) == 1:
        return fitting[0]
    if fitting:
        shown = ", ".join(fitting[:AMBIGUOUS_SHOWN])
        more = (
            f" and {len(fitting) - AMBIGUOUS_SHOWN} more" if len(fitting) > AMBIGUOUS_SHOWN else ""
        )
        raise DefinitionError(
            "--run",
            f"{given!r} is the start of {len(fitting)} runs ({shown}{more}): give more of it",
        )
    return given


def separator(hit: LogHit, *, when: str) -> str:
    """The line printed before the first record of each run."""
    run = hit.run
    run_id = hit.record.run_id or "-"
    parts = [f"run {run_id[:8]}", hit.scheduler_id or "?"]
    if run is not None:
        parts.append(f"{run.trigger.value}, started {when}")
    return terminal.printable("── " + " · ".join(parts) + " ──")
