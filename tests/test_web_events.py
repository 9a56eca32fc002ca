"""Server-sent event streams: live states, the log tail, resuming, caps, heartbeats, and
streams that end when their session or the server does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from supervisor.core.records import Outcome
from supervisor.web.app import AdminConfig, create_app
from supervisor.web.events import StreamSlot, StreamSlots
from tests.test_web_fakes import Client, make_world
from tests.test_web_routes import FAST


class Streams:
    def __init__(self, config: AdminConfig = FAST) -> None:
        self.use_cases, self.backend, self.audit, self.users, self.clock = make_world()
        self.stop = threading.Event()
        self.app = create_app(
            self.use_cases,
            users=self.users,
            config=config,
            clock=self.clock,
            stop=self.stop,
            sleep=lambda _: None,
        )

    def client(self, name: str = "ada") -> Client:
        client = Client(self.app)
        assert client.login(name).status == 303
        return client


@pytest.fixture
def streams() -> Iterator[Streams]:
    s = Streams()
    yield s
    s.stop.set()


class Reader:
    """Reads events from an open stream until one matches."""

    def __init__(self, client: Client, path: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.headers, self.chunks = client.open_stream(path, headers=headers)
        self.buffer = ""

    def events(self) -> Iterator[tuple[str, str, str | None]]:
        """(event name, data, id); comments come as ("comment", text, None)."""
        for chunk in self.chunks:
            self.buffer += chunk.decode()
            while "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                name, data, event_id = "message", "", None
                for line in block.split("\n"):
                    if line.startswith(":"):
                        name, data = "comment", line[1:].strip()
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line.startswith("id: "):
                        event_id = line[4:]
                yield name, data, event_id

    def next_event(self, name: str) -> tuple[str, str | None]:
        for found, data, event_id in self.events():
            if found == name:
                return data, event_id
        raise AssertionError(f"the stream ended before a {name!r} event")

    def close(self) -> None:
        self.chunks.close()  # type: ignore[attr-defined]


def test_the_log_tail_sends_new_records_with_their_cursor(streams: Streams) -> None:
    streams.backend.execute("jobs.repeat", actor="ada")
    old = streams.backend.log("jobs.repeat", "before the page")
    reader = Reader(streams.client(), f"/events/schedulers/jobs.repeat/logs?after={old}")
    try:
        assert reader.status == 200
        assert dict(reader.headers)["Content-Type"].startswith("text/event-stream")
        new = streams.backend.log("jobs.repeat", "arrived live", count=3)
        data, event_id = reader.next_event("log")
        records = json.loads(data)
        assert [r["message"] for r in records] == ["arrived live"]
        assert records[0]["fields"] == {"count": 3} and records[0]["cursor"] == new
        assert event_id == str(new)
    finally:
        reader.close()


def test_the_log_tail_resumes_from_last_event_id(streams: Streams) -> None:
    streams.backend.execute("jobs.repeat", actor="ada")
    cursors = [streams.backend.log("jobs.repeat", f"line {i}") for i in range(5)]
    reader = Reader(
        streams.client(),
        "/events/schedulers/jobs.repeat/logs?after=0",
        headers={"Last-Event-ID": str(cursors[2])},
    )
    try:
        records = json.loads(reader.next_event("log")[0])
        assert [r["message"] for r in records] == ["line 3", "line 4"]
    finally:
        reader.close()


def test_the_log_tail_honours_level_and_run_filters(streams: Streams) -> None:
    first = streams.backend.execute("jobs.repeat", actor="ada")
    streams.backend.finish("jobs.repeat", Outcome.SUCCEEDED)
    second = streams.backend.execute("jobs.repeat", actor="ada")
    reader = Reader(
        streams.client(), f"/events/schedulers/jobs.repeat/logs?after=0&level=warning&run={first}"
    )
    try:
        from supervisor.core.records import Level

        streams.backend.log("jobs.repeat", "other run", run_id=second, level=Level.ERROR)
        streams.backend.log("jobs.repeat", "too quiet", run_id=first)
        streams.backend.log("jobs.repeat", "this one", run_id=first, level=Level.WARNING)
        records = json.loads(reader.next_event("log")[0])
        assert [r["message"] for r in records] == ["this one"]
    finally:
        reader.close()


def test_the_status_stream_sends_everything_then_only_changes(streams: Streams) -> None:
    reader = Reader(streams.client(), "/events/status")
    try:
        first = json.loads(reader.next_event("status")[0])
        assert {s["id"] for s in first} == {
            "jobs.hello",
            "jobs.repeat",
            "jobs.nightly",
            "jobs.manual",
        }
        streams.backend.execute("jobs.repeat", actor="ada")
        changed = json.loads(reader.next_event("status")[0])
        assert [(s["id"], s["state"]) for s in changed] == [("jobs.repeat", "running")]
    finally:
        reader.close()


def test_a_status_stream_can_watch_one_scheduler(streams: Streams) -> None:
    reader = Reader(streams.client("vera"), "/events/status?id=jobs.manual")
    try:
        assert [s["id"] for s in json.loads(reader.next_event("status")[0])] == ["jobs.manual"]
        streams.backend.execute("jobs.repeat", actor="ada")
        streams.backend.execute("jobs.manual", actor="ada")
        changed = json.loads(reader.next_event("status")[0])
        assert [(s["id"], s["state"]) for s in changed] == [("jobs.manual", "running")]
    finally:
        reader.close()


def test_an_idle_stream_sends_heartbeats(streams: Streams) -> None:
    reader = Reader(streams.client(), "/events/schedulers/jobs.repeat/logs")
    try:
        assert reader.next_event("comment")[0] == "connected"
        assert reader.next_event("comment")[0] == "heartbeat"
    finally:
        reader.close()


def test_streams_per_user_are_capped_however_many_sessions_they_open() -> None:
    """Regression (issue 13.6): one viewer logged in 11 times held all 64 slots."""
    config = replace(FAST, streams=replace(FAST.streams, max_per_user=2))
    s = Streams(config)
    readers = [Reader(s.client("vera"), "/events/status") for _ in range(2)]
    try:
        third = Reader(s.client("vera"), "/events/status")  # a new session, same user
        assert third.status == 429
        third.close()
        other = Reader(s.client("otto"), "/events/status")
        assert other.status == 200  # another user is not affected
        other.close()
    finally:
        for reader in readers:
            reader.close()
    again = Reader(s.client("vera"), "/events/status")
    assert again.status == 200  # closing freed the places
    again.close()
    s.stop.set()


def test_slots_are_kept_for_admins() -> None:
    limits = replace(FAST.streams, max_streams=4, max_per_user=10, reserved_for_admins=2)
    s = Streams(replace(FAST, streams=limits))
    readers = [Reader(s.client(name), "/events/status") for name in ("vera", "otto")]
    try:
        assert [r.status for r in readers] == [200, 200]
        refused = Reader(s.client("vera"), "/events/status")
        assert refused.status == 503  # the non-admin share (4 - 2) is used up
        refused.close()
        admins = [Reader(s.client("ada"), "/events/status") for _ in range(2)]
        assert [r.status for r in admins] == [200, 200]
        over = Reader(s.client("ada"), "/events/status")
        assert over.status == 503  # the overall cap holds for admins too
        over.close()
        for reader in admins:
            reader.close()
    finally:
        for reader in readers:
            reader.close()
    s.stop.set()


def test_streams_overall_are_capped() -> None:
    config = replace(FAST, streams=replace(FAST.streams, max_streams=1))
    s = Streams(config)
    first = Reader(s.client("ada"), "/events/status")
    try:
        other = Reader(s.client("otto"), "/events/schedulers/jobs.repeat/logs")
        assert other.status == 503
        other.close()
    finally:
        first.close()
    s.stop.set()


def test_a_stream_ends_when_its_session_does(streams: Streams) -> None:
    client = streams.client()
    reader = Reader(client, "/events/status")
    client.post("/logout", {"csrf": client.csrf("/")})
    ended = [name for name, _, _ in reader.events()]  # ends by itself
    assert ended[0] == "comment"
    reader.close()


def test_a_stream_ends_when_its_account_changes_in_the_store(
    streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new password set on another host sharing the store ends this server's open
    streams of that login at the next recheck, as it ends the login's next request."""
    monkeypatch.setattr("supervisor.web.streams.USER_RECHECK_SECONDS", 0.0)
    client = streams.client()
    reader = Reader(client, "/events/status")
    assert reader.next_event("status")
    user = streams.users.users["ada"]
    streams.users.users["ada"] = replace(user, password_hash="other", stamp="s1")
    # Ends at the next check; before, it kept sending heartbeats to its longest life.
    assert len(list(reader.events())) <= 1
    reader.close()


def test_streams_end_when_the_server_stops(streams: Streams) -> None:
    reader = Reader(streams.client(), "/events/schedulers/jobs.repeat/logs")
    streams.stop.set()
    assert next(name for name, _, _ in reader.events()) == "comment"
    reader.close()


def test_a_stream_has_a_longest_life() -> None:
    config = replace(FAST, streams=replace(FAST.streams, max_seconds=0.05))
    s = Streams(config)
    reader = Reader(s.client(), "/events/status")
    names = [name for name, _, _ in reader.events()]  # ends; EventSource reconnects
    assert names[0] == "comment"
    reader.close()
    s.stop.set()


def test_a_log_stream_for_an_unknown_scheduler_is_404(streams: Streams) -> None:
    reader = Reader(streams.client(), "/events/schedulers/no.such/logs")
    assert reader.status == 404
    reader.close()


def test_a_user_at_the_cap_gets_back_the_slots_of_streams_whose_reader_left() -> None:
    # Regression: a stream sees that its page was left only at its next poll, so clicking
    # through pages quickly was refused with 429 by streams of pages already closed.
    slots = StreamSlots(replace(FAST.streams, max_per_user=2))
    readers = {"first": True, "second": True}
    first = slots.acquire("vera", admin=False, alive=lambda: readers["first"])
    second = slots.acquire("vera", admin=False, alive=lambda: readers["second"])
    assert isinstance(first, StreamSlot) and isinstance(second, StreamSlot)
    assert slots.acquire("vera", admin=False) == (
        429,
        "you have 2 live streams open already; close some",
    )
    readers["first"] = False  # that page was left; its stream has not noticed yet
    third = slots.acquire("vera", admin=False)
    assert isinstance(third, StreamSlot)
    assert slots.open == 2
    slots.release(first)  # the stream notices later: its slot was already taken back
    assert slots.open == 2
    slots.release(second)
    slots.release(third)
    assert slots.open == 0


def test_the_overall_cap_takes_back_slots_of_readers_gone_before_refusing() -> None:
    slots = StreamSlots(replace(FAST.streams, max_streams=2, reserved_for_admins=0))
    gone = [False]
    first = slots.acquire("vera", admin=False, alive=lambda: not gone[0])
    assert isinstance(slots.acquire("otto", admin=False), StreamSlot)
    assert slots.acquire("ida", admin=False) == (
        503,
        "too many live streams are open; try again later",
    )
    gone[0] = True
    assert isinstance(slots.acquire("ida", admin=False), StreamSlot)
    assert isinstance(first, StreamSlot)
    slots.release(first)
    assert slots.open == 2
