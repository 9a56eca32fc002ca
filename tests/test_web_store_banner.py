"""The Admin Center's banner while the store does not answer: on every page of a logged-in
user, announced (role=alert), gone once the store answers again (in-process, fake backend)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from supervisor.core.clock import FakeClock
from supervisor.usecases.health import Backlog, StoreHealth, StoreProblem
from supervisor.usecases.schedulers import UseCases
from supervisor.web.app import create_app
from tests.test_web_fakes import FAST, START, Client, make_world

BANNER = re.compile(
    r'<div class="flash flash-error store-banner" role="alert" data-store-health>\s*'
    r"<strong>store:</strong> <span>(?P<text>[^<]*)</span>"
)
PAGES = ("/", "/schedulers/jobs.repeat", "/schedulers/jobs.repeat/logs", "/logs", "/audit",
         "/users", "/account/password", "/schedulers/no.such")  # fmt: skip


@dataclass
class World:
    client: Client
    health: StoreHealth
    clock: FakeClock
    stop: threading.Event


@pytest.fixture
def world() -> Iterator[World]:
    use_cases, backend, audit, users, clock = make_world()
    health = StoreHealth(monotonic=clock.monotonic)
    bound = UseCases(
        use_cases.registry, backend=backend, audit=audit, clock=clock, store_health=health
    )
    stop = threading.Event()
    app = create_app(bound, users=users, config=FAST, clock=clock, stop=stop, sleep=lambda _: None)
    client = Client(app)
    assert client.login("vera").status == 303  # a viewer sees it too
    yield World(client=client, health=health, clock=clock, stop=stop)
    stop.set()


def banner(body: str) -> str | None:
    found = BANNER.search(body)
    return None if found is None else found["text"]


def test_every_page_shows_the_outage_while_it_lasts(world: World) -> None:
    for path in PAGES:
        assert banner(world.client.get(path).body) is None, path
    world.health.unreachable(
        since=START - timedelta(seconds=7),
        reason="cannot take the manager lock: connection failed: <refused> & gone",
    )
    for path in PAGES:
        response = world.client.get(path)
        assert banner(response.body) == (
            "unreachable since 11:59:53 UTC (7 s): cannot take the manager lock: connection"
            " failed: &lt;refused&gt; &amp; gone"
        ), (path, response.status)
    world.clock.advance(5)  # the overview's kept page is rendered again: the seconds move
    assert "(12 s)" in (banner(world.client.get("/").body) or "")
    world.health.reachable()
    for path in PAGES:
        assert banner(world.client.get(path).body) is None, path


def test_the_login_page_tells_no_one_logged_out(world: World) -> None:
    world.health.unreachable(since=START, reason="refused")
    anonymous = Client(world.client.app)
    page = anonymous.get("/login")
    assert page.status == 200 and "data-store-health" not in page.body


def test_a_store_that_cannot_be_written_is_shown_with_what_is_kept(world: World) -> None:
    world.health.write_failed(
        at=START - timedelta(seconds=3),
        problem=StoreProblem.DISK_FULL,
        reason="state database /s/state.db: database or disk is full",
    )
    world.health.note_backlog(Backlog(kept_records=120, dropped_records=4))
    for path in PAGES:
        assert banner(world.client.get(path).body) == (
            "disk full since 11:59:57 UTC (3 s): state database /s/state.db: database or disk"
            " is full; 120 log record(s) kept to store, 4 dropped (counted in their runs&#39;"
            " logs)"
        ), path
    world.health.write_succeeded()
    world.clock.advance(world.health.settle_seconds)
    world.health.write_succeeded()  # the writes held
    assert banner(world.client.get("/").body) is not None  # still owed what it kept
    world.health.note_backlog(Backlog())
    for path in PAGES:
        assert banner(world.client.get(path).body) is None, path
