"""journald in both directions: the native protocol writer, and reading ``journalctl -o json``.

**Writing** (``supervisor exec`` under systemd). One entry is one datagram of ``KEY=value``
lines sent to ``/run/systemd/journal/socket``; no libsystemd is needed. A value holding a
newline (or any byte journald would misread) is sent in the binary-safe form: ``KEY``,
newline, its length as a 64-bit little-endian integer, the value, newline. An entry too
large for a datagram goes in a sealed memfd passed with ``SCM_RIGHTS`` (journald reads the
file instead). Every entry of a run carries:

- ``MESSAGE``, ``PRIORITY`` (syslog: debug 7, info 6, warning 4, error 3, critical 2),
  ``SCHEDULER_ID``, ``RUN_ID``, ``SYSLOG_IDENTIFIER`` (the scheduler ID);
- ``SUPERVISOR_SOURCE``: ``logger``, ``stdout`` or ``stderr``; ``SUPERVISOR_TIME``: when
  the record was made (epoch microseconds; journald's own stamp is when it arrived);
- each structured field of the record as ``F_<NAME>``: the key upper-cased, every
  character other than ``A-Z``, ``0-9`` and ``_`` replaced by ``_``, cut to journald's 64
  characters (a clash gets ``_2``, ``_3``, ...). Strings are sent as they are, other
  values as JSON. ``SUPERVISOR_FIELDS`` maps each ``F_`` name back to its original key and
  says which values are JSON, so reading gives back exactly what was logged;
- run events (not log records): ``SUPERVISOR_EVENT=run_start`` with
  ``SUPERVISOR_TRIGGER``, and ``SUPERVISOR_EVENT=run_end`` with ``SUPERVISOR_OUTCOME`` and
  ``SUPERVISOR_ERROR``.

So ``journalctl SCHEDULER_ID=my.job F_VALUE=42`` finds what ``log.info("x", value=42)``
wrote.

**Reading** (the systemd backend). ``parse_json_lines`` reads ``journalctl -o json
--all`` output (binary values arrive as arrays of byte values, repeated fields as arrays
of values); ``to_log_record`` turns an entry back into a ``LogRecord``: our own records,
plain output lines the unit's ``LogExtraFields=`` marked (a stream line at warning
priority is stderr: ``exec`` gives stderr a stream of its own), and systemd's messages
about the unit (its exit status, ``Failed with result 'timeout'``). The cursor of an
entry is its ``__REALTIME_TIMESTAMP`` (microseconds).

May import ``records``, ``context`` (for ``json_safe``) and the standard library.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import struct
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Final

from supervisor.core.records import Level, LogQuery, LogRecord, Source
from supervisor.runs.context import json_safe

JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
FIELD_PREFIX: Final = "F_"
MAX_FIELD_NAME: Final = 64
# Entries larger than this go through a memfd without trying a datagram first.
DEFAULT_MAX_DATAGRAM: Final = 200 * 1024
SEND_BUFFER: Final = 8 * 1024 * 1024

EVENT_RUN_START: Final = "run_start"
EVENT_RUN_END: Final = "run_end"
# After a run of a scheduler with retries (``systemd.retry``): which try it was, and the
# retry planned after it, if any.
EVENT_RUN_RETRY: Final = "run_retry"

PRIORITIES: Final[Mapping[Level, int]] = {
    Level.DEBUG: 7,
    Level.INFO: 6,
    Level.WARNING: 4,
    Level.ERROR: 3,
    Level.CRITICAL: 2,
}
_INVALID_NAME_CHARS = re.compile(r"[^A-Z0-9_]")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

FieldValue = str | bytes


# -- encoding -----------------------------------------------------------------------------


def level_from_priority(priority: int) -> Level:
    """The level of a syslog priority (notice counts as info, alert/emerg as critical)."""
    if priority <= 2:
        return Level.CRITICAL
    if priority == 3:
        return Level.ERROR
    if priority == 4:
        return Level.WARNING
    if priority <= 6:
        return Level.INFO
    return Level.DEBUG


def journal_field_name(key: str) -> str:
    """``F_`` plus ``key`` made a valid journal field name (see the module docstring)."""
    name = FIELD_PREFIX + _INVALID_NAME_CHARS.sub("_", key.upper())
    return name[:MAX_FIELD_NAME]


def _as_bytes(value: FieldValue) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def encode_entry(fields: Iterable[tuple[str, FieldValue]]) -> bytes:
    """One entry in the native protocol: ``KEY=value`` lines, binary-safe where needed."""
    out = bytearray()
    for key, value in fields:
        data = _as_bytes(value)
        name = key.encode("ascii")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        suffix = f"_{number}"
        candidate = name[: MAX_FIELD_NAME - len(suffix)] + suffix
        number += 1
    taken.add(candidate)
    return candidate


def structured_fields(fields: Mapping[str, Any]) -> list[tuple[str, FieldValue]]:
    """The ``F_`` fields of a record's ``fields``, plus ``SUPERVISOR_FIELDS`` to read them back."""
    out: list[tuple[str, FieldValue]] = []
    names: dict[str, list[str]] = {}
    taken: set[str] = set()
    for key, value in fields.items():
        name = _unique(journal_field_name(str(key)), taken)
        if isinstance(value, str):
            out.append((name, value))
            names[name] = [str(key), "text"]
        else:
            out.append((name, _JSON.encode(json_safe(value))))
            names[name] = [str(key), "json"]
    if names:
        out.append(("SUPERVISOR_FIELDS", _JSON.encode(names)))
    return out


def _usec(moment: datetime) -> str:
    return str(round(moment.timestamp() * 1_000_000))


def record_entry(record: LogRecord, *, scheduler_id: str) -> list[tuple[str, FieldValue]]:
    """The journal fields of one log record of a run of ``scheduler_id``."""
    return [
        ("MESSAGE", record.message),
        ("PRIORITY", str(PRIORITIES[record.level])),
        ("SCHEDULER_ID", scheduler_id),
        ("RUN_ID", record.run_id),
        ("SYSLOG_IDENTIFIER", scheduler_id),
        ("SUPERVISOR_SOURCE", record.source.value),
        ("SUPERVISOR_TIME", _usec(record.time)),
        *structured_fields(record.fields),
    ]


def event_entry(
    event: str,
    *,
    scheduler_id: str,
    run_id: str,
    message: str,
    level: Level = Level.INFO,
    extra: Mapping[str, str] | None = None,
) -> list[tuple[str, FieldValue]]:
    """A run event (``run_start``/``run_end``): not a log record; the backend reads runs from it."""
    fields: list[tuple[str, FieldValue]] = [
        ("MESSAGE", message),
        ("PRIORITY", str(PRIORITIES[level])),
        ("SCHEDULER_ID", scheduler_id),
        ("RUN_ID", run_id),
        ("SYSLOG_IDENTIFIER", scheduler_id),
        ("SUPERVISOR_EVENT", event),
    ]
    fields.extend((key, value) for key, value in (extra or {}).items())
    return fields


# -- the socket ---------------------------------------------------------------------------


class JournalSocket:
    """A datagram socket to journald. ``send`` raises ``OSError`` when journald is unreachable."""

    def __init__(
        self, path: str = JOURNAL_SOCKET, *, max_datagram: int = DEFAULT_MAX_DATAGRAM
    ) -> None:
        self.path = path
        self._max_datagram = max_datagram
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(OSError):
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    @staticmethod
    def available(path: str = JOURNAL_SOCKET) -> bool:
        """Whether journald listens on ``path`` (a test send of an empty datagram)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                return False
        return True

    def send(self, fields: Iterable[tuple[str, FieldValue]]) -> None:
        data = encode_entry(fields)
        if len(data) <= self._max_datagram:
            try:
                self._socket.sendto(data, self.path)
                return
            except OSError as error:
                if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
        self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            self._socket.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._socket.close()


# -- record sinks -------------------------------------------------------------------------


class JournalSink:
    """A ``RecordSink`` writing a run's records to journald.

    If journald cannot be reached, the record goes to ``fallback`` as a JSON line instead
    (under systemd, stderr is itself a journal stream), so nothing is lost silently.
    """

    def __init__(
        self, scheduler_id: str, journal: JournalSocket, *, fallback: IO[str] | None = None
    ) -> None:
        self.scheduler_id = scheduler_id
        self._journal = journal
        self._fallback = fallback
        self._lock = threading.Lock()

    def close(self) -> None:
        self._journal.close()

    def write(self, record: LogRecord) -> None:
        try:
            self._journal.send(record_entry(record, scheduler_id=self.scheduler_id))
        except OSError:
            with self._lock:
                write_json_line(self._fallback or sys.stderr, record, self.scheduler_id)

    def event(
        self,
        event: str,
        *,
        run_id: str,
        message: str,
        level: Level = Level.INFO,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        fields = event_entry(
            event,
            scheduler_id=self.scheduler_id,
            run_id=run_id,
            message=message,
            level=level,
            extra=extra,
        )
        try:
            self._journal.send(fields)
        except OSError:
            with self._lock:
                stream = self._fallback or sys.stderr
                obj = {key: _as_bytes(value).decode("utf-8", "replace") for key, value in fields}
                stream.write(_JSON.encode(obj) + "\n")
                stream.flush()


class JsonLinesSink:
    """A ``RecordSink`` writing each record as one JSON line (outside systemd: on stderr).

    The line has the ``logs --json`` shape plus ``scheduler_id``.
    """

    def __init__(self, scheduler_id: str, stream: IO[str]) -> None:
        self.scheduler_id = scheduler_id
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, record: LogRecord) -> None:
        with self._lock:
            write_json_line(self._stream, record, self.scheduler_id)

    def event(
        self,
        event: str,
        *,
        run_id: str,
        message: str,
        level: Level = Level.INFO,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Run events are for journald; outside it they are not printed."""


def write_json_line(stream: IO[str], record: LogRecord, scheduler_id: str) -> None:
    line = {
        "time": record.time.isoformat(),
        "level": record.level.name.lower(),
        "message": record.message,
        "fields": dict(record.fields),
        "run_id": record.run_id,
        "source": record.source.value,
        "scheduler_id": scheduler_id,
    }
    with contextlib.suppress(OSError, ValueError):
        stream.write(_JSON.encode(json_safe(line)) + "\n")
        stream.flush()


# -- reading ------------------------------------------------------------------------------

Entry = Mapping[str, str]


def _decode_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return bytes(value).decode("utf-8", "replace")
        # A field repeated in one entry: its values in order; keep the first.
        for item in value:
            decoded = _decode_value(item)
            if decoded is not None:
                return decoded
        return None
    return str(value)


def parse_json_lines(text: str) -> list[dict[str, str]]:
    """The entries of ``journalctl -o json`` output; values decoded to text (UTF-8, replace)."""
    entries: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if not isinstance(raw, dict):
            continue
        entry: dict[str, str] = {}
        for key, value in raw.items():
            decoded = _decode_value(value)
            if decoded is not None:
                entry[str(key)] = decoded
        entries.append(entry)
    return entries


def cursor_of(entry: Entry) -> int:
    """The entry's position for paging: journald's receive time in microseconds."""
    try:
        return int(entry["__REALTIME_TIMESTAMP"])
    except (KeyError, ValueError):
        return 0


def time_of(entry: Entry) -> datetime:
    """When the entry was made (our own stamp, else the sender's, else journald's)."""
    for key in ("SUPERVISOR_TIME", "_SOURCE_REALTIME_TIMESTAMP", "__REALTIME_TIMESTAMP"):
        text = entry.get(key)
        if text is not None and text.isdigit():
            return datetime.fromtimestamp(int(text) / 1_000_000, UTC)
    return datetime.fromtimestamp(0, UTC)


def run_id_of(entry: Entry) -> str:
    """The run an entry belongs to: ``RUN_ID``, else the unit invocation it came from."""
    return (
        entry.get("RUN_ID")
        or entry.get("_SYSTEMD_INVOCATION_ID")
        or entry.get("INVOCATION_ID")
        or ""
    )


def is_event(entry: Entry) -> bool:
    return "SUPERVISOR_EVENT" in entry


def is_systemd_message(entry: Entry) -> bool:
    """A message systemd (PID 1) logged about a unit."""
    return "UNIT" in entry and entry.get("_PID") == "1"


def record_fields(entry: Entry) -> dict[str, Any]:
    """The structured fields of one of our records, as they were logged (in their order)."""
    names: dict[str, Any] = {}
    with contextlib.suppress(ValueError, TypeError):
        loaded = json.loads(entry.get("SUPERVISOR_FIELDS", "{}"))
        if isinstance(loaded, dict):
            names = loaded
    fields: dict[str, Any] = {}
    for name, known in names.items():
        text = entry.get(name)
        if text is None or not isinstance(known, list) or len(known) != 2:
            continue
        key, kind = str(known[0]), known[1]
        if kind == "json":
            try:
                fields[key] = json.loads(text)
            except ValueError:
                fields[key] = text
        else:
            fields[key] = text
    for name, text in entry.items():
        if name.startswith(FIELD_PREFIX) and name not in names:
            fields[name[len(FIELD_PREFIX) :].lower()] = text
    return fields


def to_log_record(entry: Entry) -> LogRecord | None:
    """The log record an entry stands for; None for run events."""
    if is_event(entry):
        return None
    try:
        level = level_from_priority(int(entry.get("PRIORITY", "6")))
    except ValueError:
        level = Level.INFO
    source_name = entry.get("SUPERVISOR_SOURCE")
    fields: dict[str, Any]
    if source_name is not None:
        try:
            source = Source(source_name)
        except ValueError:
            source = Source.LOGGER
        fields = record_fields(entry)
    elif is_systemd_message(entry):
        source = Source.LOGGER
        fields = {"origin": "systemd"}
    elif entry.get("_TRANSPORT") == "stdout":
        # ``supervisor exec`` gives stderr a stream of its own at warning priority.
        source = Source.STDERR if entry.get("PRIORITY") == "4" else Source.STDOUT
        fields = {}
    else:
        source = Source.LOGGER
        fields = record_fields(entry)
    return LogRecord(
        time=time_of(entry),
        level=level,
        message=entry.get("MESSAGE", ""),
        fields=fields,
        run_id=run_id_of(entry),
        source=source,
    )


def journalctl_matches(
    *,
    scheduler_id: str,
    service: str | None = None,
    run_id: str | None = None,
) -> list[str]:
    """``journalctl`` match arguments for a scheduler's entries (optionally one run's).

    Our records carry ``SCHEDULER_ID``; systemd's own messages about the service carry
    ``UNIT``. Terms in one group are ANDed, groups joined by ``+`` are ORed.
    """
    groups: list[list[str]] = []
    if run_id is None:
        groups.append([f"SCHEDULER_ID={scheduler_id}"])
        if service is not None:
            groups.append([f"UNIT={service}", "_PID=1"])
    else:
        groups.append([f"SCHEDULER_ID={scheduler_id}", f"RUN_ID={run_id}"])
        groups.append([f"SCHEDULER_ID={scheduler_id}", f"_SYSTEMD_INVOCATION_ID={run_id}"])
        if service is not None:
            groups.append([f"UNIT={service}", "_PID=1", f"INVOCATION_ID={run_id}"])
    out: list[str] = []
    for index, group in enumerate(groups):
        if index:
            out.append("+")
        out.extend(group)
    return out


def journalctl_search(query: LogQuery, *, units: Sequence[tuple[str, str | None]]) -> list[str]:
    """``journalctl`` arguments for the entries that may match ``query``, of the
    schedulers in ``units`` (scheduler ID, its service or None); the caller applies
    ``LogQuery.matches`` to what comes back, which decides.

    What maps onto journald: schedulers and run (matches), ``min_level`` (``-p``),
    ``since`` (``--since``: journald receives an entry after it is made), ``fields``
    (``F_<NAME>=value`` matches: a field's text is what ``structured_fields`` sent). What
    does not: ``text`` (``--grep`` reads MESSAGE only, our text also matches fields),
    ``until`` (an entry can be received after ``until`` though made before), and a
    field whose journal name took a ``_2`` suffix (two keys spelled alike) is not found
    by its key.
    """
    ids = [scheduler_id for scheduler_id, _ in units]
    services = [service for _, service in units if service is not None]
    ours = [f"SCHEDULER_ID={scheduler_id}" for scheduler_id in ids]
    ours += [f"{journal_field_name(k)}={v}" for k, v in query.fields]
    groups: list[list[str]] = []
    if query.run_id is None:
        groups.append(ours)
    else:
        groups.append([*ours, f"RUN_ID={query.run_id}"])
        groups.append([*ours, f"_SYSTEMD_INVOCATION_ID={query.run_id}"])
    # systemd's messages about a unit carry one field: origin=systemd
    if services and all(name == "origin" for name, _ in query.fields):
        systemd = [f"UNIT={service}" for service in services] + ["_PID=1"]
        if query.run_id is not None:
            systemd.append(f"INVOCATION_ID={query.run_id}")
        groups.append(systemd)
    args: list[str] = []
    if query.min_level is not None:
        args.extend(["-p", f"0..{PRIORITIES[query.min_level]}"])
    if query.since is not None:
        args.append(f"--since=@{query.since.timestamp():.6f}")
    for index, group in enumerate(groups):
        if index:
            args.append("+")
        args.extend(group)
    return args
