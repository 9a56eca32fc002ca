"""Opening a PostgreSQL store: connect, then create the schema or check that it is ours.

What cannot be used is refused with a one-line ``StoreError`` that names the database (as
``user@host:port/dbname``, never the password) and the problem: a server that cannot be
reached, a wrong or missing password, a database that does not exist, a database holding
another application's tables, a schema written by a newer sched-supervisor, or a damaged
one. A database of another application is never written to.

Creation and migration run in one transaction under an advisory lock, so hosts starting
at once create the schema once and none sees half of it.
May import ``core.errors``, ``store.dsn``, ``store.postgres.schema``, ``store.postgres.session``,
``store.postgres.deadline``,
psycopg and the stdlib.
"""

from __future__ import annotations

import os
import socket
from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

from supervisor.core.errors import StoreError
from supervisor.store.dsn import redacted, without_password
from supervisor.store.postgres.deadline import Deadlines
from supervisor.store.postgres.schema import (
    APPLICATION,
    MIGRATIONS,
    OWN_PREFIXES,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    TABLES,
    VERSION_TABLE,
)
from supervisor.store.postgres.session import (
    STARTUP_CONTEXTS,
    Connection,
    Session,
    SettingRefused,
    per_session_problems,
    refused_options,
    session_for,
    startup_problem,
    without_call_timeout,
)

CONNECT_TIMEOUT_SECONDS: Final = 5
APPLICATION_NAME: Final = "sched-supervisor"
NO_STORE: Final = (
    "no sched-supervisor store there; `supervisor users add` or `supervisor run --store` creates it"
)
# A connection whose peer stops answering is given up: idle, after a few unanswered TCP
# keepalives; with data in flight, once it goes unacknowledged for TCP_USER_TIMEOUT_MS.
# (What a middlebox acknowledges but drops, only the deadline of ``deadline`` catches.)
TCP_OPTIONS: Final[dict[str, str | int]] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}


def describe(dsn: str) -> str:
    """``PostgreSQL database user@host:port/dbname`` for messages (no password, even one
    libpq would misread: ``store.dsn``)."""
    try:
        params = conninfo_to_dict(redacted(without_call_timeout(dsn)[0]))
    except psycopg.ProgrammingError:
        return "PostgreSQL database (unparsable connection string)"
    user = str(params.get("user") or "")
    host = params.get("host") or params.get("hostaddr") or "local socket"
    port = params.get("port")
    where = f"{host}:{port}" if port else str(host)
    name = params.get("dbname") or user or "(default)"
    return f"PostgreSQL database {user + '@' if user else ''}{where}/{name}"


def session(dsn: str, *, description: str | None = None) -> Session:
    """How to open connections to ``dsn``: with this program's defaults for what it does
    not set itself (``TCP_OPTIONS``, ``connect_timeout``, the session's timeouts of
    ``store.postgres.session``) and a session name that tells which process of which host
    a session is (``sched-supervisor HOST:PID``). ``StoreError`` for a bad parameter."""
    described = description or describe(dsn)
    found = session_for(dsn, description=described)
    given = conninfo_to_dict(found.conninfo)
    extra: dict[str, str | int] = {}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "application_name" not in given and "application_name" not in dict(found.settings):
        extra["application_name"] = f"{APPLICATION_NAME} {socket.gethostname()[:32]}:{os.getpid()}"
    extra.update({key: value for key, value in TCP_OPTIONS.items() if key not in given})
    return found.with_params(**extra)


def open_database(dsn: str, *, create: bool = True) -> tuple[str, Session, Connection]:
    """Connect to ``dsn``, create (unless not ``create``) or check (and migrate) the schema;
    return the description, how to open more connections, and the first connection."""
    description = describe(dsn)
    deadlines = Deadlines("store opening deadline")
    try:
        opened, conn = _first_connection(session(dsn, description=description), deadlines)
    except SettingRefused as exc:
        raise StoreError(f"cannot use {description}: {without_password(str(exc), dsn)}") from None
    except psycopg.Error as exc:
        raise StoreError(f"cannot use {description}: {connect_problem(exc, dsn)}") from None
    finally:
        deadlines.close()
    try:
        _prepare(conn, description, create=create)
    except BaseException:
        conn.close()
        raise
    return description, opened, conn


def _first_connection(opened: Session, deadlines: Deadlines) -> tuple[Session, Connection]:
    """The first connection, and how to open more: as ``opened`` says, unless the server
    refuses a setting of the options after connecting. Then each one the server takes
    only when a session starts (log_connections: ``STARTUP_CONTEXTS``) goes in the
    startup packet instead, as libpq would send it; one no session can set is refused
    (``SettingRefused`` naming it and why), as is a startup setting that a pooler in
    between refuses or drops."""
    try:
        return opened, opened.connect(deadlines)
    except psycopg.errors.CantChangeRuntimeParam as exc:
        refused = exc
    except (psycopg.errors.UndefinedObject, psycopg.errors.InsufficientPrivilege) as exc:
        # Unknown, or for superusers only: set_config's own words name the setting.
        raise SettingRefused(
            f"the server refuses a setting of the options ({_one_line(exc)})"
        ) from None
    contexts = _contexts(opened, deadlines)
    problems = per_session_problems(contexts)
    if problems:
        raise SettingRefused("; ".join(problems))
    startup = frozenset(name for name, context in contexts.items() if context in STARTUP_CONTEXTS)
    if not startup:
        raise refused
    moved = opened.with_startup(startup)
    try:
        return moved, moved.connect(deadlines)
    except psycopg.OperationalError as exc:
        if refused_options(exc):
            problem = startup_problem(startup, contexts, _reason(_one_line(exc)))
            raise SettingRefused(problem) from None
        raise


def _contexts(opened: Session, deadlines: Deadlines) -> dict[str, str]:
    """The pg_settings context of each setting ``opened`` applies after connecting (a
    name the server does not know is left out), read on a connection without them."""
    conn: Connection = psycopg.connect(opened.conninfo, autocommit=True)
    try:
        with deadlines.bounded(conn, opened.call_seconds or CONNECT_TIMEOUT_SECONDS):
            rows = conn.execute(
                "SELECT name, context FROM pg_settings WHERE name = ANY(%s)",
                ([name for name, _ in opened.settings],),
            ).fetchall()
    finally:
        conn.close()
    return {str(name): str(context) for name, context in rows}


def connect_problem(exc: psycopg.Error, dsn: str) -> str:
    """What a failed connection attempt means, in words an operator can act on (never
    the password, even where libpq took part of it for the host)."""
    text = without_password(_one_line(exc), dsn)
    lowered = text.lower()
    params = conninfo_to_dict(redacted(without_call_timeout(dsn)[0]))
    user, name = params.get("user"), params.get("dbname")
    if "password authentication failed" in lowered:
        return (
            f"wrong password for user {user or '(default)'!r} (the server refused it:"
            f" {_reason(text)})"
        )
    if "no password supplied" in lowered or "fe_sendauth" in lowered:
        return (
            "the server asks for a password and none was given (put it in ~/.pgpass,"
            " PGPASSWORD or the URL)"
        )
    if refused_options(exc):
        return (
            "the server refuses a startup parameter, as a connection pooler such as"
            f" PgBouncer does ({_reason(text)}); sched-supervisor sets each -c setting of"
            " options with SET after connecting: leave only -c settings in options"
        )
    if "does not exist" in lowered and "database" in lowered:
        return f"database {name!r} does not exist on the server (create it: createdb {name})"
    if "does not exist" in lowered and "role" in lowered:
        return f"user {user!r} does not exist on the server ({_reason(text)})"
    if any(
        sign in lowered
        for sign in (
            "connection refused",
            "could not translate host name",
            "timeout expired",
            "no route to host",
            "network is unreachable",
            "no such file or directory",
        )
    ):
        return f"cannot reach the server ({_reason(text)})"
    return f"cannot connect ({_reason(text)})"


def _prepare(conn: Connection, description: str, *, create: bool) -> None:
    """Check the schema; create (if ``create``) or migrate it when it is ours (or the
    database is empty)."""
    try:
        version = _stored_version(conn, description)
        if version == SCHEMA_VERSION:
            _check_tables(conn, description)
            return
        if version == 0 and not create:
            raise StoreError(f"cannot use {description}: {NO_STORE}")
        # A session lock taken outside the transaction: the transaction that checks again
        # starts after the lock is granted, so it sees the schema another host just made
        # (a lock taken inside it could leave it looking at stale catalog caches).
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (SCHEMA_LOCK,))
        try:
            _create_or_migrate(conn, description)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (SCHEMA_LOCK,))
        _check_tables(conn, description)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(
            f"cannot use {description}: the user may not create the store's tables"
            f" ({_reason(_one_line(exc))}); grant it CREATE on the schema, or let its owner"
            " run the first start"
        ) from None
    except psycopg.Error as exc:
        raise StoreError(f"cannot use {description}: {_one_line(exc)}") from None


def _create_or_migrate(conn: Connection, description: str) -> None:
    """Create or migrate the schema in one transaction (under the schema lock)."""
    with conn.transaction():
        version = _stored_version(conn, description)  # another host may have done it
        if version == 0:
            _refuse_foreign(conn, description)
        if version < SCHEMA_VERSION:
            for steps in MIGRATIONS[version:]:
                for statement in steps:
                    conn.execute(statement)
            if version == 0:
                conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (application, version) VALUES (%s, %s)",  # noqa: S608
                    (APPLICATION, SCHEMA_VERSION),
                )
            else:
                conn.execute(
                    f"UPDATE {VERSION_TABLE} SET version = %s",  # noqa: S608
                    (SCHEMA_VERSION,),
                )


def _stored_version(conn: Connection, description: str) -> int:
    """The schema version stored (0: no schema of ours); refuses another program's."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if not (found and found[0]):
        return 0
    rows = conn.execute(f"SELECT application, version FROM {VERSION_TABLE}").fetchall()  # noqa: S608
    if len(rows) != 1:
        raise StoreError(
            f"cannot use {description}: damaged store ({VERSION_TABLE} has {len(rows)} rows)"
        )
    application, version = rows[0]
    if application != APPLICATION:
        raise StoreError(
            f"cannot use {description}: its {VERSION_TABLE} table belongs to {application!r},"
            f" not to {APPLICATION}"
        )
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"cannot use {description}: corrupt schema version {version!r}")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"cannot use {description}: written by a newer sched-supervisor (schema version"
            f" {version}; this version reads up to {SCHEMA_VERSION})"
        )
    return version


def _refuse_foreign(conn: Connection, description: str) -> None:
    """``StoreError`` when the current schema holds tables that are not ours."""
    rows = conn.execute(
        "SELECT c.relname, current_schema() FROM pg_class AS c"
        " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        " ORDER BY c.relname"
    ).fetchall()
    foreign = [name for name, _ in rows if not str(name).startswith(OWN_PREFIXES)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise StoreError(
            f"cannot use {description}: it holds tables of another application (schema"
            f" {rows[0][1]!r}: {shown}); give sched-supervisor a database of its own (or a"
            " schema of its own with options=-csearch_path=NAME)"
        )


def refuse_foreign(conn: Connection, description: str) -> None:
    """``StoreError`` when the current schema holds tables of another application (the
    check a store makes before creating its tables; the cluster's tables make it too)."""
    _refuse_foreign(conn, description)


def _check_tables(conn: Connection, description: str) -> None:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relname = ANY(%s)",
        (sorted(TABLES),),
    ).fetchall()
    missing = sorted(TABLES - {row[0] for row in rows})
    if missing:
        raise StoreError(f"cannot use {description}: damaged store (missing table {missing[0]})")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _reason(text: str) -> str:
    """The server's words without libpq's 'connection to server at … failed:' prefix."""
    head, sep, tail = text.rpartition(" failed: ")
    return tail if sep and head.startswith("connection") else text
