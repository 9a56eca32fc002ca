"""The command channel on a real PostgreSQL: NOTIFY wakes the owner, only the lease holder
takes a command, each is taken once, answers come back, and polling covers lost wakeups."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from supervisor.cluster import commands as cmd
from supervisor.cluster import schema
from supervisor.cluster.db import Connection, connect
from supervisor.cluster.lease import Leases, LeaseTiming
from supervisor.cluster.sender import Sender
from supervisor.core.errors import BackendError, CommandUnconfirmed
from tests.postgres import pg_cluster, pg_dsn
from tests.waiting import wait_for

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


@pytest.fixture
def sender(pg_dsn: str, owner: Connection) -> Iterator[Sender]:
    """A sender whose commands wait 3 s; ``b`` is held by ``fast``, ``a`` by ``owner``."""
    del owner
    with connect(pg_dsn) as conn:
        Leases(conn, holder="fast", timing=LONG).acquire(["b"])
    made = Sender(pg_dsn, host="h2", params={}, timeout=3.0)
    yield made
    made.close()


def pending(conn: Connection, scheduler_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT command_id, taken_by FROM cluster_commands WHERE scheduler_id = %s "
        "AND answered_at IS NULL",
        (scheduler_id,),
    ).fetchall()


def test_a_slow_host_holds_up_only_the_commands_sent_to_it(
    pg_dsn: str, owner: Connection, sender: Sender
) -> None:
    slow: list[BaseException] = []

    def to_the_slow_host() -> None:
        try:
            sender.send("a", "stop", {}, actor="ops")
        except BackendError as error:
            slow.append(error)

    waiting = threading.Thread(target=to_the_slow_host)
    waiting.start()
    try:
        wait_for(lambda: pending(owner, "a"), timeout=10, what="the command to the slow host")
        with connect(pg_dsn) as fast:

            def answer_b() -> None:
                for taken in wait_for(
                    lambda: cmd.take(fast, holder="fast"), timeout=10, what="b's command"
                ):
                    cmd.answer(fast, taken, holder="fast", body={"ok": True})

            answering = threading.Thread(target=answer_b)
            answering.start()
            got = sender.send("b", "execute", {}, actor="ops")
            answering.join()
        # Answered while the command to the slow host still waits for its answer.
        assert got == {"ok": True, "host": "fast"}
        assert waiting.is_alive() and not slow
    finally:
        waiting.join()
    assert len(slow) == 1


def test_a_command_nobody_took_in_time_is_withdrawn_and_says_so(
    owner: Connection, sender: Sender
) -> None:
    with pytest.raises(BackendError) as raised:
        sender.send("a", "stop", {}, actor="ops")
    assert not isinstance(raised.value, CommandUnconfirmed)
    assert str(raised.value) == (
        "owner (the owner of 'a') did not take the stop command for 'a' within 3s; "
        "it was withdrawn and will not be carried out"
    )
    assert pending(owner, "a") == []  # no later owner acts on it
    assert cmd.take(owner, holder="owner") == []


def test_a_command_delivered_but_not_answered_may_still_be_carried_out(
    owner: Connection, sender: Sender
) -> None:
    taken: list[cmd.Command] = []
    taking = threading.Thread(
        target=lambda: taken.extend(
            wait_for(lambda: cmd.take(owner, holder="owner"), timeout=10, what="the command")
        )
    )
    taking.start()
    with pytest.raises(CommandUnconfirmed) as raised:
        sender.send("a", "execute", {}, actor="ops")
    taking.join()
    message = str(raised.value)
    assert message.startswith("the execute command for 'a' was delivered to owner at ")
    assert "not answered within 3s; it may still be carried out there" in message
    assert "before sending it again" in message
    assert "\n" not in message  # the CLI shows the first line only
    # Still the owner's to answer: it was not withdrawn.
    assert [row[1] for row in pending(owner, "a")] == ["owner"]
    assert cmd.take(owner, holder="owner") == taken


def test_a_sender_whose_idle_connection_died_sends_on_a_new_one(
    pg_dsn: str, owner: Connection, sender: Sender
) -> None:
    with pytest.raises(BackendError, match="no host owns"):
        sender.send("nobody", "stop", {}, actor="ops")  # leaves a line idle
    owner.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name LIKE 'sst h2 %%'"
    )
    with pytest.raises(BackendError, match="no host owns"):
        sender.send("nobody", "stop", {}, actor="ops")
