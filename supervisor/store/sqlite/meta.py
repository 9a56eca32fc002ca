"""Small internal state in SQLite (``store.protocols.InternalState``).

May import ``store.sqlite.database`` and the stdlib.
"""

from __future__ import annotations

from supervisor.store.sqlite.database import Database


class SqliteMeta:
    _db: Database

    def get_meta(self, key: str) -> str | None:
        with self._db.read() as conn:
            rows = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
