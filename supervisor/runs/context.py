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
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol, cast

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
    """``value`` made of JSON types only, always encodable; never raises.

    Other objects become their ``repr``. What cannot be shown as it is becomes a text
    starting with ``<unrepresentable`` (``UNREPRESENTABLE``): an int too long for
    ``str()`` (over Python's 4,300-digit limit), an object whose ``repr`` raises, a
    container that contains itself, or what lies beyond ``MAX_NODES`` values in all.
    """
    return _Safe().convert(value, _depth)


# Values that could not be shown as they are start with this text.
UNREPRESENTABLE: Final = "<unrepresentable"
# At most this many values are converted for one call (shared objects cannot multiply it).
MAX_NODES: Final = 50_000
# ... and at most this many characters of text (a record must fit the records pipe).
MAX_CHARS: Final = 512 * 1024
# sys.set_int_max_str_digits() accepts no limit below 640 digits.
_SHORT_INT: Final = 10**639
_SHORT_TEXT: Final = 4096  # shorter texts need no cutting (they still count)
_REST_CUT: Final = (
    f"{UNREPRESENTABLE}: over {MAX_NODES} values or {MAX_CHARS} characters, the rest cut>"
)


class _Safe:
    """One ``json_safe`` conversion: its node budget and the containers being walked."""

    __slots__ = ("budget", "chars", "walking")

    def __init__(self) -> None:
        self.budget = MAX_NODES
        self.chars = MAX_CHARS
        self.walking: set[int] = set()

    def convert(self, value: object, depth: int) -> Any:
        try:
            return self._convert(value, depth)
        except BaseException as error:  # e.g. a __class__ that raises
            return f"{UNREPRESENTABLE} value: converting it raised {type_name(error)}>"

    def _convert(self, value: object, depth: int) -> Any:
        self.budget -= 1
        kind = type(value)  # exact types first: the common case, and no user code runs
        if kind in _PLAIN and _plain(value):
            if kind is str:
                self.chars -= len(cast(str, value)) or 1
            return value
        if kind is not dict and kind is not list and kind is not tuple:
            if isinstance(value, bool):
                return bool(value)
            if isinstance(value, int):
                return self._int(value)
            if isinstance(value, str):
                return self._text(str.__str__(value))
            if isinstance(value, float):
                number = float.__float__(value)
                return number if math.isfinite(number) else repr(number)
        if self.exhausted:
            return _REST_CUT
        if (
            kind is dict
            or kind is list
            or kind is tuple
            or isinstance(value, Mapping | list | tuple)
        ):
            if depth >= _MAX_DEPTH:  # its repr could be as big as everything below it
                return self._text(
                    f"{UNREPRESENTABLE} {type_name(value)}: nested over {_MAX_DEPTH} deep>"
                )
            walked = id(value)
            if walked in self.walking:
                return f"{UNREPRESENTABLE} {type_name(value)}: it contains itself>"
            self.walking.add(walked)
            try:
                return self._container(cast(_Container, value), depth)
            except BaseException:  # a broken container: shown by its repr
                return self._text(safe_repr(value))
            finally:
                self.walking.discard(walked)
        return self._text(safe_repr(value))

    @property
    def exhausted(self) -> bool:
        return self.budget < 0 or self.chars < 0

    def _text(self, text: str) -> str:
        if len(text) > self.chars:
            text = text[: max(0, self.chars)] + f"… {UNREPRESENTABLE}: the rest cut>"
        self.chars -= len(text) or 1
        return _cut(text)

    def _container(self, value: _Container, depth: int) -> Any:
        # Plain items are taken here, without a call each: this is the hot path of logging.
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if self.exhausted:
                    out["…"] = _REST_CUT
                    break
                name = key if type(key) is str else self._key(key)
                kind = type(item)
                if kind is str and len(item) <= _SHORT_TEXT:
                    self.budget -= 1
                    self.chars -= len(item) or 1
                    out[name] = item
                elif (
                    item is None
                    or kind is bool
                    or (kind is int and -_SHORT_INT < item < _SHORT_INT)
                ):
                    self.budget -= 1
                    out[name] = item
                else:
                    out[name] = self.convert(item, depth + 1)
            return out
        items: list[Any] = []
        for item in value:
            if self.exhausted:
                items.append(_REST_CUT)
                break
            kind = type(item)
            if kind is str and len(item) <= _SHORT_TEXT:
                self.budget -= 1
                self.chars -= len(item) or 1
                items.append(item)
            elif item is None or kind is bool or (kind is int and -_SHORT_INT < item < _SHORT_INT):
                self.budget -= 1
                items.append(item)
            else:
                items.append(self.convert(item, depth + 1))
        return items

    @staticmethod
    def _key(key: object) -> str:
        if type(key) is str:
            return key
        text = safe_str(key)
        return text if text is not None else f"{UNREPRESENTABLE} key of type {type_name(key)}>"

    @staticmethod
    def _int(value: int) -> int | str:
        number = int.__int__(value)  # an exact int: a subclass's methods are not called
        if -_SHORT_INT < number < _SHORT_INT:  # fewer digits than any limit Python allows
            return number
        try:
            int.__repr__(number)  # what the JSON encoder will call
        except ValueError:  # over sys.get_int_max_str_digits()
            return f"{UNREPRESENTABLE} int: {number.bit_length()} bits, too long to show>"
        return number


_Container = Mapping[Any, Any] | list[Any] | tuple[Any, ...]
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})


def _plain(value: object) -> bool:
    """Is ``value`` (of an exact type in ``_PLAIN``) kept as it is?"""
    if type(value) is str:
        return len(value) <= _SHORT_TEXT
    if type(value) is int:
        return -_SHORT_INT < value < _SHORT_INT
    if type(value) is float:
        return math.isfinite(value)
    return True


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


_TYPE_NAME = type.__dict__["__name__"]


def type_name(value: object) -> str:
    """The name of ``value``'s type (never raises: read from ``type`` itself, so a
    metaclass property named ``__name__`` is never called)."""
    try:
        name = _TYPE_NAME.__get__(type(value))
    except BaseException:  # nothing a value does may escape
        return "object"
    return name if isinstance(name, str) else "object"


def safe_repr(value: object) -> str:
    """``repr(value)``, or a text saying it could not be made (never raises)."""
    try:
        text = repr(value)
        return str.__str__(text)
    # A broken __repr__ must not break logging, not even one raising SystemExit or
    # KeyboardInterrupt (cancellation reaches a run through its context, not these).
    except BaseException as error:
        return f"{UNREPRESENTABLE} {type_name(value)}: repr() raised {type_name(error)}>"


def safe_str(value: object) -> str | None:
    """``str(value)``, or None when ``str()`` raises (never raises)."""
    try:
        text = str(value)
        return str.__str__(text)
    except BaseException:  # see safe_repr
        return None


def make_record(
    run_id: str,
    level: Level,
    message: object,
    fields: Mapping[str, object] | None = None,
    *,
    created: float | None = None,
) -> LogRecord:
    """A logger record with the current time (or ``created``, epoch seconds); never raises
    for ``message`` or ``fields`` (see ``json_safe``)."""
    text = message if isinstance(message, str) else safe_str(message)
    if text is None:
        text = f"{UNREPRESENTABLE} message: str() of a {type_name(message)} raised>"
    safe = json_safe(fields) if fields else NO_FIELDS
    if not isinstance(safe, Mapping):  # a broken mapping: keep what it was, marked
        safe = {"fields": safe}
    return LogRecord(
        time=datetime.fromtimestamp(time.time() if created is None else created, UTC),
        level=level,
        message=_cut(str.__str__(text)),
        fields=safe,
        run_id=run_id,
        source=Source.LOGGER,
    )


class StructuredLogger:
    """A logger whose calls take structured fields: ``log.info("msg", value=42)``."""

    def __init__(self, sink: RecordSink, run_id: str) -> None:
        self._sink = sink
        self._run_id = run_id

    def log(self, level: Level, msg: str, /, **fields: object) -> None:
        """Write one record; never raises (a record that cannot be written is replaced by
        one saying so, and if even that fails, by a line on stderr)."""
        try:
            self._sink.write(make_record(self._run_id, level, msg, fields))
        except Exception as error:
            _record_lost(self._sink, self._run_id, level, error)

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


def _record_lost(sink: RecordSink, run_id: str, level: Level, error: Exception) -> None:
    problem = f"{UNREPRESENTABLE} record: writing it raised {type_name(error)}>"
    try:
        sink.write(make_record(run_id, level, problem))
    except Exception:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"a log record was lost: {problem}\n")


def logger_from(ctx: RunContext) -> StructuredLogger:
    """The structured logger of the run ``ctx`` belongs to (``TypeError`` for anything but
    the context a run was handed)."""
    if not isinstance(ctx, Context):
        raise TypeError(f"logger_from needs the context a run was given, got {type(ctx).__name__}")
    return StructuredLogger(ctx.sink, ctx.run_id)
