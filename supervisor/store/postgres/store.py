"""``PostgresStore``: every aggregate of ``store.protocols.Store`` in one PostgreSQL database.

The store several hosts can share: each call is one transaction on a pooled connection,
and what several writers could race on (log cursors, retention) is put in order by row
locks (see ``logs`` and ``runs``). Runs can also be written under a lease's fencing token
(``fenced``). Each aggregate's SQL lives in its own module (settings, runs, fenced, logs,
audit, users, meta); this class joins them over one ``Database``.
May import ``store.postgres.*``, ``store.protocols`` and the stdlib.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from supervisor.store.postgres.audit import PostgresAudit
from supervisor.store.postgres.database import Database
from supervisor.store.postgres.exclusive import ExclusiveUse
from supervisor.store.postgres.fenced import PostgresFencedRuns
from supervisor.store.postgres.logs import PostgresLogs
from supervisor.store.postgres.meta import PostgresMeta
from supervisor.store.postgres.opening import open_database
from supervisor.store.postgres.runs import PostgresRuns
from supervisor.store.postgres.settings import PostgresSettings
from supervisor.store.postgres.users import PostgresUsers
from supervisor.store.protocols import FencedRunHistory, Store


class PostgresStore(
    PostgresSettings,
    PostgresRuns,
    PostgresFencedRuns,
    PostgresLogs,
    PostgresAudit,
    PostgresUsers,
    PostgresMeta,
):
    """A ``store.protocols.Store`` (and ``FencedRunHistory``) on a PostgreSQL database.
    Create with ``PostgresStore.open``; close with ``close`` (or ``with``). Errors as
    ``store.protocols`` says; ``StoreError`` messages name the database."""

    def __init__(
        self,
        database: Database,
        *,
        max_runs_per_scheduler: int,
        max_log_bytes_per_run: int,
    ) -> None:
        """Use ``open``."""
        self._db = database
        self._max_runs = max_runs_per_scheduler
        self._max_log_bytes = max_log_bytes_per_run

    @classmethod
    def open(
        cls,
        dsn: str,
        *,
        max_runs_per_scheduler: int = 100,
        max_log_bytes_per_run: int = 1 << 20,
        create: bool = True,
    ) -> PostgresStore:
        """Connect to ``dsn`` (a ``postgresql://`` URL or libpq key=value string; the
        password best in ``~/.pgpass`` or ``PGPASSWORD``), creating the store's tables in
        an empty database (unless not ``create``: then an empty database is refused).

        Raises ``StoreError`` naming the database and the problem: unreachable server,
        wrong password, missing database, a database of another application, a schema of
        a newer version, a damaged schema. ``ValueError`` for a limit below 1.
        """
        if max_runs_per_scheduler < 1:
            raise ValueError("max_runs_per_scheduler must be at least 1")
        if max_log_bytes_per_run < 1:
            raise ValueError("max_log_bytes_per_run must be at least 1")
        description, session, first = open_database(dsn, create=create)
        return cls(
            Database(description, session, first),
            max_runs_per_scheduler=max_runs_per_scheduler,
            max_log_bytes_per_run=max_log_bytes_per_run,
        )

    def exclusive(self, *, now: Callable[[], datetime] | None = None) -> ExclusiveUse:
        """The lock that makes a manager the only one on this store (not yet taken:
        ``acquire`` it, ``close`` it at the end; see ``exclusive``). Once taken, this
        store's writes go through only while it is held. ``now``: the wall clock that
        dates an outage (the system's by default)."""
        if now is None:
            return ExclusiveUse(self._db.session, self._db.description, self._db)
        return ExclusiveUse(self._db.session, self._db.description, self._db, now=now)

    @property
    def description(self) -> str:
        """The database as messages name it (``PostgreSQL database user@host:port/db``)."""
        return self._db.description

    def close(self) -> None:
        """Close every connection; later calls raise ``StoreError``. Idempotent."""
        self._db.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _conforms(store: PostgresStore) -> tuple[Store, FencedRunHistory]:
    """Checked by mypy: ``PostgresStore`` is a ``Store`` and a ``FencedRunHistory``."""
    return store, store
