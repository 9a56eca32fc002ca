"""The session a store connection runs in: its server-side timeouts, set right after
connecting, and the client-side deadline that follows them.

The server ends what takes too long (``SESSION_SETTINGS``: a statement, a lock wait, a
transaction left open), unless the connection string sets the parameter itself in its
``options`` (``-c statement_timeout=30s``; or ``PGOPTIONS`` when the string has no
``options``). Every ``-c name=value`` (or ``--name=value``) setting there, the user's and
ours, is applied with one ``set_config`` statement after connecting rather than sent in
the startup packet: a pooler such as PgBouncer refuses a startup ``options`` parameter
("unsupported startup parameter: options") unless told to ignore it, and then would drop
the settings without a word. Other switches in ``options`` still go in the startup packet,
and so do the settings PostgreSQL takes only when a session starts (``STARTUP_CONTEXTS``:
log_connections), as libpq would send them: ``opening`` moves them there when the server
refuses them after connecting (``Session.with_startup``), and each connection then checks
that they arrived (a pooler may drop them). One no session can set (shared_buffers) is
refused naming it and why. Only session pooling keeps a session's settings (and the
manager's advisory lock).

The client gives up on a call ``MARGIN_SECONDS`` after the server would have ended its
statement (so a slow statement fails with the server's own words), or after the URL's
``call_timeout`` (a duration: ``30s``, ``2m``; sched-supervisor's own parameter, taken out
before libpq sees the string). With ``statement_timeout=0`` and no ``call_timeout`` no
deadline is kept. A bad value is a ``StoreError`` naming the parameter (never the
password: only the value is quoted).
May import ``core.errors``, ``core.durations``, ``store.dsn``, ``store.postgres.deadline``,
psycopg and the stdlib.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from supervisor.core.durations import parse_duration
from supervisor.core.errors import DefinitionError, StoreError
from supervisor.store.dsn import split_url

if TYPE_CHECKING:
    from supervisor.store.postgres.deadline import Deadlines

Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]

# The server ends what takes too long: a statement, a wait for a lock another session
# holds, and a session that left a transaction open (a client that vanished mid-write
# would otherwise keep its row locks, and every other writer waiting, until the server
# notices the client is gone).
SESSION_SETTINGS: Final[Mapping[str, str]] = {
    "statement_timeout": "4s",
    "lock_timeout": "2s",
    "idle_in_transaction_session_timeout": "10s",
}
# The client deadline of a call: this much over the statement timeout.
MARGIN_SECONDS: Final = 1.0
# sched-supervisor's own connection parameter: the client deadline of a call, explicitly.
CALL_TIMEOUT: Final = "call_timeout"
# A log search reads many chunks, each a statement of its own: it may take this long.
SEARCH_SECONDS: Final = 60.0
# The deadline of the settings statement when calls have none.
SETUP_SECONDS: Final = 5.0
# PostgreSQL's time units (case-sensitive), in milliseconds.
_TIME_UNITS: Final[Mapping[str, Decimal]] = {
    "us": Decimal("0.001"),
    "ms": Decimal(1),
    "s": Decimal(1000),
    "min": Decimal(60_000),
    "h": Decimal(3_600_000),
    "d": Decimal(86_400_000),
}
_TIME: Final = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-z]*)\s*")
_INT_MAX: Final = 2**31 - 1
_REFUSED: Final = "unsupported startup parameter"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """How to open a store connection and what its session needs; from ``session_for``.

    ``conninfo``: what libpq is given (its ``options`` without the settings);
    ``settings``: (name, value) applied after connecting, in order; ``call_seconds``: the
    client deadline of a call (None: none); ``statement_seconds``: the server's statement
    timeout (None: none)."""

    conninfo: str
    settings: tuple[tuple[str, str], ...]
    call_seconds: float | None
    statement_seconds: float | None
    # Settings PostgreSQL takes only when a session starts (``STARTUP_CONTEXTS``): sent
    # in the startup packet (in ``conninfo``'s options) and checked after connecting.
    startup: tuple[tuple[str, str], ...] = ()

    @property
    def search_seconds(self) -> float | None:
        """The deadline of a log search (many statements): at least a call's."""
        if self.call_seconds is None:
            return None
        return max(SEARCH_SECONDS, self.call_seconds)

    def with_params(self, **params: str | int) -> Session:
        """The same session with more (or other) libpq parameters (a setting of the same
        name gives way to one)."""
        settings = tuple((name, value) for name, value in self.settings if name not in params)
        return replace(self, conninfo=make_conninfo(self.conninfo, **params), settings=settings)

    def with_startup(self, names: frozenset[str]) -> Session:
        """The same session with the settings ``names`` sent in the startup packet
        instead of with ``set_config`` after connecting."""
        moved = tuple((name, value) for name, value in self.settings if name in names)
        words = [f"-c{_escaped(f'{name}={value}')}" for name, value in moved]
        given = str(conninfo_to_dict(self.conninfo).get("options") or "")
        return replace(
            self,
            conninfo=make_conninfo(self.conninfo, options=" ".join([given, *words]).strip()),
            settings=tuple(setting for setting in self.settings if setting not in moved),
            startup=self.startup + moved,
        )

    def connect(self, deadlines: Deadlines) -> Connection:
        """An autocommit connection with the settings applied, the settings statement
        bounded by ``deadlines``. psycopg errors pass through (one for a statement cut at
        its deadline says so); ``SettingRefused`` when a startup setting did not arrive
        (a pooler that drops startup options)."""
        conn: Connection = psycopg.connect(self.conninfo, autocommit=True)
        if not self.settings and not self.startup:
            return conn
        calls = ["set_config(%s, %s, false)"] * len(self.settings)
        values: list[Any] = [part for setting in self.settings for part in setting]
        if self.startup:
            # What the startup packet set has the source 'client'; a pooler that drops
            # the startup options leaves them as the server's defaults.
            calls.append(
                "(SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM pg_settings"
                " WHERE name = ANY(%s) AND source <> 'client')"
            )
            values.append([name for name, _ in self.startup])
        try:
            with deadlines.bounded(conn, self.call_seconds or SETUP_SECONDS) as bound:
                try:
                    row = conn.execute(f"SELECT {', '.join(calls)}", values).fetchone()
                except psycopg.Error as exc:
                    if bound.expired:
                        raise psycopg.OperationalError(
                            f"no answer from the server within {bound.seconds:g} s after"
                            " connecting; the connection was dropped"
                        ) from exc
                    raise
            dropped = list(row[-1]) if self.startup and row is not None else []
            if dropped:
                raise SettingRefused(
                    f"options sets {', '.join(dropped)}, which PostgreSQL takes only when"
                    " a session starts, so it went in the startup packet, and it did not"
                    " arrive: something in between drops startup options (PgBouncer with"
                    " ignore_startup_parameters = options does); set it in"
                    " postgresql.conf, or connect to the server itself"
                )
        except BaseException:
            conn.close()
            raise
        return conn


class SettingRefused(psycopg.OperationalError):
    """A setting of the URL's ``options`` that cannot be applied as asked: the message
    names it and says why (``opening`` shows it as it is)."""


# pg_settings contexts of settings the server takes only in a session's startup packet.
STARTUP_CONTEXTS: Final = frozenset({"backend", "superuser-backend"})
# Why a setting of another context can never be set for one session.
_NEVER_PER_SESSION: Final[Mapping[str, str]] = {
    "postmaster": "only when the server starts (postgresql.conf, then a restart)",
    "sighup": "only for the whole server (postgresql.conf or ALTER SYSTEM, then a reload)",
    "internal": "never (it is fixed when PostgreSQL is built or the cluster made)",
}


def per_session_problems(contexts: Mapping[str, str]) -> list[str]:
    """For settings of the URL's options by their pg_settings context: why each that can
    never be set for one session is refused (empty: all can)."""
    return [
        f"options sets {name}, which PostgreSQL takes {_NEVER_PER_SESSION[context]}, never"
        f" for one connection (pg_settings context {context!r}): leave it out of options"
        for name, context in sorted(contexts.items())
        if context in _NEVER_PER_SESSION
    ]


def startup_problem(names: frozenset[str], contexts: Mapping[str, str], reason: str) -> str:
    """Why the startup settings ``names`` cannot be used: the server in between refused
    the startup packet's options (``reason``: its words)."""
    shown = ", ".join(f"{name} (pg_settings context {contexts[name]!r})" for name in sorted(names))
    return (
        f"options sets {shown}, which PostgreSQL takes only when a session starts, so it"
        f" goes in the startup packet, and the server in between refuses startup options"
        f" as a pooler such as PgBouncer does ({reason}): set it in postgresql.conf, or"
        " connect to the server itself"
    )


def _escaped(word: str) -> str:
    """``word`` as one word of an ``options`` string (``split_options`` reads it back)."""
    return re.sub(r"([\s\\])", r"\\\1", word)


def session_for(dsn: str, *, description: str, environ: Mapping[str, str] = os.environ) -> Session:
    """The session for ``dsn`` (``CALL_TIMEOUT`` taken out of it): the settings of its
    ``options`` (or of ``PGOPTIONS`` in ``environ`` when it has none) and ours for what
    they leave unset, and the deadline they make.

    Raises ``StoreError`` naming ``description`` and the parameter for a bad value."""
    rest, call_text = without_call_timeout(dsn)
    try:
        given = conninfo_to_dict(rest)
    except psycopg.ProgrammingError as exc:
        raise StoreError(
            f"cannot use PostgreSQL store: invalid connection string ({_one_line(exc)})"
        ) from None
    options = given.get("options")
    text = str(options) if options is not None else environ.get("PGOPTIONS", "")
    try:
        own, switches = split_options(text)
    except ValueError as exc:
        raise StoreError(f"cannot use {description}: {exc}") from None
    named = {name for name, _ in own}
    settings = tuple(own) + tuple(
        (name, value) for name, value in SESSION_SETTINGS.items() if name not in named
    )
    effective = dict(settings)
    try:
        statement_ms = time_ms(effective["statement_timeout"], name="statement_timeout")
        for name in ("lock_timeout", "idle_in_transaction_session_timeout"):
            time_ms(effective[name], name=name)
    except ValueError as exc:
        raise StoreError(f"cannot use {description}: {exc}") from None
    statement_seconds = None if statement_ms == 0 else float(statement_ms) / 1000
    if call_text is not None:
        call_seconds: float | None = _call_seconds(call_text, description)
    elif statement_seconds is None:
        call_seconds = None
    else:
        call_seconds = statement_seconds + MARGIN_SECONDS
    return Session(
        conninfo=make_conninfo(rest, options=" ".join(switches)),
        settings=settings,
        call_seconds=call_seconds,
        statement_seconds=statement_seconds,
    )


def refused_options(exc: BaseException) -> bool:
    """Whether a failed connection attempt is a pooler refusing a startup parameter."""
    return _REFUSED in str(exc).lower()


def without_call_timeout(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its ``CALL_TIMEOUT`` parameter, and that parameter's value (None
    without one). The last one counts, as libpq's last value of a parameter does."""
    parts = split_url(dsn)
    if parts is not None:
        scheme, userinfo, at, rest = parts
        head, mark, tail = rest.partition("?")
        query, hash_mark, fragment = tail.partition("#")
        found: list[str] = []
        items: list[str] = []
        for item in query.split("&") if mark else []:
            key, _, raw = item.partition("=")
            if unquote(key).lower() == CALL_TIMEOUT:
                found.append(unquote(raw))
            elif item:
                items.append(item)
        if not found:
            return dsn, None
        query_text = "?" + "&".join(items) if items else ""
        rebuilt = head + query_text + hash_mark + fragment
        return scheme + (userinfo or "") + at + rebuilt, found[-1]
    pairs = _keyword_pairs(dsn)
    if pairs is None:
        return dsn, None  # libpq says what is wrong with it
    value: str | None = None
    kept: list[str] = []
    last = 0
    for key, raw, start, end in pairs:
        if key == CALL_TIMEOUT:
            value = raw
            kept.append(dsn[last:start])
            last = end
    kept.append(dsn[last:])
    return "".join(kept).strip(), value


def split_options(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``-c name=value`` and ``--name=value`` settings of an ``options`` string (as
    PostgreSQL reads it: words split at blanks, a backslash takes the next character
    literally; names lower-cased, ``-`` as ``_``), and its other words, escaped again.

    Raises ``ValueError`` for a ``-c`` without a setting or a setting without ``=``."""
    words = _words(text)
    settings: list[tuple[str, str]] = []
    others: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "-c":
            if index >= len(words):
                raise ValueError("options: -c without name=value")
            setting = words[index]
            index += 1
        elif word.startswith("-c") or (word.startswith("--") and len(word) > 2):
            setting = word[2:]
        else:
            others.append(re.sub(r"([\s\\])", r"\\\1", word))
            continue
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise ValueError(f"options: expected name=value after -c, got {setting!r}")
        settings.append((name.lower().replace("-", "_"), value))
    last = {name: value for name, value in settings}  # the last one of a name wins
    ordered = [(name, last[name]) for name in dict.fromkeys(name for name, _ in settings)]
    return ordered, others


def time_ms(value: str, *, name: str) -> Decimal:
    """A PostgreSQL time setting in milliseconds (a number, ms unless a unit follows:
    us, ms, s, min, h, d). Raises ``ValueError`` naming ``name`` for a value the server
    would refuse (not a time, negative, over 2147483647 ms)."""
    match = _TIME.fullmatch(value)
    problem = ""
    if match is None:
        problem = "not a time"
    else:
        number, unit = match.groups()
        try:
            ms = Decimal(number) * _TIME_UNITS[unit or "ms"]
        except KeyError:
            problem = f"unknown unit {unit!r} (use us, ms, s, min, h or d)"
        except InvalidOperation:
            problem = "not a time"
        else:
            ms = ms.to_integral_value()
            if ms < 0:
                problem = "negative"
            elif ms > _INT_MAX:
                problem = f"over {_INT_MAX} ms"
            else:
                return ms
    raise ValueError(
        f"{name} {value!r} in the connection's options is invalid: {problem} (write e.g."
        f" {name}=30s, or 0 for none)"
    )


def _call_seconds(text: str, description: str) -> float:
    try:
        seconds = parse_duration(text, field=CALL_TIMEOUT).total_seconds()
    except DefinitionError as exc:
        raise StoreError(f"cannot use {description}: {exc}") from None
    if seconds <= 0 or not math.isfinite(seconds):
        raise StoreError(
            f"cannot use {description}: {CALL_TIMEOUT} must be longer than 0 (it bounds"
            " each call; leave it out to follow statement_timeout)"
        )
    return seconds


def _words(text: str) -> list[str]:
    """``text`` split at blanks, a backslash keeping the next character (PostgreSQL's
    ``pg_split_opts``)."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    chars = iter(text)
    for char in chars:
        if char.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            continue
        in_word = True
        if char == "\\":
            current.append(next(chars, ""))
        else:
            current.append(char)
    if in_word:
        words.append("".join(current))
    return words


def _keyword_pairs(dsn: str) -> list[tuple[str, str, int, int]] | None:
    """A key=value string's (key, value, start, end) as libpq reads it (a value is a run
    of non-blanks or single-quoted, with backslash escapes); None if it is malformed."""
    pairs: list[tuple[str, str, int, int]] = []
    position, size = 0, len(dsn)
    while True:
        while position < size and dsn[position].isspace():
            position += 1
        if position >= size:
            return pairs
        start = position
        while position < size and dsn[position] != "=" and not dsn[position].isspace():
            position += 1
        key = dsn[start:position]
        while position < size and dsn[position].isspace():
            position += 1
        if position >= size or dsn[position] != "=" or not key:
            return None
        position += 1
        while position < size and dsn[position].isspace():
            position += 1
        value: list[str] = []
        if position < size and dsn[position] == "'":
            position += 1
            while position < size and dsn[position] != "'":
                if dsn[position] == "\\" and position + 1 < size:
                    position += 1
                value.append(dsn[position])
                position += 1
            if position >= size:
                return None
            position += 1
        else:
            while position < size and not dsn[position].isspace():
                if dsn[position] == "\\" and position + 1 < size:
                    position += 1
                value.append(dsn[position])
                position += 1
        pairs.append((key, "".join(value), start, position))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
