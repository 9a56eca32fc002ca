"""Text a run wrote, made safe to print on an operator's terminal.

A run controls its log messages, field values and output lines, so printed as they are
they could retitle the window (OSC), move the cursor, rewrite the line before (CR),
clear the screen or fake other records. ``printable`` shows every control character
visibly instead: C0 (but tab), DEL and C1 as ``\\xNN`` (ESC as ``\\x1b``, so an escape
sequence is shown, not obeyed), lone surrogates and the bidirectional overrides and
isolates (which reorder what is shown) as ``\\uNNNN``. A newline (or CR LF) starts a new
line indented under the record, so no line of a message can pass for a record.
``--json`` output never goes through here: it stays exact.

May import the stdlib only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

CONTINUATION: Final = "\n    "
# C0 except tab and newline, DEL, C1; lone surrogates; bidi embeddings/overrides/isolates.
_UNSAFE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, continuation: str = CONTINUATION) -> str:
    """``text`` with every control character shown visibly; newlines become
    ``continuation`` (a newline and an indent)."""
    lines = text.replace("\r\n", "\n").split("\n")
    return continuation.join(_UNSAFE.sub(_shown, line) for line in lines)


def log_line(record: Mapping[str, Any], *, when: str) -> str:
    """One ``logs`` record as text: time, level, source, message and ``key=value`` fields
    (values as JSON); everything the run wrote is passed through ``printable``."""
    fields = " ".join(
        f"{printable(str(key))}={printable(json.dumps(value, ensure_ascii=False))}"
        for key, value in record["fields"].items()
    )
    level = printable(str(record["level"]).upper())
    source = printable(str(record["source"]))
    message = printable(str(record["message"]))
    return f"{when} {level:<8} [{source}] {message}" + (f"  {fields}" if fields else "")
