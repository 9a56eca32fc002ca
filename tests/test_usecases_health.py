"""The store's health: the cell the composition root sets, what the use cases read from it,
how the control socket carries it and how the CLI reads it back (in-process)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from supervisor.cli import views
from supervisor.core.access import Subject, with_role
from supervisor.core.clock import FakeClock
from supervisor.core.errors import PermissionDenied
from supervisor.core.storeproblems import LockFailure, LockFailureKind
from supervisor.service.control import Dispatcher
from supervisor.store.dsn import without_password
from supervisor.usecases import serialize
from supervisor.usecases.health import StoreHealth, StoreOutage, StoreTrouble
from supervisor.usecases.schedulers import UseCases
from tests.test_web_fakes import START, make_world

DSN = "postgresql://sst:pw-Very-Secret@db.example:5432/jobs"


def world() -> tuple[UseCases, StoreHealth, FakeClock]:
    use_cases, backend, audit, _users, clock = make_world()
    health = StoreHealth()
    bound = UseCases(
        use_cases.registry, backend=backend, audit=audit, clock=clock, store_health=health
    )
    return bound, health, clock


def test_a_trouble_says_since_when_how_long_and_why() -> None:
    outage = StoreOutage(since=datetime(2026, 12, 4, 9, 30, 5, tzinfo=UTC), reason="refused")
    trouble = StoreTrouble.of(outage, datetime(2026, 12, 4, 9, 30, 47, 900000, tzinfo=UTC))
    assert trouble.text == "unreachable since 09:30:05 UTC (42 s): refused"
    with pytest.raises(ValueError, match="aware"):
        StoreOutage(since=datetime(2026, 12, 4, 9, 30, 5), reason="x")


def test_the_use_cases_tell_an_outage_while_it_lasts() -> None:
    use_cases, health, clock = world()
    viewer = with_role("vera", "viewer")
    assert use_cases.store_health(viewer) is None
    health.unreachable(since=START - timedelta(seconds=30), reason="connection\n refused")
    trouble = use_cases.store_health(viewer)
    assert trouble == StoreTrouble(
        since=START - timedelta(seconds=30), seconds=30, reason="connection refused"
    )
    clock.advance(12)
    assert use_cases.store_health(viewer) == StoreTrouble(
        since=START - timedelta(seconds=30), seconds=42, reason="connection refused"
    )
    with pytest.raises(PermissionDenied):
        use_cases.store_health(Subject("nobody", frozenset(), role="none"))
    health.reachable()
    assert use_cases.store_health(viewer) is None


def test_use_cases_without_a_health_cell_never_tell_an_outage() -> None:
    use_cases, *_ = make_world()
    assert use_cases.store_health(with_role("vera", "viewer")) is None


def test_list_and_status_carry_the_outage_and_the_cli_reads_it_back() -> None:
    use_cases, health, _clock = world()
    dispatcher = Dispatcher(use_cases, {"pid": 1, "app": "x", "backend": "manager"})
    subject = with_role("vera", "viewer")
    fine = dispatcher.handle(subject, {"op": "status", "args": {"id": "jobs.repeat"}})
    assert fine["ok"] and "store" not in fine["result"]
    assert views.status_from_json(fine["result"]).store is None
    health.unreachable(since=START - timedelta(seconds=5), reason="refused")
    status = dispatcher.handle(subject, {"op": "status", "args": {"id": "jobs.repeat"}})
    store = status["result"]["store"]
    assert store == {
        "state": "unreachable",
        "since": "2026-03-01T11:59:55+00:00",
        "seconds": 5,
        "reason": "refused",
        "kept_log_records": 0,
        "dropped_log_records": 0,
        "text": "unreachable since 11:59:55 UTC (5 s): refused",
    }
    listed = dispatcher.handle(subject, {"op": "list"})
    assert [s["store"] for s in listed["result"]] == [store] * len(listed["result"])
    view = views.status_from_json(status["result"])
    assert view.store == StoreTrouble(
        since=START - timedelta(seconds=5), seconds=5, reason="refused"
    )
    assert views.status_json(view)["store"] == store
    assert serialize.with_store({"id": "x"}, None) == {"id": "x"}


def test_an_answer_with_a_malformed_store_field_is_not_understood() -> None:
    use_cases, health, _clock = world()
    health.unreachable(since=START, reason="refused")
    raw = Dispatcher(use_cases, {}).handle(
        with_role("vera", "viewer"), {"op": "status", "args": {"id": "jobs.repeat"}}
    )["result"]
    with pytest.raises(Exception, match=r"store\.seconds"):
        views.status_from_json({**raw, "store": {**raw["store"], "seconds": -1}})


def test_the_reason_is_the_lock_failures_own_value_without_the_password() -> None:
    failure = LockFailure(
        kind=LockFailureKind.CONNECT,
        at=START,
        message="connection failed: password pw-Very-Secret refused (x)",
    )
    assert without_password(failure.reason, DSN) == (
        "cannot take the manager lock: connection failed: password *** refused (x)"
    )
    elsewhere = LockFailure(kind=LockFailureKind.HELD_ELSEWHERE, at=START, message="in use")
    assert elsewhere.reason == "in use"
    with pytest.raises(ValueError, match="aware"):
        LockFailure(kind=LockFailureKind.QUERY, at=START.replace(tzinfo=None), message="x")
    with pytest.raises(ValueError, match="one line"):
        LockFailure(kind=LockFailureKind.QUERY, at=START, message="two\nlines")
