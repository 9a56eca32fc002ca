"""The command channel: a command from any host reaches the scheduler's owner, and back.

A command is a row in ``cluster_commands`` (durable, and the polling fallback) announced
with NOTIFY in the same transaction; the owner LISTENs, takes the commands of the
schedulers it holds (only the lease holder can take one), and writes the answer, announced
the same way. A host that missed a notification (reconnecting, PostgreSQL restarted)
finds the rows on its next poll. Uses only the psycopg API that 3.1 (Debian 12) offers:
notifications are read from the libpq connection without ``notifies(timeout=...)``.

May import ``core`` and ``cluster.db``/``cluster.schema``.
"""

from __future__ import annotations

import enum
import select
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from supervisor.cluster.db import Connection, connect
from supervisor.cluster.schema import ANSWER_CHANNEL, COMMAND_CHANNEL, LEASE_CHANNEL
from supervisor.core.errors import BackendError


class CommandKind(enum.Enum):
    START = "start"
    STOP = "stop"
    EXECUTE = "execute"
    ACTION = "action"  # a custom action: payload {"action_id": ...}
    PAUSE = "pause"  # payload {"until": ISO 8601, "reason": ...}
    SETTINGS_CHANGED = "settings_changed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    command_id: int
    scheduler_id: str
    kind: CommandKind
    payload: dict[str, Any] = field(default_factory=dict)
    issued_by: str
    issued_at: datetime  # by the database clock


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    command_id: int
    answered_by: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    channel: str
    payload: str


SEND = f"""
WITH c AS (
    INSERT INTO cluster_commands (scheduler_id, kind, payload, issued_by)
    VALUES (%(id)s, %(kind)s, %(payload)s, %(by)s)
    RETURNING command_id, scheduler_id
)
SELECT c.command_id, pg_notify('{COMMAND_CHANNEL}', c.scheduler_id) FROM c
"""  # noqa: S608 (composed of constants only)

TAKE = """
UPDATE cluster_commands AS c SET taken_by = %(holder)s, taken_at = clock_timestamp()
 WHERE c.command_id IN (
        SELECT p.command_id FROM cluster_commands AS p
          JOIN cluster_leases AS l ON l.scheduler_id = p.scheduler_id
         WHERE l.holder = %(holder)s
           AND (p.taken_at IS NULL OR (p.taken_by = %(holder)s AND p.answered_at IS NULL))
         ORDER BY p.command_id
           FOR UPDATE OF p SKIP LOCKED)
RETURNING c.command_id, c.scheduler_id, c.kind, c.payload, c.issued_by, c.issued_at
"""

ANSWER = f"""
WITH a AS (
    UPDATE cluster_commands SET answer = %(body)s, answered_at = clock_timestamp()
     WHERE command_id = %(cid)s AND taken_by = %(holder)s AND answered_at IS NULL
    RETURNING command_id
)
SELECT pg_notify('{ANSWER_CHANNEL}', a.command_id::text) FROM a
"""  # noqa: S608 (composed of constants only)


def send(
    conn: Connection,
    *,
    scheduler_id: str,
    kind: CommandKind,
    issued_by: str,
    payload: dict[str, Any] | None = None,
) -> int:
    """Queue a command for whoever owns ``scheduler_id``; returns its ID.

    Raises ``psycopg.OperationalError`` when the connection is lost."""
    row = conn.execute(
        SEND,
        {"id": scheduler_id, "kind": kind.value, "payload": Jsonb(payload or {}), "by": issued_by},
    ).fetchone()
    assert row is not None
    command_id: int = row[0]
    return command_id


def take(conn: Connection, *, holder: str) -> list[Command]:
    """Take the pending commands of the schedulers ``holder`` owns (each once), and again
    those it took but never answered (the connection was lost in between)."""
    rows = conn.execute(TAKE, {"holder": holder}).fetchall()
    return [
        Command(
            command_id=command_id,
            scheduler_id=scheduler_id,
            kind=CommandKind(kind),
            payload=dict(payload),
            issued_by=issued_by,
            issued_at=issued_at,
        )
        for command_id, scheduler_id, kind, payload, issued_by, issued_at in rows
    ]


def answer(conn: Connection, command: Command, *, holder: str, body: dict[str, Any]) -> None:
    """Write the answer to a command this host took, and wake the sender."""
    conn.execute(ANSWER, {"cid": command.command_id, "holder": holder, "body": Jsonb(body)})


def read_answer(conn: Connection, command_id: int) -> Answer | None:
    row = conn.execute(
        "SELECT taken_by, answer FROM cluster_commands "
        "WHERE command_id = %(cid)s AND answered_at IS NOT NULL",
        {"cid": command_id},
    ).fetchone()
    if row is None:
        return None
    return Answer(command_id=command_id, answered_by=row[0], body=dict(row[1]))


class Listener:
    """A connection of its own that LISTENs on the channels; ``wait`` returns what came.

    Every method raises ``psycopg.OperationalError`` once the connection is lost.
    """

    CHANNELS = (LEASE_CHANNEL, COMMAND_CHANNEL, ANSWER_CHANNEL)

    def __init__(
        self, dsn: str, *, application_name: str = "sched-supervisor listener", **params: int
    ) -> None:
        self._conn = connect(dsn, application_name=application_name, **params)
        for channel in self.CHANNELS:
            self._conn.execute(f"LISTEN {channel}")

    def fileno(self) -> int:
        return self._conn.fileno()

    def drain(self) -> list[Notice]:
        """What has arrived so far, without waiting."""
        pgconn = self._conn.pgconn
        pgconn.consume_input()
        found: list[Notice] = []
        while (notify := pgconn.notifies()) is not None:
            found.append(Notice(channel=notify.relname.decode(), payload=notify.extra.decode()))
        return found

    def wait(self, timeout: float) -> list[Notice]:
        """Wait up to ``timeout`` seconds for at least one notification."""
        found = self.drain()
        if not found and select.select([self.fileno()], [], [], max(0.0, timeout))[0]:
            found = self.drain()
        return found

    def close(self) -> None:
        self._conn.close()


def wait_answer(
    conn: Connection,
    listener: Listener,
    command_id: int,
    *,
    timeout: float,
    poll_every: float = 0.5,
) -> Answer:
    """Wait for the answer to ``command_id``: woken by NOTIFY, polling as the fallback.

    Raises ``BackendError`` when no owner answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    wanted = str(command_id)
    while True:
        found = read_answer(conn, command_id)
        if found is not None:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            raise BackendError(f"no host answered command {command_id} within {timeout:g}s")
        waited_until = time.monotonic() + min(left, poll_every)
        while time.monotonic() < waited_until:
            notices = listener.wait(waited_until - time.monotonic())
            if any(n.channel == ANSWER_CHANNEL and n.payload == wanted for n in notices):
                break


def open_line(dsn: str, *, application_name: str, **params: int) -> tuple[Connection, Listener]:
    """A connection and a listener of its own (named ``application_name`` and ``... listen``);
    raises ``psycopg.OperationalError`` when either cannot be opened (none is left open)."""
    conn = connect(dsn, application_name=application_name, **params)
    try:
        listener = Listener(dsn, application_name=f"{application_name} listen", **params)
    except BaseException:
        conn.close()
        raise
    return conn, listener
