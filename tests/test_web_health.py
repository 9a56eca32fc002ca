"""Health on the overview: red failing cards with their streak and last success, a strip of
the last 20 outcomes, the Failing filter and the text filter (in-process, fake backend)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from supervisor.core.definitions import Kind, Options
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, State, Trigger
from supervisor.web.health import STRIP_RUNS, ago, health_of
from tests.test_web_fakes import START, noop
from tests.test_web_pages import Site, card


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop.set()


def record(scheduler_id: str, n: int, outcome: Outcome | None, at: datetime) -> RunRecord:
    return RunRecord(
        run_id=f"{scheduler_id}-run-{n:02d}",
        scheduler_id=scheduler_id,
        trigger=Trigger.SCHEDULE,
        triggered_by=None,
        started_at=at,
        ended_at=None if outcome is None else at + timedelta(seconds=30),
        outcome=outcome,
        error="RuntimeError: boom" if outcome is Outcome.FAILED else None,
    )


def give_runs(site: Site, scheduler_id: str, outcomes: list[Outcome | None]) -> list[RunRecord]:
    """Runs oldest first, one a minute from START; the clock ends a minute after the last."""
    runs = [
        record(scheduler_id, i, outcome, START + timedelta(minutes=i))
        for i, outcome in enumerate(outcomes)
    ]
    with site.backend.lock:
        site.backend.slots[scheduler_id].runs = list(reversed(runs))
    return runs


def text_of(html: str) -> str:
    """The text of some markup, tags left out."""
    return re.sub(r"<[^>]+>", "", html)


def strip_entries(html: str) -> list[str]:
    return re.findall(r'<li class="strip-([a-z_]+)"><a href="[^"]+" aria-label="[^"]+">', html)


def test_a_card_whose_last_runs_failed_is_red_with_its_streak_and_last_success(
    site: Site,
) -> None:
    outcomes: list[Outcome | None] = [Outcome.SUCCEEDED] * 22 + [
        Outcome.FAILED,
        Outcome.CRASHED,
        Outcome.TIMED_OUT,
    ]
    runs = give_runs(site, "jobs.repeat", outcomes)
    site.clock.advance(60 * 30)  # 12:30; the last success ended 12:21:30, 8 min earlier
    page = site.client.get("/").body
    repeat = card(page, "jobs.repeat")
    assert 'data-health="failing"' in repeat
    assert "health-failing" in repeat  # the red badge beside the state
    assert "failing since" in repeat
    assert ">12:22 UTC</time> (3 in a row)" in repeat  # the first failure started 12:22
    assert "last success 8 min ago" in text_of(repeat)
    # the strip: the newest 20 of 25 runs, oldest first, each a link with words
    assert strip_entries(repeat) == ["succeeded"] * 17 + ["failed", "crashed", "timed_out"]
    assert len(strip_entries(repeat)) == STRIP_RUNS
    assert f'aria-label="Last {STRIP_RUNS} outcomes, oldest first"' in repeat
    assert 'aria-label="Crashed, 2026-03-01 12:23:00 UTC">!</a>' in repeat  # not colour alone
    assert f'href="/schedulers/jobs.repeat/logs?run={runs[-1].run_id}"' in repeat
    assert runs[4].run_id not in repeat  # older than the strip
    # a healthy card: neither red nor a streak
    give_runs(site, "jobs.nightly", [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SUCCEEDED])
    nightly = card(fresh(site), "jobs.nightly")
    assert 'data-health="ok"' in nightly
    assert "failing since" not in nightly
    assert strip_entries(nightly) == ["succeeded", "failed", "succeeded"]


def fresh(site: Site) -> str:
    """The overview read again now, not from the shared snapshot of the last 0.2 s."""
    assert site.post("/schedulers/jobs.manual/start")[0] == 303  # a change: read afresh
    return site.client.get("/").body


def test_a_scheduler_whose_starts_fail_is_red_with_a_failing_badge(site: Site) -> None:
    with site.backend.lock:
        site.backend.slots["jobs.nightly"].failed_starts = 4
    give_runs(site, "jobs.nightly", [Outcome.SUCCEEDED])
    site.clock.advance(3600 * 3 + 60)
    page = site.client.get("/").body
    nightly = card(page, "jobs.nightly")
    assert 'data-state="failing"' in nightly
    assert 'data-health="failing"' in nightly
    assert 'class="badge state state-failing"' in nightly
    assert "starts failing (4 in a row)" in nightly
    assert "last success 3 h ago" in text_of(nightly)
    css = site.client.get(re.findall(r'href="(/static/admin\.css[^"]*)"', page)[0]).body
    assert ".state-failing" in css and '.card[data-health="failing"]' in css


def test_failing_cards_come_first_with_a_summary_that_filters_to_them(site: Site) -> None:
    give_runs(site, "jobs.manual", [Outcome.SUCCEEDED, Outcome.FAILED])
    give_runs(site, "jobs.hello", [Outcome.SUCCEEDED])
    page = site.client.get("/").body
    order = re.findall(r'<article class="card" data-id="([^"]+)"', page)
    assert order[0] == "jobs.manual" and sorted(order) == sorted(
        ["jobs.hello", "jobs.repeat", "jobs.nightly", "jobs.manual"]
    )
    summary = re.search(r'<a class="pill health-failing[^>]*>.*?</a>', page, re.S)
    assert summary is not None
    assert 'href="/?filter=failing"' in summary.group(0)
    assert "Failing <strong>1</strong>" in summary.group(0)
    only = site.client.get("/?filter=failing").body
    assert re.findall(r'<article class="card" data-id="([^"]+)"', only) == ["jobs.manual"]
    assert "Showing 1 of 4" in only and 'aria-current="page"' in only
    assert 'name="filter" value="failing"' in only  # the text filter keeps it


def test_the_text_filter_and_its_no_match_message(site: Site) -> None:
    page = site.client.get("/?q=NIGHT").body
    assert re.findall(r'<article class="card" data-id="([^"]+)"', page) == ["jobs.nightly"]
    assert 'value="NIGHT"' in page
    page = site.client.get("/?q=Rebuild").body  # by name
    assert re.findall(r'<article class="card" data-id="([^"]+)"', page) == ["jobs.manual"]
    none = site.client.get("/?q=%3Cb%3Ezz").body
    assert "No scheduler matches '&lt;b&gt;zz'" in none
    assert "<b>zz" not in none
    assert '<article class="card"' not in none
    nothing_failing = site.client.get("/?filter=failing").body
    assert "No scheduler is failing" in nothing_failing
    assert site.client.get("/?q=" + "x" * 500).status == 400


def test_the_overview_reads_the_runs_of_all_schedulers_at_once() -> None:
    many = [
        Options(id=f"bulk.{i:04d}", name=f"Bulk {i}", kind=Kind.MANUAL, runner=noop)
        for i in range(300)
    ]
    site = Site(many)
    for i in range(0, 300, 7):
        give_runs(site, f"bulk.{i:04d}", [Outcome.SUCCEEDED] * 25 + [Outcome.CRASHED])
    page = site.client.get("/").body
    assert len(site.backend.recent_reads) == 1  # one read for every scheduler's strip
    assert sorted(site.backend.recent_reads[0]) == [f"bulk.{i:04d}" for i in range(300)]
    assert page.count('<article class="card"') == 300
    assert page.count('data-health="failing"') == len(range(0, 300, 7))
    assert len(strip_entries(card(page, "bulk.0007"))) == STRIP_RUNS
    # a run ends: only that scheduler's runs are read again, still in one call
    give_runs(site, "bulk.0001", [Outcome.SUCCEEDED, Outcome.TIMED_OUT])
    assert site.post("/schedulers/bulk.0002/start")[0] == 303
    page = site.client.get("/").body
    assert site.backend.recent_reads[1:] == [["bulk.0001"]]
    assert strip_entries(card(page, "bulk.0001")) == ["succeeded", "timed_out"]
    assert site.post("/schedulers/bulk.0002/start")[0] == 303
    site.client.get("/")
    assert len(site.backend.recent_reads) == 2  # nothing moved: nothing read
    site.stop.set()


def status_of(**fields: object) -> SchedulerStatus:
    site = Site()
    site.stop.set()
    return replace(site.backend.status("jobs.repeat"), **fields)  # type: ignore[arg-type]


def test_health_counts_the_streak_and_says_when_it_may_be_longer() -> None:
    now = START + timedelta(days=1, hours=2)
    runs = [
        record("jobs.repeat", i, Outcome.FAILED, START + timedelta(minutes=i)) for i in range(25)
    ]
    newest_first = list(reversed(runs))
    failed = status_of(last_outcome=Outcome.FAILED, last_completed_at=runs[-1].ended_at)
    found = health_of(failed, newest_first, now)
    assert found.failing and found.streak == STRIP_RUNS and found.more
    assert found.since == runs[5].started_at
    assert found.since_text == "2026-03-01 12:05 UTC"  # not today: with the date
    assert found.last_success_text == ""
    assert len(found.strip) == STRIP_RUNS and found.strip[-1].run_id == runs[-1].run_id
    # a run going on does not end the streak; a cancelled one does
    going = [record("jobs.repeat", 99, None, now), *newest_first[:2]]
    assert health_of(failed, going, now).streak == 2
    cancelled = [newest_first[0], record("jobs.repeat", 98, Outcome.CANCELLED, START)]
    assert health_of(failed, cancelled, now).streak == 1
    # no runs read (a backend without strips): failing since the last completion
    alone = health_of(failed, [], now)
    assert alone.failing and alone.streak == 1 and alone.since == runs[-1].ended_at
    assert not health_of(status_of(last_outcome=Outcome.SUCCEEDED), newest_first, now).failing
    starts = health_of(status_of(state=State.FAILING, failed_starts=3), [], now)
    assert starts.failing and starts.streak == 3 and starts.since is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "just now"),
        (60, "1 min ago"),
        (119 * 60, "119 min ago"),
        (7200, "2 h ago"),
        (47 * 3600, "47 h ago"),
        (3 * 86400, "3 d ago"),
    ],
)
def test_ago(seconds: float, text: str) -> None:
    assert ago(seconds) == text
