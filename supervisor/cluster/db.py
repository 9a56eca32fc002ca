"""Connections to the coordination database: one autocommit psycopg connection per user.

May import psycopg and the stdlib.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import psycopg
from psycopg.conninfo import make_conninfo

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
