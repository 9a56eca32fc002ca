"""PostgreSQL connection strings without their passwords, for messages.

A ``postgresql://`` URL's user information is everything between ``://`` and the last
``@`` of its authority (before the first ``/``, ``?`` or ``#``): a password may hold an
unencoded ``@``, which libpq would take as the start of the host. Only the user name (up
to the first ``:``) is kept. ``password=`` in a query or a key=value string is hidden.
May import the stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote

HIDDEN: Final = "***"
_QUOTED: Final = re.compile(r'"[^"]*"')
# A shorter password is too common a string to take out wherever it appears: only the
# quoted parts of a message (where libpq echoes what it could not parse) lose it.
_MIN_ANYWHERE: Final = 4
_SCHEMES: Final = ("postgresql://", "postgres://")
_QUERY_PASSWORD: Final = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
# key=value: a value is a run of non-blanks or single-quoted with backslash escapes.
_KEY_PASSWORD: Final = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)


def _split_url(dsn: str) -> tuple[str, str | None, str, str] | None:
    """A URL's scheme with ``://``, its user information (None without), ``@`` (or "")
    and the rest; None for a string that is no URL."""
    scheme = next((s for s in _SCHEMES if dsn[: len(s)].lower() == s), None)
    if scheme is None:
        return None
    rest = dsn[len(scheme) :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0:
        return scheme, None, "", rest
    return scheme, rest[:at], "@", rest[at + 1 :]


def split_url(dsn: str) -> tuple[str, str | None, str, str] | None:
    """A ``postgresql://`` URL's scheme with ``://``, its user information (None without
    one), ``@`` (or "") and the rest (host, path, query, fragment); None for a string
    that is no URL."""
    return _split_url(dsn)


def redacted(dsn: str) -> str:
    """``dsn`` with every password it holds taken out (a URL's) or replaced by ``***``."""
    parts = _split_url(dsn)
    if parts is None:
        return _KEY_PASSWORD.sub(lambda m: m.group(1) + HIDDEN, dsn)
    scheme, userinfo, at, rest = parts
    user = "" if userinfo is None else userinfo.partition(":")[0]
    return scheme + user + at + _QUERY_PASSWORD.sub(lambda m: m.group(1) + HIDDEN, rest)


def passwords(dsn: str) -> list[str]:
    """The passwords ``dsn`` holds, as written and decoded, longest first."""
    found: list[str] = []
    parts = _split_url(dsn)
    if parts is None:
        for match in _KEY_PASSWORD.finditer(dsn):
            value = match.group(2)
            found.append(value)
            if value.startswith("'"):
                found.append(re.sub(r"\\(.)", r"\1", value.strip("'")))
    else:
        _, userinfo, _, rest = parts
        if userinfo is not None and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        found += [m.group(2) for m in _QUERY_PASSWORD.finditer(rest)]
    # libpq ends the user information at the first unencoded '@': what follows one is
    # read as (and named in errors as) the host.
    found += [
        raw.split("@", cut)[-1] for raw in list(found) for cut in range(1, raw.count("@") + 1)
    ]
    spelled = {text for raw in found for text in (raw, unquote(raw)) if text}
    return sorted(spelled - {""}, key=len, reverse=True)


def without_password(message: str, dsn: str) -> str:
    """``message`` with the connection string ``dsn`` and each password it holds (or the
    part of one libpq took for a host) replaced by ``***``; a short one only where quoted
    (libpq quotes what it could not parse, which may be the password)."""
    cleaned = message.replace(dsn, HIDDEN) if dsn else message
    for password in passwords(dsn):
        if len(password) >= _MIN_ANYWHERE:
            cleaned = cleaned.replace(password, HIDDEN)
        else:
            cleaned = _QUOTED.sub(_hiding(password), cleaned)
    return cleaned


def _hiding(password: str) -> Callable[[re.Match[str]], str]:
    """A replacement for ``re.sub`` that hides a quoted part holding ``password``."""

    def replace(quoted: re.Match[str]) -> str:
        return f'"{HIDDEN}"' if password in quoted.group() else quoted.group()

    return replace
