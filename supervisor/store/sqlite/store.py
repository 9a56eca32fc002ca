"""``SqliteStore``: every aggregate of ``store.protocols.Store`` on one SQLite file.

One file (``state.db`` under the state directory) in WAL mode with ``synchronous=NORMAL``:
a commit survives a crash of the process; a power loss may drop the last commits but
never corrupts the file. Each aggregate's SQL lives in its own module (settings, runs,
logs, audit, users, meta); this class joins them over one ``Database``.
May import ``store.sqlite.*`` and the stdlib.
"""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.store.protocols import Store
from supervisor.store.sqlite.audit import SqliteAudit
from supervisor.store.sqlite.database import Database
from supervisor.store.sqlite.logs import SqliteLogs
from supervisor.store.sqlite.meta import SqliteMeta
from supervisor.store.sqlite.opening import open_database
from supervisor.store.sqlite.runs import SqliteRuns
from supervisor.store.sqlite.schema import DB_FILENAME
from supervisor.store.sqlite.settings import SqliteSettings
from supervisor.store.sqlite.users import SqliteUsers


def state_db_path(state_dir: Path) -> Path:
    """Where the database of a state directory lives."""
    return Path(state_dir) / DB_FILENAME


class SqliteStore(SqliteSettings, SqliteRuns, SqliteLogs, SqliteAudit, SqliteUsers, SqliteMeta):
    """The state database, a ``store.protocols.Store``. Create with ``SqliteStore.open``;
    close with ``close`` (or ``with``). Errors as ``store.protocols`` says; ``StoreError``
    messages name the file."""

    def __init__(
        self, database: Database, *, max_runs_per_scheduler: int, max_log_bytes_per_run: int
    ) -> None:
        """Use ``open``."""
        self._db = database
        self._max_runs = max_runs_per_scheduler
        self._max_log_bytes = max_log_bytes_per_run

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        max_runs_per_scheduler: int = 100,
        max_log_bytes_per_run: int = 1 << 20,
    ) -> SqliteStore:
        """Open the database file ``path``, creating it (and its directory) if missing.

        ``path`` is the file itself; ``state_db_path(state_dir)`` gives the usual one.
        Raises ``StoreError`` for a file that is not a usable sched-supervisor database
        (corrupt, empty, another program's, a newer schema) or a location that is not
        writable; such a file is left untouched. ``ValueError`` for a limit below 1.
        """
        if max_runs_per_scheduler < 1:
            raise ValueError("max_runs_per_scheduler must be at least 1")
        if max_log_bytes_per_run < 1:
            raise ValueError("max_log_bytes_per_run must be at least 1")
        path = Path(os.path.abspath(path))
        return cls(
            Database(path, open_database(path)),
            max_runs_per_scheduler=max_runs_per_scheduler,
            max_log_bytes_per_run=max_log_bytes_per_run,
        )

    @property
    def path(self) -> Path:
        return self._db.path

    def close(self) -> None:
        """Close every connection; later calls raise ``StoreError``. Idempotent."""
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _conforms(store: SqliteStore) -> Store:
    """Checked by mypy: ``SqliteStore`` is a ``Store``."""
    return store
