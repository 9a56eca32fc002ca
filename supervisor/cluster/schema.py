"""The coordination tables, created idempotently (``install``).

- ``cluster_leases``: one row per scheduler; who holds it, its fencing token (only ever
  grows), and when it expires by the database clock. The holder's database session
  (``holder_pid``, ``holder_backend_start``) lets others see a dead holder before expiry.
- ``cluster_slots``: one row per claimed (scheduler, planned slot): the uniqueness that
  makes a slot run at most once, whatever the hosts' clocks say.
- ``cluster_runs``: the runs, each written with the token it was started under
  (``run_ref``: the manager's own ID of the run, where a manager started it).
- ``cluster_hosts``: the hosts taking part, seen by the database clock with their session,
  so each can take its fair share of the schedulers.
- ``cluster_commands``: commands for a scheduler's owner and their answers (the polling
  fallback of LISTEN/NOTIFY, and the durable record of each command).
- ``cluster_status``: what each owner shows of its schedulers (state, current run, last
  and next times, last outcome), so every host's status and cards show the owner's.
- ``cluster_settings``: each scheduler's settings overrides as last changed on any host
  (``version`` from one sequence), which every host applies to its own.

May import ``cluster.db``.
"""

from __future__ import annotations

from supervisor.cluster.db import Connection

LEASE_CHANNEL = "sst_cluster_leases"
COMMAND_CHANNEL = "sst_cluster_commands"
ANSWER_CHANNEL = "sst_cluster_answers"

DDL = """
CREATE TABLE IF NOT EXISTS cluster_leases (
    scheduler_id text PRIMARY KEY,
    token bigint NOT NULL DEFAULT 0 CHECK (token >= 0),
    holder text,
    holder_pid integer,
    holder_backend_start timestamptz,
    acquired_at timestamptz,
    renewed_at timestamptz,
    released_at timestamptz,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE TABLE IF NOT EXISTS cluster_slots (
    scheduler_id text NOT NULL,
    planned_slot timestamptz NOT NULL,
    token bigint NOT NULL,
    holder text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scheduler_id, planned_slot)
);
CREATE TABLE IF NOT EXISTS cluster_runs (
    run_id bigserial PRIMARY KEY,
    scheduler_id text NOT NULL,
    planned_slot timestamptz NOT NULL,
    trigger text NOT NULL,
    token bigint NOT NULL,
    host text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    outcome text,
    UNIQUE (scheduler_id, planned_slot),
    FOREIGN KEY (scheduler_id, planned_slot) REFERENCES cluster_slots
);
CREATE INDEX IF NOT EXISTS cluster_runs_open
    ON cluster_runs (scheduler_id) WHERE ended_at IS NULL;
ALTER TABLE cluster_runs ADD COLUMN IF NOT EXISTS run_ref text;
CREATE TABLE IF NOT EXISTS cluster_hosts (
    host_id text PRIMARY KEY,
    pid integer,
    backend_start timestamptz,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- When this host process joined (kept by the heartbeat): the hosts that saw a one-shot run.
ALTER TABLE cluster_hosts ADD COLUMN IF NOT EXISTS joined_at timestamptz NOT NULL
    DEFAULT clock_timestamp();
CREATE TABLE IF NOT EXISTS cluster_commands (
    command_id bigserial PRIMARY KEY,
    scheduler_id text NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    issued_by text NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    taken_by text,
    taken_at timestamptz,
    answer jsonb,
    answered_at timestamptz
);
CREATE TABLE IF NOT EXISTS cluster_status (
    scheduler_id text PRIMARY KEY,
    host text NOT NULL,
    token bigint NOT NULL,
    state text NOT NULL,
    run_phase text,
    current_run_id text,
    last_started_at timestamptz,
    last_completed_at timestamptz,
    next_planned_at timestamptz,
    last_outcome text,
    last_error text,
    last_actor text,
    decision text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE SEQUENCE IF NOT EXISTS cluster_settings_version;
CREATE TABLE IF NOT EXISTS cluster_settings (
    scheduler_id text PRIMARY KEY,
    overrides jsonb NOT NULL,
    version bigint NOT NULL DEFAULT nextval('cluster_settings_version'),
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS cluster_commands_pending
    ON cluster_commands (scheduler_id) WHERE taken_at IS NULL;
"""


def install(conn: Connection) -> None:
    """Create the tables that are missing (safe to run from several hosts at once).

    Raises ``psycopg.Error`` when the database refuses.
    """
    with conn.transaction():
        # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog: serialise.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('sched-supervisor cluster schema'))")
        conn.execute(DDL)
        # Host rows are per process; forget those not seen for an hour.
        conn.execute(
            "DELETE FROM cluster_hosts WHERE seen_at < clock_timestamp() - interval '1 hour'"
        )


def register(conn: Connection, scheduler_ids: list[str]) -> None:
    """Make sure each scheduler has a lease row (free, token 0, until someone acquires it)."""
    conn.execute(
        "INSERT INTO cluster_leases (scheduler_id) SELECT unnest(%(ids)s::text[]) "
        "ON CONFLICT (scheduler_id) DO NOTHING",
        {"ids": scheduler_ids},
    )
