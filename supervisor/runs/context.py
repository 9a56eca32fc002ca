"""What a runner sees while it runs: its context, its structured logger, its errors.

A ``Context`` tells the runner which run it is and whether it has been asked to end.
Cancellation arrives on a pipe from the manager (one short line naming the reason:
``stop``, ``timeout`` or ``shutdown``); end-of-file on that pipe means the manager went
away, which cancels too. ``err()`` and ``sleep()`` look at the pipe with ``poll``, so no
helper thread is needed and a check costs one system call.

Log records go to a ``RecordSink``: in a run's process that is the records pipe (see
``wire``); in ``supervisor exec`` (systemd mode) it is whatever the caller plugs in.

May import ``records``, ``definitions`` (the ``RunContext`` it fulfils) and the stdlib.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol

from supervisor.core.definitions import RunContext
from supervisor.core.records import Level, LogRecord, Source

# The reasons the manager may give on the cancel pipe, and what the runner is told.
CANCEL_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "stop": "the run was stopped",
        "timeout": "the run timed out",
        "shutdown": "the supervisor is shutting down",
        "gone": "the supervisor went away",
    }
)
NO_FIELDS: Final[Mapping[str, Any]] = MappingProxyType({})
# Field values longer than this are cut (a record must fit the records pipe's line cap).
MAX_TEXT_CHARS = 64 * 1024
_MAX_DEPTH = 8


class RunError(Exception):
    """An expected failure: raise it to end the run as failed with just this message."""


class Cancelled(Exception):
    """The run was asked to end; ``reason`` is ``stop``, ``timeout``, ``shutdown`` or ``gone``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(CANCEL_MESSAGES.get(reason, f"the run was cancelled ({reason})"))


class RecordSink(Protocol):
    """Where a run's log records go. ``write`` must be safe to call from any thread."""

    def write(self, record: LogRecord) -> None: ...


class CancelPipe:
    """A cancel channel for a run hosted in the current process (``supervisor exec``).

    Hand ``read_fd`` to the ``Context``; call ``cancel(reason)`` to cancel it. ``cancel``
    only calls ``os.write``, so it may be called from a signal handler.
    """

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()

    def cancel(self, reason: str = "stop") -> None:
        with contextlib.suppress(OSError):
            os.write(self._write_fd, reason.encode("ascii", "replace")[:64] + b"\n")

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Context:
    """The run a runner is executing, and whether it has been asked to end.

    ``trigger`` is the trigger's value (``start``, ``schedule``, ``cron``, ``missed``,
    ``manual``); ``deadline`` (aware UTC) is when the timeout will end the run, or None.
    """

    def __init__(
        self,
        *,
        scheduler_id: str,
        run_id: str,
        trigger: str,
        deadline: datetime | None,
        sink: RecordSink,
        cancel_fd: int | None = None,
    ) -> None:
        self.scheduler_id = scheduler_id
        self.run_id = run_id
        self.trigger = trigger
        self.deadline = deadline
        self.sink = sink
        self._cancel_fd = cancel_fd
        self._error: Cancelled | None = None
        self._lock = threading.Lock()
        # Closed on cancellation, so every thread sleeping on it wakes, not only the one
        # that read the manager's message.
        self._woken_r = self._woken_w = -1
        if cancel_fd is not None:
            os.set_blocking(cancel_fd, False)
            self._woken_r, self._woken_w = os.pipe()

    def __repr__(self) -> str:
        return f"Context(scheduler_id={self.scheduler_id!r}, run_id={self.run_id!r})"

    def close(self) -> None:
        """Release the context's own fds (its host calls this when the run is over);
        afterwards ``err()`` keeps answering what it last knew."""
        with self._lock:
            fds = [fd for fd in (self._woken_r, self._woken_w) if fd >= 0]
            self._cancel_fd = None
            self._woken_r = self._woken_w = -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def err(self) -> BaseException | None:
        """None while the run may go on; a ``Cancelled`` error once it is asked to end.

        Typical use in a loop: ``if ctx.err() is not None: raise ctx.err()``.
        """
        if self._error is None and self._cancel_fd is not None:
            self._wait(0)
        return self._error

    @property
    def cancelled(self) -> bool:
        """True once the run has been asked to end (stop, timeout, shutdown)."""
        return self.err() is not None

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; return True if the full time elapsed, False if woken early.

        It wakes early (and returns False at once if already cancelled) when the run is
        asked to end; ``err()`` then tells why.
        """
        if self._error is not None:
            return False
        if self._cancel_fd is None:
            time.sleep(max(0.0, seconds))
            return True
        end = time.monotonic() + max(0.0, seconds)
        while True:
            remaining = end - time.monotonic()
            if self._wait(max(0.0, remaining)):
                return False
            if remaining <= 0:
                return True

    def _wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the cancel pipe; True once cancelled."""
        cancel_fd, woken_r = self._cancel_fd, self._woken_r
        if cancel_fd is None:  # closed
            return self._error is not None
        poller = select.poll()  # one per call: a poll object must not be shared by threads
        poller.register(cancel_fd, select.POLLIN)
        poller.register(woken_r, select.POLLIN)
        if not poller.poll(math.ceil(seconds * 1000)) or self._error is not None:
            return self._error is not None
        with self._lock:
            if self._error is None and self._cancel_fd is not None:
                try:
                    data = os.read(cancel_fd, 256)
                except BlockingIOError:  # another thread took it; look again later
                    return False
                except OSError:
                    data = b""
                reason = data.decode("ascii", "replace").strip().split("\n")[0] or "gone"
                self._error = Cancelled(reason)
                os.close(self._woken_w)
                self._woken_w = -1
        return self._error is not None


def json_safe(value: object, _depth: int = 0) -> Any:
    """``value`` made of JSON types only: other objects become their ``repr``."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT_CHARS else value[:MAX_TEXT_CHARS] + "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [json_safe(v, _depth + 1) for v in value]
    try:
        text = repr(value)
    except Exception as error:  # a broken __repr__ must not break logging
        text = f"<unrepresentable {type(value).__name__}: {error!r}>"
    return json_safe(text)


def make_record(
    run_id: str,
    level: Level,
    message: str,
    fields: Mapping[str, object] | None = None,
    *,
    created: float | None = None,
) -> LogRecord:
    """A logger record with the current time (or ``created``, epoch seconds)."""
    return LogRecord(
        time=datetime.fromtimestamp(time.time() if created is None else created, UTC),
        level=level,
        message=json_safe(str(message)),
        fields={str(k): json_safe(v) for k, v in fields.items()} if fields else NO_FIELDS,
        run_id=run_id,
        source=Source.LOGGER,
    )


class StructuredLogger:
    """A logger whose calls take structured fields: ``log.info("msg", value=42)``."""

    def __init__(self, sink: RecordSink, run_id: str) -> None:
        self._sink = sink
        self._run_id = run_id

    def log(self, level: Level, msg: str, /, **fields: object) -> None:
        self._sink.write(make_record(self._run_id, level, msg, fields))

    def debug(self, msg: str, /, **fields: object) -> None:
        self.log(Level.DEBUG, msg, **fields)

    def info(self, msg: str, /, **fields: object) -> None:
        self.log(Level.INFO, msg, **fields)

    def warning(self, msg: str, /, **fields: object) -> None:
        self.log(Level.WARNING, msg, **fields)

    def error(self, msg: str, /, **fields: object) -> None:
        self.log(Level.ERROR, msg, **fields)

    def critical(self, msg: str, /, **fields: object) -> None:
        self.log(Level.CRITICAL, msg, **fields)

    def exception(self, msg: str, /, **fields: object) -> None:
        """An ERROR record with the traceback of the exception being handled."""
        self.log(Level.ERROR, msg, **{**fields, "traceback": traceback.format_exc()})


def logger_from(ctx: RunContext) -> StructuredLogger:
    """The structured logger of the run ``ctx`` belongs to (``TypeError`` for anything but
    the context a run was handed)."""
    if not isinstance(ctx, Context):
        raise TypeError(f"logger_from needs the context a run was given, got {type(ctx).__name__}")
    return StructuredLogger(ctx.sink, ctx.run_id)
