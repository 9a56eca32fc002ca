"""``supervisor exec``: one execution in the foreground, as a systemd service runs it.

The runner gets the same ``Context``, structured logger and stdlib ``logging``
forwarding as under the manager (``child.execute``, in this process). Under systemd
(``$INVOCATION_ID`` set and journald listening) the records go to journald through the
native protocol (``journal.JournalSink``), and stdout and stderr are replaced by two
journal streams of their own (priority info and warning), so plain output keeps its
source; the run ID is the unit's invocation ID. Outside systemd the records are printed
on stderr as JSON lines and the output is left alone.

SIGTERM, SIGINT and SIGHUP cancel the run (reason ``stop``: it is what ``systemctl stop``
sends); ``--timeout`` cancels it with reason ``timeout`` when it expires (systemd's
``TimeoutStartSec=`` kills it anyway if the runner ignores that).

Exit status, telling the outcome (``EXIT_CODES``):

====  ===========  =====================================================================
0     succeeded
1     failed       the runner raised, or the app or scheduler could not be loaded
70    crashed      (EX_SOFTWARE) only for failures of ``exec`` itself; a crash of the
                   runner (signal, ``os._exit``) shows as that signal or exit status
124   timed_out    (as ``timeout(1)``)
143   cancelled    (128 + SIGTERM: stopped)
====  ===========  =====================================================================

A ``Command`` runner replaces this process (as under the manager), so the status is the
program's: 0 is succeeded, anything else crashed.

Which trigger started the run (``ctx.trigger``): the scheduler kind's (``schedule``,
``cron``, ``start``) for a timed kind, ``manual`` for MANUAL and for a unit systemd started
without a timer (no ``$TRIGGER_UNIT``). systemd 252 keeps ``$TRIGGER_UNIT`` and the first
elapse's ``$TRIGGER_TIMER_REALTIME_USEC`` for every later start of the service, so a
manual start of a timed scheduler cannot be told apart here; the systemd backend reads
who pressed Execute Now from the audit trail instead.

May import ``child``, ``context``, ``journal``, ``systemctl`` (the exit statuses, kept
there for ``systemd.retry``), ``definitions``, ``records``, ``errors`` and the standard
library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import IO, Final, Literal, Protocol

from supervisor.core.definitions import Command, Kind, Options
from supervisor.core.records import Level, Outcome, Trigger, default_trigger
from supervisor.runs import child
from supervisor.runs.context import CancelPipe, RecordSink, make_record
from supervisor.systemd import systemctl
from supervisor.systemd.journal import (
    EVENT_RUN_END,
    EVENT_RUN_START,
    JOURNAL_SOCKET,
    JournalSink,
    JournalSocket,
    JsonLinesSink,
)
from supervisor.systemd.systemctl import EXIT_CODES
from supervisor.systemd.systemctl import outcome_of_exit_code as outcome_of_exit_code

EXIT_SUCCEEDED: Final = child.EXIT_SUCCEEDED
EXIT_FAILED: Final = child.EXIT_FAILED
EXIT_CRASHED: Final = EXIT_CODES[Outcome.CRASHED]
EXIT_TIMED_OUT: Final = EXIT_CODES[Outcome.TIMED_OUT]
EXIT_CANCELLED: Final = EXIT_CODES[Outcome.CANCELLED]
JOURNAL_STREAM_SOCKET: Final = "/run/systemd/journal/stdout"
CANCEL_SIGNALS: Final = tuple(sorted(systemctl.CANCEL_SIGNALS))

LogTarget = Literal["auto", "journal", "stderr"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecRequest:
    """What ``supervisor exec`` was asked to do."""

    app_spec: str
    scheduler_id: str
    run_id: str | None = None
    trigger: Trigger | None = None
    timeout: timedelta | None = None
    log_to: LogTarget = "auto"
    journal_socket: str = JOURNAL_SOCKET
    journal_stream_socket: str = JOURNAL_STREAM_SOCKET


class EventSink(RecordSink, Protocol):
    def event(
        self,
        event: str,
        *,
        run_id: str,
        message: str,
        level: Level = Level.INFO,
        extra: Mapping[str, str] | None = None,
    ) -> None: ...


def under_systemd(environ: Mapping[str, str]) -> bool:
    """Whether this process is (the main process of) a systemd unit."""
    return bool(environ.get("INVOCATION_ID"))


def choose_trigger(kind: Kind, environ: Mapping[str, str]) -> Trigger:
    """The trigger of this run (see the module docstring)."""
    if kind is Kind.MANUAL:
        return Trigger.MANUAL
    if under_systemd(environ) and not environ.get("TRIGGER_UNIT", "").endswith(".timer"):
        return Trigger.MANUAL
    return default_trigger(kind)


def choose_run_id(request: ExecRequest, environ: Mapping[str, str]) -> str:
    return request.run_id or environ.get("INVOCATION_ID") or uuid.uuid4().hex[:16]


def open_journal_stream(path: str, *, identifier: str, priority: int) -> socket.socket:
    """A journal stream like systemd gives a service's stdout: each line one entry."""
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stream.connect(path)
        stream.shutdown(socket.SHUT_RD)
        # identifier, unit ID, priority, level prefix, to syslog, to kmsg, to console
        header = f"{identifier}\n\n{priority}\n0\n0\n0\n0\n"
        stream.sendall(header.encode("utf-8", "replace"))
    except BaseException:
        stream.close()
        raise
    return stream


def redirect_output_to_journal(path: str, identifier: str) -> None:
    """Point fds 1 and 2 at journal streams of their own (info and warning)."""
    for fd, priority in ((1, 6), (2, 4)):
        stream = open_journal_stream(path, identifier=identifier, priority=priority)
        try:
            os.dup2(stream.fileno(), fd)
        finally:
            stream.close()


class _Cancellation:
    """Turns signals and the timeout alarm into a cancel reason on a ``CancelPipe``."""

    def __init__(self, pipe: CancelPipe) -> None:
        self.pipe = pipe
        self.reason: str | None = None
        self._previous: dict[int, object] = {}

    def _cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.pipe.cancel(reason)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._cancel("timeout" if signum == signal.SIGALRM else "stop")

    def install(self, timeout: timedelta | None) -> None:
        for signum in (*CANCEL_SIGNALS, signal.SIGALRM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        if timeout is not None:
            signal.setitimer(signal.ITIMER_REAL, max(timeout.total_seconds(), 0.001))

    def uninstall(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def execute_one(
    request: ExecRequest,
    *,
    environ: Mapping[str, str] | None = None,
    stderr: IO[str] | None = None,
    load: Callable[[str, str], Options] | None = None,
) -> int:
    """Run the execution ``request`` describes; return the exit status (see ``EXIT_CODES``).

    A ``Command`` runner replaces this process and never returns.
    """
    env = os.environ if environ is None else environ
    err = sys.stderr if stderr is None else stderr
    run_id = choose_run_id(request, env)
    scheduler_id = request.scheduler_id
    use_journal = request.log_to == "journal" or (
        request.log_to == "auto"
        and under_systemd(env)
        and JournalSocket.available(request.journal_socket)
    )
    sink: EventSink
    if use_journal:
        sink = JournalSink(scheduler_id, JournalSocket(request.journal_socket), fallback=err)
        with contextlib.suppress(OSError):
            redirect_output_to_journal(request.journal_stream_socket, scheduler_id)
            child.setup_stdio()
    else:
        sink = JsonLinesSink(scheduler_id, err)
    try:
        options = (load or child.load_options)(request.app_spec, scheduler_id)
    except Exception as load_error:
        message = f"cannot load scheduler {scheduler_id!r} of {request.app_spec}: {load_error}"
        sink.write(make_record(run_id, Level.ERROR, message))
        _end(sink, run_id, Outcome.FAILED, message)
        return EXIT_FAILED
    now = datetime.now(UTC)
    trigger = request.trigger or choose_trigger(options.kind, env)
    sink.event(
        EVENT_RUN_START,
        run_id=run_id,
        message=f"run {run_id} started (trigger {trigger.value})",
        level=Level.DEBUG,
        extra={"SUPERVISOR_TRIGGER": trigger.value},
    )
    if isinstance(options.runner, Command):
        return _exec_command(options.runner, sink, run_id)
    job = child.Job(
        scheduler_id=scheduler_id,
        run_id=run_id,
        trigger=trigger.value,
        deadline=None if request.timeout is None else now + request.timeout,
    )
    pipe = CancelPipe()
    cancellation = _Cancellation(pipe)
    cancellation.install(request.timeout)
    try:
        result = child.execute(options, job, sink=sink, cancel_fd=pipe.read_fd)
    finally:
        cancellation.uninstall()
        pipe.close()
        child.flush_stdio()
    error: str | None
    if cancellation.reason == "timeout":
        assert request.timeout is not None
        outcome, error = Outcome.TIMED_OUT, f"timed out after {request.timeout.total_seconds():g}s"
    elif cancellation.reason is not None:
        outcome, error = Outcome.CANCELLED, "cancelled: the run was stopped"
    else:
        outcome, error = result.outcome, result.error
    _end(sink, run_id, outcome, error)
    return EXIT_CODES[outcome]


def _end(sink: EventSink, run_id: str, outcome: Outcome, error: str | None) -> None:
    extra = {"SUPERVISOR_OUTCOME": outcome.value}
    if error:
        extra["SUPERVISOR_ERROR"] = error
    message = f"run {run_id} {outcome.value}" + (f": {error.splitlines()[0]}" if error else "")
    level = Level.INFO if outcome is Outcome.SUCCEEDED else Level.ERROR
    sink.event(EVENT_RUN_END, run_id=run_id, message=message, level=level, extra=extra)


def _exec_command(command: Command, sink: EventSink, run_id: str) -> int:
    child.flush_stdio()
    try:
        child.exec_command(command)
    except OSError as exec_error:
        message = f"cannot execute {command.argv[0]!r}: {exec_error.strerror or exec_error}"
        sink.write(make_record(run_id, Level.ERROR, message))
        _end(sink, run_id, Outcome.FAILED, message)
    return EXIT_FAILED
