"""A fenced host's late end: never accepted while unconfirmed, never written over the
heir's ``interrupted`` in the shared PostgreSQL store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.conninfo import conninfo_to_dict

from supervisor.cluster.member import Member, MemberConfig
from supervisor.core.clock import SystemClock
from supervisor.core.records import Outcome, RunRecord, Trigger
from supervisor.store.postgres import PostgresStore
from tests.postgres import PostgresCluster, pg_cluster, pg_dsn
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_an_end_queued_on_a_lost_connection_is_not_reported_written(
    pg_cluster: PostgresCluster, pg_dsn: str
) -> None:
    lines: list[str] = []
    name = conninfo_to_dict(pg_dsn)["dbname"]
    member = Member(
        MemberConfig(dsn=pg_dsn, host_id="a", scheduler_ids=("s",)),
        clock=SystemClock(),
        report=lines.append,
    )
    member.open()
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        try:
            wait_for(lambda: member.owns("s"), timeout=10, what="the lease")
            assert member.claim("s", "late", slot=datetime.now(UTC), trigger="manual") is None
            # The cluster database goes away (and stays away for a ttl).
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            assert member.record_end("late", "succeeded") is None
            assert any("end_unknown" in line for line in lines)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            member.close()


def test_a_late_end_never_overwrites_the_interrupted_mark_of_a_cluster_run(
    pg_dsn: str,
) -> None:
    with PostgresStore.open(pg_dsn) as store:
        for run_id, host in (("cluster", "a"), ("single", None)):
            store.insert_run(
                RunRecord(
                    run_id=run_id,
                    scheduler_id="s",
                    trigger=Trigger.MANUAL,
                    triggered_by=None,
                    started_at=T0,
                    host=host,
                )
            )
            store.mark_interrupted(run_id, ended_at=T0 + timedelta(seconds=1), error="taken over")
        late = {"ended_at": T0 + timedelta(seconds=5), "outcome": Outcome.SUCCEEDED}
        kept = store.finish_run("cluster", exit_code=0, signal=None, error=None, **late)
        assert kept.outcome is Outcome.INTERRUPTED
        assert store.get_run("cluster").error == "taken over"
        # Without a host (one manager) the end is stored as before.
        ended = store.finish_run("single", exit_code=0, signal=None, error=None, **late)
        assert ended.outcome is Outcome.SUCCEEDED
