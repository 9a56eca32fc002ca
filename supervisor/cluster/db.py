"""Connections to the coordination database: one autocommit psycopg connection per user,
the errors that mean "reconnect" or "retry", and the parameters that notice a partition.

May import ``core.errors``, ``store.postgres.opening`` (how a DSN is named),
``store.postgres.session`` (the store's own URL parameter), psycopg and the stdlib.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, Protocol, TypeAlias

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from supervisor.core.errors import StoreError
from supervisor.store.postgres.opening import describe
from supervisor.store.postgres.session import CALL_TIMEOUT, without_call_timeout

Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]

# What a lost or refused connection raises: the caller reconnects and retries later.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


def connect(
    dsn: str, *, application_name: str = "sched-supervisor", **params: str | int
) -> Connection:
    """An autocommit connection (each statement is its own transaction unless grouped);
    ``params`` are more libpq connection parameters.

    Raises ``psycopg.OperationalError`` when the server cannot be reached.
    """
    conninfo = make_conninfo(dsn, application_name=application_name, **params)
    return psycopg.connect(conninfo, autocommit=True)


# Refusals the database may give any statement under contention; retrying is right.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)

CONNECT_SECONDS = 5  # a connect's timeout where the DSN names none


def liveness_params(dsn: str, *, ttl: timedelta) -> dict[str, int]:
    """Give up on a connection whose packets go unacknowledged for ``ttl`` (a partition),
    and on a connect after ``CONNECT_SECONDS`` unless ``dsn`` says otherwise.
    ``StoreError`` for a ``dsn`` libpq cannot parse (never quoting it: its password) or
    one carrying the store's own ``call_timeout``."""
    params = {"tcp_user_timeout": int(ttl.total_seconds() * 1000)}
    if without_call_timeout(dsn)[1] is not None:
        # libpq would call the whole string invalid, which sends people to its quoting.
        raise StoreError(
            f"cannot use {describe(dsn)} as the cluster database: {CALL_TIMEOUT} is a"
            " parameter of --store URLs only (the store's deadline per call); the cluster's"
            " connections give up after the lease ttl (--lease-ttl) instead: leave"
            f" {CALL_TIMEOUT} out of --cluster"
        )
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # its message quotes the string, password and all
        raise StoreError(
            f"cannot use {describe(dsn)} as the cluster database: invalid connection string"
            " (check its quoting and %-encoding)"
        ) from None
    if "connect_timeout" not in given:
        params["connect_timeout"] = CONNECT_SECONDS
    return params


class Closable(Protocol):
    def close(self) -> None: ...


def close_quietly(*closables: Closable | None) -> None:
    """Close each (closing a broken connection may fail too: that is ignored)."""
    for closable in closables:
        if closable is not None:
            with contextlib.suppress(Exception):
                closable.close()
