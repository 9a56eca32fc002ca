"""The records pipe from a run's process to the manager: versioned JSON lines.

One JSON object per line, UTF-8, each carrying ``"v": 1`` and a ``"type"``:

- ``log``: ``time`` (epoch seconds, float), ``level`` (stdlib number), ``message``,
  ``fields`` (an object of JSON values);
- ``exec``: ``argv``; the run became an external program, so its outcome is its exit status;
- ``result``: the runner's end, written once: ``outcome`` (``succeeded`` or ``failed``),
  ``error``, ``traceback``, ``value`` (a custom action's return value as text),
  ``exit_code`` (the status the process exits with; null: 0 or 1 by the outcome).

Decoding never raises: an unknown version, a garbled or an over-long line becomes an
ERROR record saying so, and the reader goes on. Control messages travel only here,
never in stdout. May import ``records`` and the stdlib only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from supervisor.core.records import Level, LogRecord, Outcome, Source

VERSION: Final = 1
# The longest line the reader accepts; the writer keeps every line below it.
MAX_LINE_BYTES: Final = 1024 * 1024
_NO_FIELDS: Final[Mapping[str, Any]] = MappingProxyType({})
_LEVELS: Final = {int(level): level for level in Level}
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=repr
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """How a runner (or custom action) ended, as its process reports it."""

    outcome: Outcome  # SUCCEEDED or FAILED
    error: str | None = None  # the message shown to people (first line: a summary)
    traceback: str | None = None
    value: str | None = None  # a custom action's return value, as text
    # The status the process exits with, if not the outcome's usual 0 or 1 (sys.exit(3)).
    exit_code: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in (Outcome.SUCCEEDED, Outcome.FAILED):
            raise ValueError(f"a runner ends succeeded or failed, not {self.outcome.value}")
        if self.exit_code is not None:
            if isinstance(self.exit_code, bool) or not 0 <= self.exit_code <= 255:
                raise ValueError(f"exit_code must be 0..255, not {self.exit_code!r}")
            if (self.exit_code == 0) != (self.outcome is Outcome.SUCCEEDED):
                raise ValueError(f"exit_code {self.exit_code} contradicts {self.outcome.value}")

    @property
    def status(self) -> int:
        """The exit status of a run's process that ended this way."""
        if self.exit_code is not None:
            return self.exit_code
        return 0 if self.outcome is Outcome.SUCCEEDED else 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecNotice:
    """The run's process is about to become ``argv``: its exit status is the outcome."""

    argv: tuple[str, ...]


Message = LogRecord | RunResult | ExecNotice


def _line(obj: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8", "replace") + b"\n"


def encode_log(record: LogRecord) -> bytes:
    """One ``log`` line; never raises. A record too long for the pipe is cut, with a field
    saying so; one that cannot be encoded (a value ``json_safe`` would have replaced)
    keeps its message, and its fields say why they are missing."""
    try:
        return _encode_log(record)
    except Exception as error:
        obj = {
            "v": VERSION,
            "type": "log",
            "time": record.time.timestamp(),
            "level": int(record.level),
            "message": str.__str__(record.message)[:4096]
            if isinstance(record.message, str)
            else "<unrepresentable message>",
            "fields": {"unencodable": f"<unrepresentable fields: {type(error).__name__}>"},
        }
        return _line(obj)


def _encode_log(record: LogRecord) -> bytes:
    obj = {
        "v": VERSION,
        "type": "log",
        "time": record.time.timestamp(),
        "level": int(record.level),
        "message": record.message,
        "fields": dict(record.fields),
    }
    line = _line(obj)
    if len(line) >= MAX_LINE_BYTES:
        obj["message"] = record.message[:4096]
        obj["fields"] = {"truncated": True, "original_bytes": len(line)}
        line = _line(obj)
    return line


# A runner that returned: the one result of most runs, and its line, made once (a forked
# run then sends it without running the encoder, which cost it some 25 page copies).
SUCCEEDED: Final = RunResult(outcome=Outcome.SUCCEEDED)


def encode_result(result: RunResult) -> bytes:
    if result is SUCCEEDED:
        return _SUCCEEDED_LINE
    return _encode_result(result)


def _encode_result(result: RunResult) -> bytes:
    obj = {
        "v": VERSION,
        "type": "result",
        "outcome": result.outcome.value,
        "error": result.error,
        "traceback": result.traceback,
        "value": result.value,
        "exit_code": result.exit_code,
    }
    line = _line(obj)
    if len(line) >= MAX_LINE_BYTES:
        limit = MAX_LINE_BYTES // 8
        for key in ("error", "traceback", "value"):
            text = obj[key]
            if isinstance(text, str) and len(text) > limit:
                obj[key] = text[:limit] + "… (cut)"
        line = _line(obj)
    return line


_SUCCEEDED_LINE: Final = _encode_result(SUCCEEDED)


def encode_exec(argv: Sequence[str]) -> bytes:
    return _line({"v": VERSION, "type": "exec", "argv": list(argv)})


def problem_record(run_id: str, problem: str, line: bytes | str = b"") -> LogRecord:
    """An ERROR record about the records pipe itself (garbage, unknown version, ...)."""
    sample = line if isinstance(line, str) else line[:200].decode("utf-8", "replace")
    return LogRecord(
        time=datetime.now(UTC),
        level=Level.ERROR,
        message=f"unreadable record from the run: {problem}",
        fields={"line": sample} if sample else _NO_FIELDS,
        run_id=run_id,
        source=Source.LOGGER,
    )


def decode(line: bytes, *, run_id: str) -> Message:
    """The message on ``line`` (without or with its newline); never raises."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return problem_record(run_id, "not a JSON line", line)
    if not isinstance(obj, dict):
        return problem_record(run_id, "not a JSON object", line)
    version = obj.get("v")
    if version != VERSION:
        return problem_record(run_id, f"unsupported format version {version!r}", line)
    kind = obj.get("type")
    try:
        if kind == "log":
            return _decode_log(obj, run_id)
        if kind == "result":
            return RunResult(
                outcome=Outcome(obj["outcome"]),
                error=_optional_text(obj.get("error")),
                traceback=_optional_text(obj.get("traceback")),
                value=_optional_text(obj.get("value")),
                exit_code=_optional_code(obj.get("exit_code")),
            )
        if kind == "exec":
            argv = obj["argv"]
            if not isinstance(argv, list):
                raise TypeError("argv")
            return ExecNotice(argv=tuple(str(a) for a in argv))
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        return problem_record(run_id, f"malformed {kind} record ({error})", line)
    return problem_record(run_id, f"unknown record type {kind!r}", line)


def _decode_log(obj: dict[str, Any], run_id: str) -> LogRecord:
    stamp = obj.get("time")
    level = obj.get("level")
    fields = obj.get("fields")
    message = obj.get("message")
    return LogRecord(
        time=datetime.fromtimestamp(stamp if isinstance(stamp, int | float) else time.time(), UTC),
        level=_level(level),
        message=message if isinstance(message, str) else str(message),
        fields=fields if isinstance(fields, dict) and fields else _NO_FIELDS,
        run_id=run_id,
        source=Source.LOGGER,
    )


def _level(value: object) -> Level:
    if isinstance(value, bool) or not isinstance(value, int):
        return Level.INFO
    return _LEVELS.get(value) or Level.from_number(value)


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _optional_code(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("exit_code")
    return value
