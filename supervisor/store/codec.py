"""How stored values are written down and checked, shared by every store so all answer alike.

Times as fixed-width UTC text or microseconds, setting overrides and audit values as
tagged JSON (durations and times keep their type), log fields as compact ASCII JSON that
never fails, operators' decisions as JSON, and the text of the markers a store writes
into a run's log.
May import ``core.access``, ``core.errors``, ``core.records`` and the stdlib.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from supervisor.core.access import ROLES
from supervisor.core.errors import DefinitionError, StoreError
from supervisor.core.records import Decision, DecisionKind

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_SURROGATES: Final = re.compile("[\ud800-\udfff]")


# -- times ----------------------------------------------------------------------------------


def ts(value: datetime) -> str:
    """An aware datetime as fixed-width ISO 8601 in UTC (so text order is time order)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store takes aware UTC datetimes")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def parse_ts_or_none(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


def microseconds(value: datetime) -> int:
    """An aware datetime as microseconds since the Unix epoch (logs keep time this way)."""
    try:
        return (value - EPOCH) // _MICROSECOND
    except TypeError:
        raise ValueError(f"naive datetime {value!r}: the store takes aware UTC datetimes") from None


def from_microseconds(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def require_aware(value: datetime) -> datetime:
    """``value`` in UTC; ``ValueError`` if it is naive."""
    return parse_ts(ts(value))


# -- log text and fields ----------------------------------------------------------------------


def valid_text(message: str) -> tuple[str, int]:
    """``message`` as storable UTF-8 (lone surrogates become U+FFFD) and its UTF-8 size."""
    try:
        return message, len(message.encode())
    except UnicodeEncodeError:
        message = _SURROGATES.sub("\ufffd", message)
        return message, len(message.encode())


def _plain_fallback(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | timedelta):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


_FIELDS_ENCODER: Final = json.JSONEncoder(
    separators=(",", ":"), default=_plain_fallback, allow_nan=False
)


def _finite(value: object) -> object:
    """``value`` with every NaN or infinite float (strict JSON has none) as its repr."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def encode_fields(fields: Mapping[str, Any]) -> str:
    """Log fields as compact ASCII strict JSON; never fails (odd values, NaN and
    infinities become strings)."""
    try:
        return _FIELDS_ENCODER.encode(fields if isinstance(fields, dict) else dict(fields))
    except (TypeError, ValueError):
        pass
    try:
        return _FIELDS_ENCODER.encode({str(key): _finite(value) for key, value in fields.items()})
    except (TypeError, ValueError, RecursionError):
        return _FIELDS_ENCODER.encode({str(key): repr(value) for key, value in fields.items()})


def decode_fields(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    decoded: dict[str, Any] = json.loads(text)
    return decoded


def human_bytes(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.1f} KiB"
    return f"{size} bytes"


def truncation_marker(cap: int) -> tuple[str, str]:
    """Message and fields JSON of the record that ends a run's log cut at ``cap`` bytes."""
    return (
        f"log truncated: this run exceeded {human_bytes(cap)} of log; later records were dropped",
        encode_fields({"limit_bytes": cap}),
    )


def loss_marker(*, records: int, size: int, reason: str) -> tuple[str, str]:
    """Message and fields JSON of the record telling that records never reached the store."""
    reason = " ".join(reason.split()) or "the store failed"
    plural = "record" if records == 1 else "records"
    return (
        f"log incomplete: {records} {plural} ({human_bytes(size)}) of this run could not be"
        f" stored ({reason})",
        encode_fields({"lost_records": records, "lost_bytes": size}),
    )


# -- settings and audit values --------------------------------------------------------------


def _tagged(value: object) -> object:
    """JSON for values JSON cannot hold: durations and times keep their type."""
    if isinstance(value, timedelta):
        seconds = value.days * 86400 + value.seconds
        tagged: dict[str, object] = {"$type": "duration", "seconds": seconds}
        if value.microseconds:
            tagged["microseconds"] = value.microseconds
        return tagged
    if isinstance(value, datetime):
        return {"$type": "datetime", "iso": value.isoformat()}
    return _plain_fallback(value)


def _untagged(obj: dict[str, Any]) -> object:
    kind = obj.get("$type")
    if kind == "duration":
        return timedelta(seconds=obj["seconds"], microseconds=obj.get("microseconds", 0))
    if kind == "datetime":
        return datetime.fromisoformat(obj["iso"])
    return obj


_VALUES_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_tagged)


def encode_values(values: Mapping[str, Any]) -> str:
    return _VALUES_ENCODER.encode(dict(values))


def decode_values(text: str) -> dict[str, Any]:
    decoded = json.loads(text, object_hook=_untagged)
    if not isinstance(decoded, dict):
        raise StoreError(f"stored values are not a JSON object: {text[:60]!r}")
    return decoded


def encode_overrides(overrides: Mapping[str, Any]) -> str:
    """Overrides as tagged JSON; ``DefinitionError`` naming a value no setting can hold."""
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise DefinitionError(str(name), "a setting name must be a string")
        if not (value is None or isinstance(value, timedelta | str | int)):
            raise DefinitionError(
                name, f"cannot store a value of type {type(value).__name__} as a setting"
            )
    return encode_values(overrides)


# -- operators' decisions ------------------------------------------------------------------


def encode_decision(decision: Decision) -> str:
    """A decision as JSON (times ISO 8601 UTC); ``ValueError`` for anything else."""
    if not isinstance(decision, Decision):
        raise ValueError(f"not a Decision: {type(decision).__name__}")
    return json.dumps(
        {
            "kind": decision.kind.value,
            "actor": decision.actor,
            "at": ts(decision.at),
            "reason": decision.reason,
            "until": ts_or_none(decision.until),
        },
        separators=(",", ":"),
    )


def decode_decision(text: str) -> Decision:
    """The decision ``encode_decision`` wrote; ``StoreError`` if the text is not one."""
    try:
        raw = json.loads(text)
        return Decision(
            kind=DecisionKind(raw["kind"]),
            actor=raw["actor"],
            at=parse_ts(raw["at"]),
            reason=raw.get("reason"),
            until=parse_ts_or_none(raw.get("until")),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"a stored decision cannot be read ({error}): {text[:60]!r}") from None


# -- users ----------------------------------------------------------------------------------


def check_new_user(name: str, role: str) -> None:
    """``DefinitionError`` for an empty name or an unknown role (every store checks alike)."""
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("name", "must be a non-empty string")
    if role not in ROLES:
        raise DefinitionError("role", f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
