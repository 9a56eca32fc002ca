"""Commands from this host to the owner of a scheduler, and their answers.

A ``Sender`` finds the owner by its lease, queues the command (``commands.send``) and
waits for the answer, woken by NOTIFY, polling as the fallback. Each command waits on a
line of its own (a connection and a listener, kept for reuse while idle): a slow host
holds up only the commands sent to it. A command nobody took in time is withdrawn, so no
later owner acts on it; one the owner took but did not answer in time may still be
carried out, and the error says so (``CommandUnconfirmed``).

May import ``core`` and ``cluster.db``/``cluster.commands``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from supervisor.cluster import commands as cmd
from supervisor.cluster.db import CONNECTION_ERRORS, Connection, close_quietly
from supervisor.core.errors import BackendError, CommandUnconfirmed

# How long the manager lets a custom action run (``manager.shell.ACTION_TIMEOUT``).
ACTION_SECONDS = 60.0
# Idle lines kept for the next commands; more at once open lines of their own.
IDLE_LINES = 2

OWNER = (
    "SELECT holder FROM cluster_leases WHERE scheduler_id = %s "
    "AND holder IS NOT NULL AND expires_at > clock_timestamp()"
)
WITHDRAW = "DELETE FROM cluster_commands WHERE command_id = %s AND taken_at IS NULL RETURNING 1"
TAKEN = (
    "SELECT taken_by, to_char(taken_at AT TIME ZONE 'UTC', 'HH24:MI:SS') "
    "FROM cluster_commands WHERE command_id = %s"
)


@dataclass(slots=True)
class _Line:
    """One command's way to the database: a connection and a listener for the answers."""

    conn: Connection
    listener: cmd.Listener
    reused: bool = False  # kept idle since an earlier command (its server may be gone)
    broken: bool = False

    def close(self) -> None:
        self.broken = True
        close_quietly(self.listener, self.conn)


class _Unsent(Exception):
    """A reused line failed before the command was queued: try once on a fresh one."""


class Sender:
    """``timeout``: how long a command waits for its answer (a custom action a minute more).
    Safe to use from several threads at once."""

    def __init__(self, dsn: str, *, host: str, params: dict[str, int], timeout: float) -> None:
        self._dsn = dsn
        self._host = host
        self._params = params
        self._timeout = timeout
        self._lock = threading.Lock()  # guards ``_idle`` and ``_closed`` only
        self._idle: list[_Line] = []
        self._closed = False

    def send(
        self, scheduler_id: str, kind: str, payload: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        """The answer body of the owner of ``scheduler_id`` (``host``: who answered).

        Raises ``CommandUnconfirmed`` when the command was delivered (or sent and the
        database then lost) but not answered in time: it may still be carried out.
        ``BackendError`` when no host owns the scheduler, none took the command in time
        (it is withdrawn) or the database cannot be reached before it was sent."""
        command = _Command(scheduler_id=scheduler_id, kind=kind, payload=payload, actor=actor)
        try:
            answer = self._send_on(self._borrow(), command)
        except _Unsent:
            answer = self._send_on(self._borrow(fresh=True), command)
        return {**answer.body, "host": answer.answered_by}

    def _send_on(self, line: _Line, command: _Command) -> cmd.Answer:
        try:
            answer = self._converse(line, command)
        except (BackendError, _Unsent):
            self._give_back(line)  # kept unless the conversation broke it
            raise
        except BaseException:
            line.close()  # interrupted midway: never reused
            raise
        self._give_back(line)
        return answer

    def _converse(self, line: _Line, command: _Command) -> cmd.Answer:
        conn, scheduler_id = line.conn, command.scheduler_id
        try:
            row = conn.execute(OWNER, (scheduler_id,)).fetchone()
            if row is None:
                raise BackendError(
                    f"no host owns scheduler {scheduler_id!r}: no manager run with "
                    "--cluster on this database holds its lease now"
                )
            owner = str(row[0])
            command_id = cmd.send(
                conn,
                scheduler_id=scheduler_id,
                kind=cmd.CommandKind(command.kind),
                issued_by=f"{self._host} ({command.actor})",
                payload=command.payload,
            )
        except CONNECTION_ERRORS as error:
            line.close()
            if line.reused:
                raise _Unsent from error
            raise BackendError(f"cannot reach the cluster database: {error}") from error
        # A custom action may take its full minute on the owner.
        timeout = self._timeout + (ACTION_SECONDS if command.kind == "action" else 0)
        try:
            return self._answer(line, command, command_id, owner, timeout=timeout)
        except CONNECTION_ERRORS as error:
            line.close()
            raise CommandUnconfirmed(
                f"{command.what} was sent to {owner}, then the cluster database was lost "
                f"({' '.join(str(error).split())}); {command.check}"
            ) from error

    def _answer(
        self, line: _Line, command: _Command, command_id: int, owner: str, *, timeout: float
    ) -> cmd.Answer:
        conn = line.conn
        try:
            return cmd.wait_answer(conn, line.listener, command_id, timeout=timeout)
        except BackendError:
            pass
        if conn.execute(WITHDRAW, (command_id,)).fetchone() is not None:
            # Nobody took it: withdrawn, so no later owner acts on a stale command.
            raise BackendError(
                f"{owner} (the owner of {command.scheduler_id!r}) did not take "
                f"{command.what} within {timeout:g}s; it was withdrawn and will not be "
                "carried out"
            ) from None
        late = cmd.read_answer(conn, command_id)
        if late is not None:  # answered while it was being withdrawn
            return late
        taken = conn.execute(TAKEN, (command_id,)).fetchone()
        by, at = (owner, "?") if taken is None else (str(taken[0]), str(taken[1]))
        raise CommandUnconfirmed(
            f"{command.what} was delivered to {by} at {at} UTC but not answered within "
            f"{timeout:g}s; {command.check}"
        ) from None

    def _borrow(self, *, fresh: bool = False) -> _Line:
        with self._lock:
            if self._closed:
                raise BackendError("this host is leaving the cluster")
            if self._idle and not fresh:
                line = self._idle.pop()
                line.reused = True
                return line
        # Opened outside the lock: a connect may take its timeout.
        try:
            conn, listener = cmd.open_line(
                self._dsn, application_name=f"sst {self._host} send", **self._params
            )
        except CONNECTION_ERRORS as error:
            raise BackendError(f"cannot reach the cluster database: {error}") from error
        return _Line(conn=conn, listener=listener)

    def _give_back(self, line: _Line) -> None:
        with self._lock:
            if not line.broken and not self._closed and len(self._idle) < IDLE_LINES:
                self._idle.append(line)
                return
        line.close()

    def close(self) -> None:
        """Close the idle lines; a command still waiting closes its own when it ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for line in idle:
            line.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Command:
    scheduler_id: str
    kind: str
    payload: dict[str, Any]
    actor: str

    @property
    def what(self) -> str:
        return f"the {self.kind} command for {self.scheduler_id!r}"

    @property
    def check(self) -> str:
        """What the operator should do before sending it again."""
        return (
            f"it may still be carried out there: check the status and runs of "
            f"{self.scheduler_id!r} before sending it again"
        )
