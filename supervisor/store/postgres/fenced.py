"""Run writes under a lease's fencing token (``store.protocols.FencedRunHistory``).

The leases are the cluster package's ``cluster_leases`` rows (``cluster.schema``), in the
same database: one per scheduler, whose token grows by one at every takeover and release,
so (scheduler, token) names one tenure of one host. Each fenced write is one statement
that share-locks the lease row carrying the token and writes only if there is one: a
takeover (which updates that row) waits until the write has committed, and a write after
a takeover finds no row and is refused with ``StaleLease``. Nothing is written then.
Without the cluster's table in the database, fenced writes raise ``StoreError`` saying so.
May import ``core``, ``store.codec``, ``store.protocols``, ``store.postgres.*`` and the
stdlib.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Final

import psycopg

from supervisor.core.errors import StaleLease, StoreError, UnknownRun
from supervisor.core.records import Outcome, RunRecord
from supervisor.store.codec import require_aware
from supervisor.store.postgres.database import Connection, Database
from supervisor.store.postgres.logs import LOCK_COUNTER
from supervisor.store.postgres.runs import (
    COLUMNS,
    apply_retention,
    finish_params,
    insert_params,
    run_from_row,
)
from supervisor.store.postgres.text import storable_or_none

LEASES_TABLE: Final = "cluster_leases"

_LEASE: Final = (
    f"SELECT token FROM {LEASES_TABLE}"  # noqa: S608
    " WHERE scheduler_id = %(sid)s AND token = %(token)s FOR SHARE"
)

START: Final = f"""
WITH lease AS ({_LEASE})
INSERT INTO sst_runs (run_id, scheduler_id, trigger, triggered_by, started_at, ended_at,
                      outcome, exit_code, signal, error, token)
SELECT %(run)s, %(sid)s, %(trigger)s, %(by)s, %(started)s, %(ended)s, %(outcome)s,
       %(exit)s, %(signal)s, %(error)s, lease.token FROM lease
ON CONFLICT (run_id) DO NOTHING
RETURNING seq
"""  # noqa: S608 (composed of constants only)

# The scheduler is the run's; a run written under an older token is refused too (its
# tenure ended, and the new owner may have marked it interrupted: that stays).
# The counter lock comes first, as in ``runs.FINISH_RUN``.
END: Final = f"""
WITH counter AS ({LOCK_COUNTER}), lease AS (
    SELECT l.token FROM {LEASES_TABLE} AS l JOIN sst_runs AS run USING (scheduler_id)
     WHERE run.run_id = %(run)s AND l.token = %(token)s AND EXISTS (SELECT 1 FROM counter)
       FOR SHARE OF l
)
UPDATE sst_runs AS r
   SET ended_at = %(ended)s, outcome = %(outcome)s, exit_code = %(exit)s,
       signal = %(signal)s, error = %(error)s
  FROM lease
 WHERE r.run_id = %(run)s AND (r.token IS NULL OR r.token = lease.token)
RETURNING {", ".join("r." + c.strip() for c in COLUMNS.split(","))}
"""  # noqa: S608 (composed of constants only)

INTERRUPT_OLDER: Final = f"""
WITH lease AS ({_LEASE})
UPDATE sst_runs AS r SET ended_at = %(ended)s, outcome = %(outcome)s, exit_code = NULL,
       signal = NULL, error = %(error)s
  FROM lease
 WHERE r.scheduler_id = %(sid)s AND r.ended_at IS NULL
   AND (r.token IS NULL OR r.token < lease.token)
RETURNING r.run_id
"""  # noqa: S608 (composed of constants only)


class PostgresFencedRuns:
    _db: Database
    _max_runs: int

    def insert_run_fenced(self, run: RunRecord, *, token: int) -> None:
        params = {**insert_params(run), "token": token}
        with _fenced(self._db, one_statement=True) as conn:
            if conn.execute(START, params).fetchone() is not None:
                return
            _refuse(conn, run.scheduler_id, token)
            raise StoreError(f"run {run.run_id!r} is already stored")

    def finish_run_fenced(
        self,
        run_id: str,
        *,
        token: int,
        ended_at: datetime,
        outcome: Outcome,
        exit_code: int | None,
        signal: int | None,
        error: str | None,
    ) -> RunRecord:
        params = finish_params(
            run_id,
            ended_at=ended_at,
            outcome=outcome,
            exit_code=exit_code,
            signal=signal,
            error=error,
        )
        with _fenced(self._db) as conn:
            row = conn.execute(END, {**params, "token": token}).fetchone()
            if row is None:
                found = conn.execute(
                    "SELECT scheduler_id FROM sst_runs WHERE run_id = %s", (run_id,)
                ).fetchone()
                if found is None:
                    raise UnknownRun(f"no run with id {run_id!r}")
                raise StaleLease(found[0], token)
            apply_retention(conn, row[1], keep=self._max_runs)
        return run_from_row(row)

    def interrupt_runs_before(
        self, scheduler_id: str, *, token: int, ended_at: datetime, error: str | None
    ) -> list[str]:
        params = {
            "sid": scheduler_id,
            "token": token,
            "ended": require_aware(ended_at),
            "outcome": Outcome.INTERRUPTED.value,
            "error": storable_or_none(error),
        }
        with _fenced(self._db) as conn:
            conn.execute(LOCK_COUNTER)
            done = [row[0] for row in conn.execute(INTERRUPT_OLDER, params).fetchall()]
            if not done:
                _refuse(conn, scheduler_id, token)
            else:
                apply_retention(conn, scheduler_id, keep=self._max_runs)
        return done


@contextlib.contextmanager
def _fenced(db: Database, *, one_statement: bool = False) -> Iterator[Connection]:
    """``Database.write`` (``single`` for a write of ``one_statement``) that names a
    missing lease table instead of a bare SQL error."""
    try:
        with db.single() if one_statement else db.write() as conn:
            yield conn
    except StoreError as error:
        if isinstance(error.__cause__, psycopg.errors.UndefinedTable):
            raise StoreError(
                f"{db.description}: fenced run writes need the cluster's lease table"
                f" {LEASES_TABLE} in this database (supervisor.cluster.schema installs it)"
            ) from error
        raise


def _refuse(conn: Connection, scheduler_id: str, token: int) -> None:
    """``StaleLease`` unless the lease of ``scheduler_id`` carries ``token``."""
    row = conn.execute(
        f"SELECT 1 FROM {LEASES_TABLE} WHERE scheduler_id = %s AND token = %s",  # noqa: S608
        (scheduler_id, token),
    ).fetchone()
    if row is None:
        raise StaleLease(scheduler_id, token)
