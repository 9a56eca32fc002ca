"""HTTP replies and request values of the Admin Center, hostile input in mind.

Replies are encoded here (text that cannot be UTF-8, such as a lone surrogate a scheduler
definition carried in, is replaced, never a 500). Request values (cursors, levels, cookie
tokens, redirect targets) are parsed here and refused with ``Refused`` (a status and a
short reason) when they are not what they claim.
May import ``records``, ``render`` (URLs), bottle and the stdlib.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import bottle

from supervisor.core.records import Level

MAX_CURSOR_DIGITS = 18


class Refused(Exception):
    """Ends a request early with a status (and a short reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


def reply(body: str | bytes, status: int, *, content_type: str | None = None) -> Any:
    data = encode(body) if isinstance(body, str) else body
    response = bottle.HTTPResponse(body=data, status=status)
    response.set_header("Content-Type", content_type or "text/html; charset=utf-8")
    return response


def text_reply(text: str, status: int) -> Any:
    return reply(text + "\n", status, content_type="text/plain; charset=utf-8")


def json_reply(data: Any, status: int = 200) -> Any:
    return reply(json.dumps(data), status, content_type="application/json")


def redirect(location: str) -> Any:
    response = bottle.HTTPResponse(body="", status=303)
    response.set_header("Location", location)
    return response


def event_stream(stream: Iterator[str], release: Callable[[], None]) -> Any:
    """A server-sent-events reply; ``release`` runs once the stream ends, however it ends."""

    def guarded() -> Iterator[bytes]:
        try:
            for chunk in stream:
                yield encode(chunk)
        finally:
            stream_close = getattr(stream, "close", None)
            if stream_close is not None:
                stream_close()
            release()

    response = bottle.HTTPResponse(body=guarded(), status=200)
    response.set_header("Content-Type", "text/event-stream; charset=utf-8")
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Accel-Buffering", "no")
    return response


def peer_gone(connection: socket.socket) -> bool:
    """Whether the client closed its end (a readable socket that reads as end-of-file)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def cookie(environ: Mapping[str, Any], name: str) -> str | None:
    """The value of cookie ``name``; None if absent or not plain ASCII."""
    header = str(environ.get("HTTP_COOKIE", ""))
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value if value.isascii() and value.isprintable() else None
    return None


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site; ``/`` otherwise (no open redirects)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or not target.isascii()
        or any(ord(c) < 32 or ord(c) == 127 for c in target)
        or len(target) > 2048
    ):
        return "/"
    return target


def cursor(text: str | None) -> int | None:
    """A paging cursor: ASCII digits only (``²`` and ``①`` are digits to ``str.isdigit``)."""
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_CURSOR_DIGITS:
        raise Refused(400, "a cursor must be a whole number")
    return int(text)


def level(text: str | None) -> Level | None:
    if not text:
        return None
    if not text.isascii() or len(text) > 16:
        raise Refused(400, "unknown log level")
    try:
        return Level.parse(text)
    except ValueError:
        raise Refused(400, f"unknown log level {text!r}") from None


def short_text(text: str | None, *, field: str, limit: int = 200) -> str | None:
    """A free text parameter (e.g. a filter), bounded and printable; None when empty."""
    if not text:
        return None
    if len(text) > limit or not text.isprintable():
        raise Refused(400, f"{field} is too long or not printable")
    return text
