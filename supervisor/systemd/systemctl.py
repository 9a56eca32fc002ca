"""The command seam of systemd mode: ``systemctl``, ``journalctl`` and ``systemd-run``
through one ``CommandRunner``, ``systemctl show``'s values, how systemd tells a run's end,
and the names of a scheduler's pause and retry timers.

Light on purpose: ``systemd.retry`` runs after every run of a scheduler with retries (as
``ExecStopPost=``), and its start-up delays each retry and each SCHEDULE's pause; this
imports only ``journal``, ``records``, ``errors`` and the standard library (no jinja2,
store or registry). ``systemd.backend`` re-exports what it defines.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from supervisor.core.errors import BackendError
from supervisor.core.records import Outcome
from supervisor.systemd import journal

COMMAND_TIMEOUT: Final = 120.0
RESUME_ROLE: Final = "resume"
RETRY_ROLE: Final = "retry"
# A transient timer's AccuracySec= (as the generated timers': ``units.ACCURACY``).
TRANSIENT_ACCURACY: Final = "1ms"
# ``supervisor exec``'s exit statuses (``execone``), by outcome.
EXIT_CODES: Final[Mapping[Outcome, int]] = {
    Outcome.SUCCEEDED: 0,
    Outcome.FAILED: 1,
    Outcome.CRASHED: 70,
    Outcome.TIMED_OUT: 124,
    Outcome.CANCELLED: 143,
}
_OUTCOMES_BY_CODE: Final = {code: outcome for outcome, code in EXIT_CODES.items()}
# What ``systemctl stop`` sends (``execone`` cancels on them).
CANCEL_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_CLD_EXITED: Final = 1
_CLD_KILLED: Final = 2
_CLD_DUMPED: Final = 3
_TIMESPAN_UNITS: Final = {
    "y": 31_557_600_000_000,
    "month": 2_629_800_000_000,
    "w": 604_800_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "min": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
    "μs": 1,
}
_TIMESPAN_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(y|month|w|d|h|min|ms|μs|us|s)")


def outcome_of_exit_code(code: int) -> Outcome:
    """The outcome ``supervisor exec`` (with a Python runner) reports by exiting ``code``."""
    return _OUTCOMES_BY_CODE.get(code, Outcome.CRASHED)


# -- the command seam ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """What a command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str = ""


class CommandRunner(Protocol):
    """Runs one command to its end. Raises ``OSError`` if it cannot be started."""

    def __call__(self, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT) -> Completed: ...


def run_command(argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT) -> Completed:
    """The real ``CommandRunner``: UTC times, no pager, no colours."""
    env = dict(os.environ)
    env.update({"TZ": "UTC", "LC_ALL": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BackendError(f"{argv[0]} did not answer within {timeout:g}s") from error
    return Completed(
        argv=tuple(argv),
        returncode=done.returncode,
        stdout=done.stdout.decode("utf-8", "replace"),
        stderr=done.stderr.decode("utf-8", "replace"),
    )


class Systemd:
    """``systemctl`` and ``journalctl`` through a ``CommandRunner``.

    A command that fails raises ``BackendError`` with its last line of stderr.
    """

    def __init__(self, runner: CommandRunner | None = None) -> None:
        self.runner: CommandRunner = runner or run_command

    def _run(self, argv: Sequence[str], *, check: bool = True) -> Completed:
        try:
            done = self.runner(argv)
        except OSError as error:
            raise BackendError(f"cannot run {argv[0]}: {error.strerror or error}") from error
        if check and done.returncode != 0:
            problem = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
            raise BackendError(f"{' '.join(argv[:3])} failed: {problem.splitlines()[-1]}")
        return done

    def systemctl(self, *args: str, check: bool = True) -> Completed:
        return self._run(["systemctl", "--no-pager", *args], check=check)

    def show(self, units: Sequence[str], properties: Sequence[str]) -> list[dict[str, str]]:
        """``systemctl show`` of ``units`` (in order); one dict per unit."""
        if not units:
            return []
        done = self.systemctl(
            "show", "--timestamp=unix", "--property=" + ",".join(properties), *units
        )
        return parse_show(done.stdout, len(units))

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def transient_timer(
        self,
        name: str,
        *,
        description: str,
        command: Sequence[str],
        on_calendar: datetime | None = None,
        on_active: timedelta | None = None,
        remain_after_exit: bool = False,
    ) -> None:
        """``systemd-run``: a transient timer ``name.timer`` (gone once it has fired, been
        stopped, or at a reboot) that runs ``command`` as root, in service ``name.service``,
        at ``on_calendar`` (rounded up to the second) or ``on_active`` from now.
        ``remain_after_exit``: its service stays loaded, ``active (exited)``, once it has
        run, until stopped: it says when the timer fired (``systemd-run`` sets
        ``RemainAfterElapse=no`` on the timer whatever ``--timer-property`` asks)."""
        if (on_calendar is None) == (on_active is None):
            raise ValueError("give one of on_calendar and on_active")
        if on_calendar is not None:
            moment = on_calendar.astimezone(UTC)
            if moment.microsecond:
                moment = moment.replace(microsecond=0) + timedelta(seconds=1)
            trigger = f"--on-calendar={moment:%Y-%m-%d %H:%M:%S} UTC"
        else:
            assert on_active is not None
            trigger = f"--on-active={max(on_active // timedelta(milliseconds=1), 1)}ms"
        self._run(
            [
                "systemd-run",
                "--quiet",
                "--collect",
                f"--unit={name}",
                f"--description={description}",
                trigger,
                f"--timer-property=AccuracySec={TRANSIENT_ACCURACY}",
                *(["--property=RemainAfterExit=yes"] if remain_after_exit else []),
                "--",
                *command,
            ]
        )

    def journal(self, *args: str) -> list[dict[str, str]]:
        done = self._run(["journalctl", "--no-pager", "--quiet", "-o", "json", "--all", *args])
        return journal.parse_json_lines(done.stdout)


def parse_show(text: str, count: int) -> list[dict[str, str]]:
    """``systemctl show`` output of ``count`` units: blocks of ``Key=value`` lines."""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, sep, value = line.partition("=")
        if sep:
            blocks[-1][key] = value
    if not blocks[-1]:
        blocks.pop()
    if len(blocks) != count:
        raise BackendError(f"systemctl show gave {len(blocks)} answers for {count} units")
    return blocks


def parse_timestamp(text: str | None) -> datetime | None:
    """A ``systemctl show`` time: ``@<epoch seconds>`` (``--timestamp=unix``) or
    ``Thu 2026-11-26 14:30:45 UTC``; None when unset."""
    if not text or text in ("n/a", "0"):
        return None
    if text.startswith("@"):
        try:
            return datetime.fromtimestamp(float(text[1:]), UTC)
        except ValueError:
            return None
    parts = text.split()
    if len(parts) >= 3 and parts[-1] == "UTC":
        with contextlib.suppress(ValueError):
            return datetime.strptime(" ".join(parts[-3:-1]) + " +0000", "%Y-%m-%d %H:%M:%S %z")
    return None


def parse_timespan_usec(text: str | None) -> int | None:
    """A systemd time span (``21min 3.380957s``, ``0``, ``infinity``) in microseconds."""
    if not text or text == "infinity":
        return None
    if text.isdigit():
        return int(text)
    total = 0.0
    position = 0
    for match in _TIMESPAN_PART.finditer(text):
        if text[position : match.start()].strip():
            return None
        total += float(match.group(1)) * _TIMESPAN_UNITS[match.group(2)]
        position = match.end()
    if text[position:].strip() or position == 0:
        return None
    return round(total)


def describe_exit(code: int, status: int) -> str:
    """``exited with code 3`` or ``killed by signal SIGSEGV (11)``.

    ``code`` and ``status`` are ``ExecMainCode`` and ``ExecMainStatus``.
    """
    if code == _CLD_EXITED:
        return f"exited with code {status}"
    try:
        name = signal.Signals(status).name
    except ValueError:
        name = f"signal {status}"
    how = "dumped core after signal" if code == _CLD_DUMPED else "killed by signal"
    return f"{how} {name} ({status})"


def outcome_of_exit(
    *, result: str, code: int, status: int, command_runner: bool
) -> tuple[Outcome, int | None, int | None]:
    """(outcome, exit code, signal) of a finished run from systemd's view of it.

    ``result``: the service's ``Result`` (or a failure message's ``UNIT_RESULT``);
    ``code``/``status``: ``ExecMainCode``/``ExecMainStatus``. ``Result=timeout`` is
    a timeout whatever the status; a signal is a crash, except the stop signals
    (SIGTERM, SIGINT, SIGHUP: ``systemctl stop``), which cancel. An exit status is read
    with ``supervisor exec``'s codes for Python runners; a ``Command`` runner succeeded
    with 0 and failed with any other code (as under the manager: ``runs.exits``).
    """
    if code in (_CLD_KILLED, _CLD_DUMPED):
        if result == "timeout":
            return Outcome.TIMED_OUT, None, status
        if code == _CLD_KILLED and status in CANCEL_SIGNALS:
            return Outcome.CANCELLED, None, status
        return Outcome.CRASHED, None, status
    if result == "timeout":
        return Outcome.TIMED_OUT, status, None
    if code != _CLD_EXITED:
        if result in ("success", ""):
            return Outcome.SUCCEEDED, 0, None
        return Outcome.CRASHED, None, None
    if command_runner:
        return (Outcome.SUCCEEDED if status == 0 else Outcome.FAILED), status, None
    return outcome_of_exit_code(status), status, None


# -- transient timers ---------------------------------------------------------------------


def transient_unit(service: str, role: str) -> str:
    """The name (without suffix) of a timer of a scheduler's and its service that its
    units do not hold: ``<stem>:resume`` ends a pause (unit files written at the pause:
    ``resume``), ``<stem>:retry`` starts a retry (transient, ``systemd-run``). No
    scheduler's units can have it: IDs hold no ``:``."""
    return f"{service.removesuffix('.service')}:{role}"


_RETRY_DESCRIPTION = re.compile(r"Retry ([0-9]+) of ([0-9]+) of scheduler (\S+)")


def retry_description(attempt: int, of: int, scheduler_id: str) -> str:
    """A retry timer's ``Description=`` (``systemctl list-timers`` shows it), which
    ``parse_retry_description`` reads back."""
    return f"Retry {attempt} of {of} of scheduler {scheduler_id}"


def parse_retry_description(text: str | None) -> tuple[int, int] | None:
    """(attempt, of) from a retry timer's description, or None."""
    match = _RETRY_DESCRIPTION.fullmatch(text or "")
    return None if match is None else (int(match.group(1)), int(match.group(2)))
