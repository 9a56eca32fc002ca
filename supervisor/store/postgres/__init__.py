"""The PostgreSQL store (``--store postgresql://…``), split by aggregate like ``sqlite``;
``PostgresStore`` joins them (and ``exclusive`` keeps one manager per store). Needs
psycopg 3.1 or later (the ``postgresql`` extra).

May import ``core``, ``store.protocols``, ``store.codec``, ``store.budget``, psycopg and
the stdlib.
"""

from supervisor.store.postgres.opening import describe
from supervisor.store.postgres.schema import APPLICATION, SCHEMA_VERSION, TABLES
from supervisor.store.postgres.store import PostgresStore

__all__ = [
    "APPLICATION",
    "SCHEMA_VERSION",
    "TABLES",
    "PostgresStore",
    "describe",
]
