"""Retries in systemd mode: what systemd runs after each run of a scheduler with ``retries``.

The retries drop-in of the service (``units.render_retry_dropin``) adds
``ExecStopPost=-+<python> ... supervisor.systemd.retry --scheduler ID --service UNIT
--retries N --retry-delay-us D``: ``+`` runs it as root outside the sandbox, so it can
talk to systemd; ``-`` keeps its failure from changing the run's result. systemd runs it
after every run, with ``$SERVICE_RESULT``, ``$EXIT_CODE``, ``$EXIT_STATUS`` and
``$INVOCATION_ID`` set (systemd.exec(5)). It:

1. tells which try the run was: retry k when the scheduler's retry timer
   (``<stem>:retry.timer``, transient, described ``Retry k of N of scheduler ID``) has
   fired by the time the run began (its service ``<stem>:retry.service`` stays
   ``active (exited)``, started then), else a first try (a timer's or Execute
   Now's run that came before a planned retry wins and counts as a new first try, as
   under the manager);
2. removes that timer and its service, fired or still waiting;
3. plans retry k+1 if the run failed, crashed or timed out (``systemctl.outcome_of_exit``),
   was not stopped (no stop job for the service: ``systemctl stop`` ends a run
   cancelled, never retried) and k < N (``core.retries.next_try``, the manager's rule):
   ``systemd-run --on-active=WAIT`` of ``systemctl start --no-block UNIT``, WAIT
   ``retry_delay``, then twice the wait before, capped at one hour or ``retry_delay``;
4. writes the ``run_retry`` event for the run to the journal (``SUPERVISOR_ATTEMPT``: k;
   ``SUPERVISOR_RETRY_ATTEMPT``, ``SUPERVISOR_RETRY_OF``, ``SUPERVISOR_RETRY_AT`` for the
   retry planned), from which the backend tells retry runs (trigger ``retry``), and a
   notice ``retry 2 of 3 at 2026-12-04 14:05:00 UTC`` among the run's logs.

What it cannot change on systemd 252: the pause of a SCHEDULE is counted from the end of
each run, this step included (a few hundred milliseconds). By design the retry timer does
not survive a reboot, as a planned retry does not survive a restart of the manager: the
timers start at boot and the next run is a first try.

May import ``systemctl`` (the systemd seam, exits), ``journal``, ``definitions``,
``records``, ``core.retries`` (the retry rule, the manager's too) and the standard
library: it starts after every run, so it keeps off jinja2, the store, the registry, the
manager and croniter (``bench/bench_systemd_retry_start.py`` measures it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from supervisor.core.definitions import Settings
from supervisor.core.errors import BackendError
from supervisor.core.records import Outcome
from supervisor.core.retries import next_try
from supervisor.systemd import journal
from supervisor.systemd.systemctl import (
    RETRY_ROLE,
    Systemd,
    outcome_of_exit,
    parse_retry_description,
    parse_timestamp,
    retry_description,
    transient_unit,
)

EVENT_RUN_RETRY: Final = journal.EVENT_RUN_RETRY
_EXIT_CODES: Final = {"exited": 1, "killed": 2, "dumped": 3}
# A retry timer that fired this long after the run began did not start it.
_SLACK: Final = timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnd:
    """How systemd says the run ended (the ``ExecStopPost=`` environment)."""

    run_id: str
    result: str
    exit_code: int
    exit_status: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RunEnd:
        code = _EXIT_CODES.get(environ.get("EXIT_CODE", ""), 0)
        text = environ.get("EXIT_STATUS", "")
        status = 0
        if text.isdigit():
            status = int(text)
        elif text:
            with contextlib.suppress(KeyError):
                status = signal.Signals["SIG" + text.removeprefix("SIG")].value
        return cls(
            run_id=environ.get("INVOCATION_ID", ""),
            result=environ.get("SERVICE_RESULT", ""),
            exit_code=code,
            exit_status=status,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Decided:
    """What ``after_run`` did: the run's try (0: first), and the retry it planned."""

    attempt: int
    outcome: Outcome
    planned: int | None = None
    planned_at: datetime | None = None


def after_run(
    end: RunEnd,
    *,
    scheduler_id: str,
    service: str,
    settings: Settings,
    command_runner: bool,
    systemd: Systemd,
    now: datetime,
) -> Decided:
    """Steps 1 to 3 of the module docstring (the journal is the caller's)."""
    name = transient_unit(service, RETRY_ROLE)
    timer, fired, unit = systemd.show(
        [f"{name}.timer", f"{name}.service", service],
        ("Id", "LoadState", "ActiveState", "SubState", "Description", "ExecMainStartTimestamp"),
    )
    attempt = 0
    if fired.get("LoadState") == "loaded" and fired.get("ActiveState") == "active":
        # The retry timer has fired (its service stays "active (exited)"): this run is
        # that retry if it began after it.
        at = parse_timestamp(fired.get("ExecMainStartTimestamp"))
        began = parse_timestamp(unit.get("ExecMainStartTimestamp"))
        planned = parse_retry_description(fired.get("Description"))
        if planned is not None and at is not None and (began is None or at <= began + _SLACK):
            attempt = planned[0]
    loaded = [
        n
        for n, props in ((f"{name}.timer", timer), (f"{name}.service", fired))
        if props.get("LoadState") == "loaded"
    ]
    if loaded:
        systemd.systemctl("stop", *loaded)
    outcome, _, _ = outcome_of_exit(
        result=end.result,
        code=end.exit_code,
        status=end.exit_status,
        command_runner=command_runner,
    )
    retry = next_try(settings, outcome=outcome, attempt=attempt)
    if retry is None or _stopping(systemd, service):
        return Decided(attempt=attempt, outcome=outcome)
    systemd.transient_timer(
        name,
        description=retry_description(retry.attempt, settings.retries, scheduler_id),
        command=["systemctl", "start", "--no-block", service],
        on_active=retry.wait,
        remain_after_exit=True,  # so the next run's step sees that it fired
    )
    return Decided(
        attempt=attempt, outcome=outcome, planned=retry.attempt, planned_at=now + retry.wait
    )


def _stopping(systemd: Systemd, service: str) -> bool:
    """A stop job runs for ``service`` (``systemctl stop``: the run is not retried)."""
    listed = systemd.systemctl("list-jobs", "--no-legend", "--plain", service, check=False)
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == service and fields[2] == "stop":
            return True
    return False


def journal_entries(
    decided: Decided, *, scheduler_id: str, run_id: str, of: int
) -> list[list[tuple[str, journal.FieldValue]]]:
    """The ``run_retry`` event and, when a retry is planned, the notice saying when."""
    extra = {"SUPERVISOR_ATTEMPT": str(decided.attempt), "SUPERVISOR_RETRY_OF": str(of)}
    message = f"run ended {decided.outcome.value}; no retry planned"
    if decided.planned is not None and decided.planned_at is not None:
        at = decided.planned_at.astimezone(UTC)
        extra["SUPERVISOR_RETRY_ATTEMPT"] = str(decided.planned)
        extra["SUPERVISOR_RETRY_AT"] = str(round(at.timestamp() * 1_000_000))
        message = f"retry {decided.planned} of {of} at {at:%Y-%m-%d %H:%M:%S} UTC"
    event = journal.event_entry(
        EVENT_RUN_RETRY, scheduler_id=scheduler_id, run_id=run_id, message=message, extra=extra
    )
    if decided.planned is None:
        return [event]
    notice: list[tuple[str, journal.FieldValue]] = [
        ("MESSAGE", message),
        ("PRIORITY", "5"),
        ("SCHEDULER_ID", scheduler_id),
        ("RUN_ID", run_id),
        ("SYSLOG_IDENTIFIER", scheduler_id),
        ("SUPERVISOR_SOURCE", "logger"),
        ("SUPERVISOR_TIME", str(round(datetime.now(UTC).timestamp() * 1_000_000))),
    ]
    return [event, notice]


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="supervisor.systemd.retry")
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--retries", type=int, required=True)
    parser.add_argument("--retry-delay-us", type=int, required=True)
    parser.add_argument("--command-runner", action="store_true")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """The ``ExecStopPost=`` entry point; 0 unless systemd could not be asked (then 1,
    with the reason on stderr: journald keeps it with the run)."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    end = RunEnd.from_environ(env)
    settings = Settings(
        retries=args.retries, retry_delay=timedelta(microseconds=args.retry_delay_us)
    )
    try:
        decided = after_run(
            end,
            scheduler_id=args.scheduler,
            service=args.service,
            settings=settings,
            command_runner=args.command_runner,
            systemd=Systemd(),
            now=datetime.now(UTC),
        )
    except BackendError as error:
        print(f"retry of {args.scheduler}: {error}", file=sys.stderr)
        return 1
    if end.run_id and journal.JournalSocket.available():
        sink = journal.JournalSocket()
        try:
            for entry in journal_entries(
                decided, scheduler_id=args.scheduler, run_id=end.run_id, of=args.retries
            ):
                with contextlib.suppress(OSError):
                    sink.send(entry)
        finally:
            sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
