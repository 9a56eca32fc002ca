"""Leases: which host owns which scheduler, with a fencing token, by the database clock.

One lease per scheduler (not one leader per host): a scheduler's writes are fenced by the
token of exactly the lease that guards them, a stuck scheduler never holds up the others,
and several hosts can share the schedulers. A host still does all its lease work in one
statement per renewal or acquisition round, whatever the number of schedulers.

Expiry is ``clock_timestamp()`` of the database plus the lease's time to live: the hosts'
clocks never enter it. A lease can be taken over when it has expired, was released, or its
holder's database session is gone (a killed host's connection closes at once; a stopped or
partitioned host keeps its session, so only expiry frees its leases). Each takeover adds
one to the token; a release adds one too, so nothing written under a released lease is
accepted. A host may renew its lease even after expiry as long as nobody took it over:
the token is unchanged, so no other host can have written under a newer one.

May import ``core`` and ``cluster.db``/``cluster.schema``/``cluster.timing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from supervisor.cluster.db import Connection
from supervisor.cluster.schema import LEASE_CHANNEL
from supervisor.cluster.timing import LeaseTiming

__all__ = ["Lease", "LeaseTiming", "Leases"]  # LeaseTiming: kept importable from here


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A lease one host holds: the token every write of the scheduler's runs carries."""

    scheduler_id: str
    holder: str
    token: int
    expires_at: datetime


_SESSION = "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"

_ELIGIBLE = """
       (l.holder IS NULL
        OR l.expires_at <= clock_timestamp()
        OR (%(dead_sessions)s AND NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a
                        WHERE a.pid = l.holder_pid
                          AND (a.backend_start IS NULL
                               OR a.backend_start = l.holder_backend_start))))
"""

# Rows another contender is taking right now are skipped, not waited for (SKIP LOCKED); a
# row updated meanwhile is re-checked against the eligibility rule before it is locked.
ACQUIRE = f"""
WITH candidates AS (
    SELECT l.scheduler_id FROM cluster_leases AS l
     WHERE l.scheduler_id = ANY(%(ids)s) AND {_ELIGIBLE}
     ORDER BY random() LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE cluster_leases AS l
   SET holder = %(holder)s, token = l.token + 1,
       holder_pid = pg_backend_pid(), holder_backend_start = {_SESSION},
       acquired_at = clock_timestamp(), renewed_at = clock_timestamp(),
       expires_at = clock_timestamp() + %(ttl)s
  FROM candidates AS c
 WHERE l.scheduler_id = c.scheduler_id
RETURNING l.scheduler_id, l.token, l.expires_at
"""  # noqa: S608 (composed of constants only)

# Runs left open under an older token belong to a host that lost the lease: interrupted.
# A separate statement (so a fresh snapshot) after the takeover has committed its row lock:
# every run started under the old token is visible, and none can start under it any more.
INTERRUPT_ORPHANS = """
UPDATE cluster_runs AS r
   SET ended_at = clock_timestamp(), outcome = 'interrupted'
  FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS won(scheduler_id, token)
 WHERE r.scheduler_id = won.scheduler_id AND r.ended_at IS NULL AND r.token < won.token
RETURNING r.run_id
"""

RENEW = f"""
UPDATE cluster_leases AS l
   SET expires_at = clock_timestamp() + %(ttl)s, renewed_at = clock_timestamp(),
       holder_pid = pg_backend_pid(), holder_backend_start = {_SESSION}
  FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS mine(scheduler_id, token)
 WHERE l.scheduler_id = mine.scheduler_id AND l.token = mine.token
   AND l.holder = %(holder)s
RETURNING l.scheduler_id, l.token, l.expires_at
"""  # noqa: S608 (composed of constants only)

RELEASE = f"""
WITH gone AS (
    UPDATE cluster_leases AS l
       SET holder = NULL, token = l.token + 1, holder_pid = NULL,
           holder_backend_start = NULL, released_at = clock_timestamp(),
           expires_at = '-infinity'
      FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS mine(scheduler_id, token)
     WHERE l.scheduler_id = mine.scheduler_id AND l.token = mine.token
       AND l.holder = %(holder)s
    RETURNING l.scheduler_id
)
SELECT gone.scheduler_id, pg_notify('{LEASE_CHANNEL}', gone.scheduler_id) FROM gone
"""  # noqa: S608 (composed of constants only)


# This host's row is written in the same statement, so it is counted apart (+1).
HEARTBEAT = f"""
WITH me AS (
    INSERT INTO cluster_hosts AS h (host_id, pid, backend_start, seen_at)
    VALUES (%(holder)s, pg_backend_pid(), {_SESSION}, clock_timestamp())
    ON CONFLICT (host_id) DO UPDATE
       SET pid = EXCLUDED.pid, backend_start = EXCLUDED.backend_start,
           seen_at = EXCLUDED.seen_at
    RETURNING 1
)
SELECT 1 + count(*) FROM cluster_hosts AS h
 WHERE h.host_id <> %(holder)s AND h.seen_at > clock_timestamp() - %(ttl)s
   AND EXISTS (SELECT 1 FROM pg_stat_activity AS a
                WHERE a.pid = h.pid
                  AND (a.backend_start IS NULL OR a.backend_start = h.backend_start))
   AND (SELECT count(*) FROM me) = 1
"""  # noqa: S608 (composed of constants only)

# A host's name is taken while its row was seen within a ttl by a session still alive, or
# was claimed within a ttl by a host still joining (no session of its loop yet).
LIVE_NAME = """
SELECT h.pid IS NULL, round(extract(epoch FROM clock_timestamp() - h.seen_at)::numeric, 1)
  FROM cluster_hosts AS h
 WHERE h.host_id = %(holder)s AND h.seen_at > clock_timestamp() - %(ttl)s
   AND (h.pid IS NULL
        OR EXISTS (SELECT 1 FROM pg_stat_activity AS a
                    WHERE a.pid = h.pid
                      AND (a.backend_start IS NULL OR a.backend_start = h.backend_start)))
   FOR UPDATE OF h
"""

# A joining host starts a new row (a restarted process is a new host: it saw none of the
# one-shot runs before); its loop's first heartbeat fills in its session.
CLAIM_NAME = """
INSERT INTO cluster_hosts AS h (host_id, pid, backend_start, seen_at, joined_at)
VALUES (%(holder)s, NULL, NULL, clock_timestamp(), clock_timestamp())
ON CONFLICT (host_id) DO NOTHING
RETURNING 1
"""


class Leases:
    """The lease operations of one host (``holder``) on one connection.

    Every method raises ``psycopg.OperationalError`` when the connection is lost; the
    caller reconnects. Nothing here reads the host's clock.
    """

    def __init__(self, conn: Connection, *, holder: str, timing: LeaseTiming) -> None:
        self._conn = conn
        self.holder = holder
        self.timing = timing

    def acquire(
        self, scheduler_ids: list[str], *, limit: int | None = None
    ) -> tuple[list[Lease], int]:
        """Take the leases among ``scheduler_ids`` that are free, expired or orphaned (at
        most ``limit`` of them, picked at random so contenders spread out).

        Returns the leases won and how many runs left open under older tokens were marked
        ``interrupted`` in the same transaction.
        """
        if not scheduler_ids or (limit is not None and limit <= 0):
            return [], 0
        with self._conn.transaction():
            rows = self._conn.execute(
                ACQUIRE,
                {
                    "holder": self.holder,
                    "ttl": self.timing.ttl,
                    "ids": scheduler_ids,
                    "limit": len(scheduler_ids) if limit is None else limit,
                    "dead_sessions": self.timing.dead_session_takeover,
                },
            ).fetchall()
            won = [self._lease(row) for row in rows]
            interrupted = 0
            if won:
                interrupted = len(
                    self._conn.execute(
                        INTERRUPT_ORPHANS,
                        {
                            "ids": [lease.scheduler_id for lease in won],
                            "tokens": [lease.token for lease in won],
                        },
                    ).fetchall()
                )
        return won, interrupted

    def renew(self, leases: list[Lease]) -> list[Lease]:
        """Extend the leases still carrying their token; the ones missing were lost."""
        if not leases:
            return []
        rows = self._conn.execute(RENEW, self._mine(leases)).fetchall()
        return [self._lease(row) for row in rows]

    def release(self, leases: list[Lease]) -> list[str]:
        """Give leases up at once (graceful hand-off) and wake the other hosts.

        Returns the IDs released; a lease already taken over is skipped.
        """
        if not leases:
            return []
        rows = self._conn.execute(RELEASE, self._mine(leases)).fetchall()
        return [row[0] for row in rows]

    def heartbeat(self) -> int:
        """Mark this host alive; return how many hosts are (seen within a ttl, session up)."""
        row = self._conn.execute(
            HEARTBEAT, {"holder": self.holder, "ttl": self.timing.ttl}
        ).fetchone()
        assert row is not None
        live: int = row[0]
        return live

    def join(self) -> str | None:
        """Take this host's name in the cluster; why not (another live member has it),
        or None. A name whose last holder died or stopped (no fresh heartbeat from a live
        session) is taken over."""
        params = {"holder": self.holder, "ttl": self.timing.ttl}
        with self._conn.transaction():
            row = self._conn.execute(LIVE_NAME, params).fetchone()
            if row is None:
                self._conn.execute("DELETE FROM cluster_hosts WHERE host_id = %s", (self.holder,))
                if self._conn.execute(CLAIM_NAME, params).fetchone() is not None:
                    return None
                row = (True, 0)  # another host claimed it this very moment
        joining, age = row
        if joining:
            return "another manager is joining the cluster under that name right now"
        return f"a live member of the cluster has that name (its heartbeat is {age}s old)"

    def leave(self) -> None:
        """Take this host out of the count at once (graceful shutdown)."""
        self._conn.execute("DELETE FROM cluster_hosts WHERE host_id = %s", (self.holder,))

    def is_current(self, scheduler_id: str, token: int) -> bool:
        """Whether the lease still carries ``token`` for this host (writes under it count)."""
        row = self._conn.execute(
            "SELECT token = %(token)s AND holder = %(holder)s FROM cluster_leases "
            "WHERE scheduler_id = %(id)s",
            {"id": scheduler_id, "token": token, "holder": self.holder},
        ).fetchone()
        return bool(row and row[0])

    def _mine(self, leases: list[Lease]) -> dict[str, object]:
        return {
            "holder": self.holder,
            "ttl": self.timing.ttl,
            "ids": [lease.scheduler_id for lease in leases],
            "tokens": [lease.token for lease in leases],
        }

    def _lease(self, row: tuple[object, ...]) -> Lease:
        scheduler_id, token, expires_at = row
        assert isinstance(scheduler_id, str) and isinstance(token, int)
        assert isinstance(expires_at, datetime)
        return Lease(
            scheduler_id=scheduler_id, holder=self.holder, token=token, expires_at=expires_at
        )
