"""The PostgreSQL schema of the store: its identity, version and migrations.

Every table is prefixed ``sst_`` and lives in the connection's current schema (the first
of its ``search_path``: ``public`` unless the DSN says otherwise), beside the cluster's
``cluster_*`` tables. ``sst_schema`` holds one row naming the application and the schema
version; a database without it but with other tables belongs to another application and is
refused (``opening``).

May import the stdlib only.
"""

from __future__ import annotations

from typing import Final

APPLICATION: Final = "sched-supervisor"
SCHEMA_VERSION: Final = 4
# Taken (for the transaction) by whoever creates or migrates the schema, so several hosts
# starting at once do it one after the other.
SCHEMA_LOCK: Final = "sched-supervisor store schema"

VERSION_TABLE: Final = "sst_schema"
# Tables of ours (and of the cluster package, which shares the database) that do not make
# a database "another application's".
OWN_PREFIXES: Final = ("sst_", "cluster_")

# MIGRATIONS[n] turns a version-n schema into version n + 1 (version 0: nothing there).
#
# As in the SQLite store: logs carry one index (scheduler_id, level, id); a run's records
# lie in its id range (first_log_id .. last_log_id), filtered by run_seq. A message with a
# NUL character (which PostgreSQL text cannot hold) goes to ``message_bytes`` as UTF-8,
# ``message`` then NULL. Log times are microseconds since the epoch (as in SQLite).
# ``token``: the fencing token a run was written under (``fenced``), NULL for unfenced.
# Version 2: ``host``, the host that ran the run when several share the store (--cluster),
# NULL for a single manager's runs.
# Version 3: each login's credentials stamp (``store.protocols.StoredUser.stamp``), made
# anew by a password change or a disable so every host's Admin Center ends the sessions
# made before it; existing logins (and rows a host of an older version inserts) get a
# random one from the column's default.
# Version 4: the database itself makes a new stamp whenever a login's hash changes (a new
# password, a disable or enable, which add or remove its "!") and the writer left the
# stamp as it was without saying so: a host of an older version, still running during a
# rolling upgrade, or psql, ends the login's sessions on every host all the same. A writer
# that keeps the stamp on purpose (a rehash at login, an enable) sets ``keep_stamp`` in
# its UPDATE; the trigger clears it again, so it holds for that one statement.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"""CREATE TABLE {VERSION_TABLE} (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            application text NOT NULL,
            version integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
        """CREATE TABLE sst_meta (
            key text PRIMARY KEY,
            value text NOT NULL
        )""",
        """CREATE TABLE sst_overrides (
            scheduler_id text PRIMARY KEY,
            settings text NOT NULL
        )""",
        # Operators' decisions (who disabled or paused a scheduler, why, until when), kept
        # apart from the overrides so a settings reset leaves them.
        """CREATE TABLE sst_decisions (
            scheduler_id text PRIMARY KEY,
            decision text NOT NULL
        )""",
        """CREATE TABLE sst_runs (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id text NOT NULL UNIQUE,
            scheduler_id text NOT NULL,
            trigger text NOT NULL,
            triggered_by text,
            started_at timestamptz NOT NULL,
            ended_at timestamptz,
            outcome text,
            exit_code integer,
            signal integer,
            error text,
            pid integer,
            pgid integer,
            create_time double precision,
            log_records bigint NOT NULL DEFAULT 0,
            log_bytes bigint NOT NULL DEFAULT 0,
            dropped_records bigint NOT NULL DEFAULT 0,
            dropped_bytes bigint NOT NULL DEFAULT 0,
            log_truncated boolean NOT NULL DEFAULT false,
            first_log_id bigint,
            last_log_id bigint,
            token bigint
        )""",
        "CREATE INDEX sst_runs_by_scheduler ON sst_runs (scheduler_id, started_at DESC, seq DESC)",
        "CREATE INDEX sst_runs_by_end ON sst_runs (scheduler_id, ended_at DESC, seq DESC)"
        " WHERE ended_at IS NOT NULL",
        "CREATE INDEX sst_runs_unfinished ON sst_runs (started_at, seq) WHERE ended_at IS NULL",
        """CREATE TABLE sst_logs (
            id bigint PRIMARY KEY,
            scheduler_id text NOT NULL,
            run_seq bigint NOT NULL,
            time bigint NOT NULL,
            level smallint NOT NULL,
            source text NOT NULL,
            message text,
            message_bytes bytea,
            fields text
        )""",
        "CREATE INDEX sst_logs_by_level ON sst_logs (scheduler_id, level, id)",
        # The highest log id ever given out (cursors are never reused after deletes); its
        # row lock also puts concurrent appends in cursor order.
        """CREATE TABLE sst_counters (
            name text PRIMARY KEY,
            value bigint NOT NULL
        )""",
        "INSERT INTO sst_counters (name, value) VALUES ('log_id', 0)",
        """CREATE TABLE sst_audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            time timestamptz NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            scheduler_id text,
            detail text,
            before text,
            after text
        )""",
        "CREATE INDEX sst_audit_by_scheduler ON sst_audit (scheduler_id, id)",
        """CREATE TABLE sst_users (
            name text PRIMARY KEY,
            role text NOT NULL,
            password_hash text NOT NULL,
            created_at timestamptz NOT NULL
        )""",
    ),
    ("ALTER TABLE sst_runs ADD COLUMN host text",),
    (
        "ALTER TABLE sst_users ADD COLUMN stamp text NOT NULL"
        " DEFAULT md5(random()::text || clock_timestamp()::text)",
    ),
    (
        "ALTER TABLE sst_users ADD COLUMN keep_stamp boolean NOT NULL DEFAULT false",
        """CREATE FUNCTION sst_users_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.password_hash IS DISTINCT FROM OLD.password_hash
                    AND NEW.stamp IS NOT DISTINCT FROM OLD.stamp AND NOT NEW.keep_stamp THEN
                NEW.stamp := md5(random()::text || clock_timestamp()::text);
            END IF;
            NEW.keep_stamp := false;
            RETURN NEW;
        END
        $$""",
        "CREATE TRIGGER sst_users_stamp BEFORE UPDATE ON sst_users"
        " FOR EACH ROW EXECUTE FUNCTION sst_users_stamp()",
    ),
)

TABLES: Final = frozenset(
    {
        VERSION_TABLE,
        "sst_meta",
        "sst_overrides",
        "sst_decisions",
        "sst_runs",
        "sst_logs",
        "sst_counters",
        "sst_audit",
        "sst_users",
    }
)
