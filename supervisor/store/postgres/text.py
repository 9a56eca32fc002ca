"""Text PostgreSQL can hold: it refuses the NUL character, which Python strings may carry.

Log messages keep theirs (stored as bytes, see ``schema``); in other text (run errors,
audit details, names) a NUL becomes U+FFFD, so a stray NUL never fails a write that a
caller would retry forever.
May import the stdlib only.
"""

from __future__ import annotations


def storable(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable(text)
