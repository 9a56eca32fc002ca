"""The command channel on a real PostgreSQL: NOTIFY wakes the owner, only the lease holder
takes a command, each is taken once, answers come back, and polling covers lost wakeups."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

pytest.importorskip("psycopg")

from supervisor.cluster import commands as cmd
from supervisor.cluster import schema
from supervisor.cluster.db import Connection, connect
from supervisor.cluster.lease import Leases, LeaseTiming
from supervisor.core.errors import BackendError
from tests.postgres import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]

LONG = LeaseTiming(ttl=timedelta(seconds=30), renew_every=timedelta(seconds=5))


@pytest.fixture
def owner(pg_dsn: str) -> Iterator[Connection]:
    with connect(pg_dsn) as conn:
        schema.install(conn)
        schema.register(conn, ["a", "b"])
        Leases(conn, holder="owner", timing=LONG).acquire(["a"])
        yield conn


def test_a_command_wakes_the_owner_and_the_answer_wakes_the_sender(
    pg_dsn: str, owner: Connection
) -> None:
    owner_ears = cmd.Listener(pg_dsn)
    sender_ears = cmd.Listener(pg_dsn)
    try:
        with connect(pg_dsn) as sender:
            command_id = cmd.send(
                sender, scheduler_id="a", kind=cmd.CommandKind.EXECUTE, issued_by="web@h2"
            )
            notices = owner_ears.wait(10)
            assert cmd.Notice(channel=schema.COMMAND_CHANNEL, payload="a") in notices
            [taken] = cmd.take(owner, holder="owner")
            assert (taken.command_id, taken.kind, taken.issued_by) == (
                command_id,
                cmd.CommandKind.EXECUTE,
                "web@h2",
            )
            # Until answered, the taker gets it again (its answer may have been lost).
            assert cmd.take(owner, holder="owner") == [taken]
            cmd.answer(owner, taken, holder="owner", body={"ok": True, "run_id": 7})
            assert cmd.take(owner, holder="owner") == []  # answered: done
            got = cmd.wait_answer(sender, sender_ears, command_id, timeout=10)
            assert got == cmd.Answer(
                command_id=command_id, answered_by="owner", body={"ok": True, "run_id": 7}
            )
    finally:
        owner_ears.close()
        sender_ears.close()


def test_only_the_lease_holder_takes_a_command(pg_dsn: str, owner: Connection) -> None:
    with connect(pg_dsn) as other:
        cmd.send(other, scheduler_id="b", kind=cmd.CommandKind.STOP, issued_by="cli")
        cmd.send(other, scheduler_id="a", kind=cmd.CommandKind.STOP, issued_by="cli")
        assert cmd.take(other, holder="someone-else") == []
        assert [c.scheduler_id for c in cmd.take(owner, holder="owner")] == ["a"]
        [lease], _ = Leases(other, holder="h2", timing=LONG).acquire(["b"])
        assert [c.scheduler_id for c in cmd.take(other, holder="h2")] == ["b"]
        assert lease.token == 1


def test_polling_finds_an_answer_whose_notification_was_missed(
    pg_dsn: str, owner: Connection
) -> None:
    with connect(pg_dsn) as sender:
        command_id = cmd.send(
            sender, scheduler_id="a", kind=cmd.CommandKind.SETTINGS_CHANGED, issued_by="cli"
        )
        [taken] = cmd.take(owner, holder="owner")
        cmd.answer(owner, taken, holder="owner", body={"ok": True})
        # The sender starts listening only now: the NOTIFY is gone, the row is not.
        late_ears = cmd.Listener(pg_dsn)
        try:
            got = cmd.wait_answer(sender, late_ears, command_id, timeout=10, poll_every=0.05)
            assert got.body == {"ok": True}
        finally:
            late_ears.close()


def test_an_answer_that_arrives_while_waiting_is_seen(pg_dsn: str, owner: Connection) -> None:
    ears = cmd.Listener(pg_dsn)
    try:
        with connect(pg_dsn) as sender:
            command_id = cmd.send(
                sender, scheduler_id="a", kind=cmd.CommandKind.START, issued_by="cli"
            )
            [taken] = cmd.take(owner, holder="owner")
            answering = threading.Timer(
                0.2, cmd.answer, args=(owner, taken), kwargs={"holder": "owner", "body": {"x": 1}}
            )
            answering.start()
            got = cmd.wait_answer(sender, ears, command_id, timeout=10, poll_every=5)
            answering.join()
            assert got.body == {"x": 1}
    finally:
        ears.close()


def test_nobody_owning_the_scheduler_is_a_backend_error(pg_dsn: str, owner: Connection) -> None:
    ears = cmd.Listener(pg_dsn)
    try:
        with connect(pg_dsn) as sender:
            command_id = cmd.send(
                sender, scheduler_id="b", kind=cmd.CommandKind.EXECUTE, issued_by="cli"
            )
            with pytest.raises(BackendError, match=f"command {command_id}"):
                cmd.wait_answer(sender, ears, command_id, timeout=0.3, poll_every=0.1)
    finally:
        ears.close()
