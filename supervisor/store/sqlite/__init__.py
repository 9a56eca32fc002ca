"""The SQLite store (``state.db``), split by aggregate; ``SqliteStore`` joins them.

May import ``core``, ``store.protocols``, ``store.codec``, ``store.budget`` and the stdlib.
"""

from supervisor.store.protocols import LogStats, StoredUser, UnfinishedRun
from supervisor.store.sqlite.schema import (
    APPLICATION_ID,
    DB_FILENAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    WRITER_CACHE_KIB,
)
from supervisor.store.sqlite.store import SqliteStore, state_db_path

__all__ = [
    "APPLICATION_ID",
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "WRITER_CACHE_KIB",
    "LogStats",
    "SqliteStore",
    "StoredUser",
    "UnfinishedRun",
    "state_db_path",
]
