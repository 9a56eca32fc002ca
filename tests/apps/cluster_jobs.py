"""Schedulers for the cluster tests: each run writes an independent ledger row.

The ledger (``cluster_test_ledger``, made by the test, no constraints) is written by the
run itself: its manager's run ID, the host it ran on (``CLUSTER_HOST``) and when it began
and ended, on the database ``CLUSTER_LEDGER_DSN``. A run works for
``CLUSTER_JOB_SECONDS`` (default 0.3 s) unless cancelled. ``CLUSTER_TICKS`` adds ticks.
"""

from __future__ import annotations

import os
from datetime import timedelta

import psycopg

from supervisor import Configurator, cfgscheduler, scheduler, user

cfg = Configurator("cluster-tests")
schedulers = cfgscheduler.enable(cfg)

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS cluster_test_ledger (
    scheduler_id text NOT NULL,
    run_ref text NOT NULL,
    host text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
)
"""


def ledgered(ctx: scheduler.Context) -> None:
    with psycopg.connect(os.environ["CLUSTER_LEDGER_DSN"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO cluster_test_ledger (scheduler_id, run_ref, host) VALUES (%s, %s, %s)",
            (ctx.scheduler_id, ctx.run_id, os.environ.get("CLUSTER_HOST", "?")),
        )
        ctx.sleep(float(os.environ.get("CLUSTER_JOB_SECONDS", "0.3")))
        conn.execute(
            "UPDATE cluster_test_ledger SET ended_at = clock_timestamp() WHERE run_ref = %s",
            (ctx.run_id,),
        )


def configure(options: scheduler.Options) -> None:
    schedulers.use_cases.configure(user.su(), options)


configure(
    scheduler.Options(
        id="c.tick",
        name="Tick",
        kind=scheduler.Kind.SCHEDULE,
        runner=ledgered,
        defaults=scheduler.Settings(pause_time=timedelta(seconds=1)),
    )
)
# ``CLUSTER_TICKS=N``: N more ticks, c.tick.0 ... (the connection-failure test).
for number in range(int(os.environ.get("CLUSTER_TICKS", "0"))):
    configure(
        scheduler.Options(
            id=f"c.tick.{number}",
            name=f"Tick {number}",
            kind=scheduler.Kind.SCHEDULE,
            runner=ledgered,
            defaults=scheduler.Settings(pause_time=timedelta(seconds=1)),
        )
    )
configure(
    scheduler.Options(
        id="c.manual",
        name="Manual",
        kind=scheduler.Kind.MANUAL,
        runner=ledgered,
        actions=[
            scheduler.CustomAction(
                id="where", title="Where", action=lambda: os.environ.get("CLUSTER_HOST", "?")
            )
        ],
    )
)
