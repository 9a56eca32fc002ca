"""Opening the PostgreSQL store a ``--store URL`` names, for ``supervisor run`` and the
commands that work on the store without a manager (``supervisor users``).

A location that is no ``postgresql://`` URL, or a missing psycopg, is a
``DefinitionError("--store")``; a store that cannot be used is the store's one-line
``StoreError``, with any password the URL holds taken out of it first
(``store.dsn.without_password``).
May import ``core.errors``, ``store`` and the stdlib (psycopg through ``store.postgres``,
imported where used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from supervisor.core.errors import DefinitionError, StoreError
from supervisor.store import is_postgres_url
from supervisor.store.dsn import without_password

if TYPE_CHECKING:
    from supervisor.store.postgres import PostgresStore


def open_postgres_store(
    location: str,
    *,
    max_runs_per_scheduler: int = 100,
    max_log_bytes_per_run: int = 1 << 20,
) -> PostgresStore:
    """The PostgreSQL store at ``location``, its tables created in an empty database.

    Raises ``DefinitionError("--store")`` for a location that is no PostgreSQL URL or
    when psycopg is missing, ``StoreError`` (without the URL's password) for a store that
    cannot be used, ``ValueError`` for a limit below 1.
    """
    return _opened(
        location,
        lambda store: store.open(
            location,
            max_runs_per_scheduler=max_runs_per_scheduler,
            max_log_bytes_per_run=max_log_bytes_per_run,
        ),
    )


def open_postgres_users(location: str, *, create: bool) -> PostgresStore:
    """The PostgreSQL store at ``location`` for ``supervisor users``: as
    ``open_postgres_store``, but an empty database gets the tables only with ``create``
    (it is a ``StoreError`` otherwise)."""
    return _opened(location, lambda store: store.open(location, create=create))


def _opened(
    location: str, opening: Callable[[type[PostgresStore]], PostgresStore]
) -> PostgresStore:
    """``opening(PostgresStore)`` after checking ``location``, errors as
    ``open_postgres_store`` says."""
    if not is_postgres_url(location):
        raise DefinitionError(
            "--store",
            "expected a postgresql://USER@HOST[:PORT]/DATABASE URL (without --store, the"
            " store is SQLite in the state directory)",
        )
    try:
        from supervisor.store.postgres import PostgresStore
    except ImportError as error:
        raise DefinitionError(
            "--store",
            f"a PostgreSQL store needs psycopg 3 ({error}): pip install"
            " 'sched-supervisor[postgresql]' or apt install python3-psycopg",
        ) from None
    try:
        return opening(PostgresStore)
    except StoreError as error:
        cleaned = without_password(str(error), location)
        if cleaned == str(error):
            raise
        raise StoreError(cleaned) from None
