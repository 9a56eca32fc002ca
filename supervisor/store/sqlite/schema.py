"""The SQLite schema of ``state.db``: its identity, version, migrations and pragmas.

May import the stdlib only.
"""

from __future__ import annotations

from typing import Final

DB_FILENAME: Final = "state.db"
# PRAGMA application_id of every sched-supervisor database: ASCII "sSup".
APPLICATION_ID: Final = 0x73537570
SCHEMA_VERSION: Final = 5
BUSY_TIMEOUT_MS: Final = 10_000
# After a checkpoint the WAL file is truncated to at most this size.
JOURNAL_SIZE_LIMIT: Final = 64 << 20
WRITER_CACHE_KIB: Final = 32 << 10

# Schema migrations: MIGRATIONS[n] turns a version-n database into version n + 1.
#
# Logs carry one index, (scheduler_id, level), which SQLite ends with the rowid: it is
# (scheduler_id, level, id). Every log query reads one ordered range of it per level and
# merges them, so "newest 200" and "the 200 errors among millions" cost the same. A run's
# records are found through that index too, limited to the run's id range
# (runs.first_log_id .. last_log_id, filtered by run_seq). One index instead of three
# keeps inserts fast. Log search (text, fields, time) reads through it too and adds none:
# see store.sqlite.logs.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE overrides (
            scheduler_id TEXT PRIMARY KEY,
            settings TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            seq INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            scheduler_id TEXT NOT NULL,
            trigger TEXT NOT NULL,
            triggered_by TEXT,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT,
            exit_code INTEGER,
            signal INTEGER,
            error TEXT,
            pid INTEGER,
            pgid INTEGER,
            create_time REAL,
            log_records INTEGER NOT NULL DEFAULT 0,
            log_bytes INTEGER NOT NULL DEFAULT 0,
            dropped_records INTEGER NOT NULL DEFAULT 0,
            dropped_bytes INTEGER NOT NULL DEFAULT 0,
            first_log_id INTEGER,
            last_log_id INTEGER
        )""",
        "CREATE INDEX runs_by_scheduler ON runs (scheduler_id, started_at)",
        "CREATE INDEX runs_unfinished ON runs (started_at) WHERE ended_at IS NULL",
        # time: microseconds since 1970-01-01 UTC; run_seq: runs.seq; fields: JSON or NULL.
        """CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            scheduler_id TEXT NOT NULL,
            run_seq INTEGER NOT NULL,
            time INTEGER NOT NULL,
            level INTEGER NOT NULL,
            source TEXT NOT NULL,
            message TEXT NOT NULL,
            fields TEXT
        )""",
        "CREATE INDEX logs_by_level ON logs (scheduler_id, level, id, run_seq)",
        # The highest log id ever given out, so cursors are never reused after deletes.
        """CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            scheduler_id TEXT,
            detail TEXT,
            before TEXT,
            after TEXT
        )""",
        "CREATE INDEX audit_by_scheduler ON audit (scheduler_id)",
        """CREATE TABLE users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # Version 2: records lost before reaching the store (disk full) count as dropped, so
    # "dropped" no longer means "cut at the cap"; the cut is kept on its own. In version 1
    # only the cap dropped records.
    (
        "ALTER TABLE runs ADD COLUMN log_truncated INTEGER NOT NULL DEFAULT 0",
        "UPDATE runs SET log_truncated = 1 WHERE dropped_records > 0",
    ),
    # Version 3: operators' decisions (who disabled or paused a scheduler, why, until when),
    # kept apart from the overrides so a settings reset leaves them.
    (
        """CREATE TABLE decisions (
            scheduler_id TEXT PRIMARY KEY,
            decision TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # Version 4: each login's credentials stamp (``store.protocols.StoredUser.stamp``),
    # made anew by a password change or a disable so the Admin Center ends the sessions
    # made before it. Every existing login gets a random one (SQLite allows only a
    # constant default when adding a column); a row an older version inserts gets ''.
    (
        "ALTER TABLE users ADD COLUMN stamp TEXT NOT NULL DEFAULT ''",
        "UPDATE users SET stamp = lower(hex(randomblob(16)))",
    ),
    # Version 5: the database itself makes a new stamp whenever a login's hash changes (a
    # new password, a disable or enable, which add or remove its "!") and the writer left
    # the stamp as it was without saying so: a writer that knows nothing of stamps (the
    # release before, still running during an upgrade; the sqlite3 shell) ends the login's
    # sessions all the same. A writer that keeps the stamp on purpose (a rehash at login,
    # an enable) sets ``keep_stamp`` in its UPDATE; the database clears it again, so the
    # next writer's hash change makes a new stamp unless it says so too. A row inserted
    # without a stamp (by version 3, whose file a read-only reader may still see as it
    # was) gets one.
    (
        "ALTER TABLE users ADD COLUMN keep_stamp INTEGER NOT NULL DEFAULT 0",
        """CREATE TRIGGER users_new_stamp AFTER UPDATE ON users
            WHEN NEW.password_hash IS NOT OLD.password_hash AND NEW.stamp IS OLD.stamp
                AND NOT NEW.keep_stamp
            BEGIN
                UPDATE users SET stamp = lower(hex(randomblob(16))) WHERE name = NEW.name;
            END""",
        """CREATE TRIGGER users_stamp_kept AFTER UPDATE ON users WHEN NEW.keep_stamp
            BEGIN
                UPDATE users SET keep_stamp = 0 WHERE name = NEW.name;
            END""",
        """CREATE TRIGGER users_first_stamp AFTER INSERT ON users WHEN NEW.stamp = ''
            BEGIN
                UPDATE users SET stamp = lower(hex(randomblob(16))) WHERE name = NEW.name;
            END""",
    ),
)

# The tables every version has (checked when opening; later ones come with migrations).
TABLES: Final = frozenset({"meta", "overrides", "runs", "logs", "counters", "audit", "users"})
