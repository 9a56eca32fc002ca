"""Small internal state in PostgreSQL (``store.protocols.InternalState``).

May import ``store.postgres.database``, ``store.postgres.text`` and the stdlib.
"""

from __future__ import annotations

from supervisor.store.postgres.database import Database
from supervisor.store.postgres.text import storable


class PostgresMeta:
    _db: Database

    def get_meta(self, key: str) -> str | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT value FROM sst_meta WHERE key = %s", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._db.single() as conn:
            conn.execute(
                "INSERT INTO sst_meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (storable(key), storable(value)),
            )
