"""Commands from this host to the owner of a scheduler, and their answers.

A ``Sender`` has a connection of its own (one command at a time) and a listener for the
answers: it finds the owner by its lease, queues the command (``commands.send``) and
waits for the answer, woken by NOTIFY, polling as the fallback. A command nobody took in
time is withdrawn, so no later owner acts on it.

May import ``core`` and ``cluster.db``/``cluster.commands``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from supervisor.cluster import commands as cmd
from supervisor.cluster.db import CONNECTION_ERRORS, Connection, connect
from supervisor.core.errors import BackendError

# How long the manager lets a custom action run (``manager.shell.ACTION_TIMEOUT``).
ACTION_SECONDS = 60.0


class Sender:
    """``timeout``: how long a command waits for its answer (a custom action a minute more)."""

    def __init__(self, dsn: str, *, host: str, params: dict[str, int], timeout: float) -> None:
        self._dsn = dsn
        self._host = host
        self._params = params
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._listener: cmd.Listener | None = None

    def send(
        self, scheduler_id: str, kind: str, payload: dict[str, Any], *, actor: str
    ) -> dict[str, Any]:
        """The answer body of the owner of ``scheduler_id`` (``host``: who answered).

        Raises ``BackendError`` when no host owns it, none answered in time, or the
        database cannot be reached."""
        with self._lock:
            try:
                if self._conn is None or self._listener is None:
                    self._conn = connect(
                        self._dsn, application_name=f"sst {self._host} send", **self._params
                    )
                    self._listener = cmd.Listener(
                        self._dsn,
                        application_name=f"sst {self._host} answers",
                        **self._params,
                    )
                conn, listener = self._conn, self._listener
                row = conn.execute(
                    "SELECT holder FROM cluster_leases WHERE scheduler_id = %s "
                    "AND holder IS NOT NULL AND expires_at > clock_timestamp()",
                    (scheduler_id,),
                ).fetchone()
                if row is None:
                    raise BackendError(
                        f"no host owns scheduler {scheduler_id!r}: no manager run with "
                        "--cluster on this database holds its lease now"
                    )
                command_id = cmd.send(
                    conn,
                    scheduler_id=scheduler_id,
                    kind=cmd.CommandKind(kind),
                    issued_by=f"{self._host} ({actor})",
                    payload=payload,
                )
                # A custom action may take its full minute on the owner.
                timeout = self._timeout + (ACTION_SECONDS if kind == "action" else 0)
                try:
                    answer = cmd.wait_answer(conn, listener, command_id, timeout=timeout)
                except BackendError:
                    # Nobody took it: withdraw it, so no later owner acts on a stale command.
                    conn.execute(
                        "DELETE FROM cluster_commands WHERE command_id = %s AND taken_at IS NULL",
                        (command_id,),
                    )
                    raise BackendError(
                        f"{row[0]} (the owner of {scheduler_id!r}) did not answer within "
                        f"{timeout:g}s"
                    ) from None
            except CONNECTION_ERRORS as error:
                self._close()
                raise BackendError(f"cannot reach the cluster database: {error}") from error
        return {**answer.body, "host": answer.answered_by}

    def _close(self) -> None:
        for closable in (self._listener, self._conn):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        self._conn = None
        self._listener = None

    def close(self) -> None:
        with self._lock:
            self._close()
