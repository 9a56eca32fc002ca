"""One time policy on the Admin Center's pages, outcomes with their exit codes, the outcome
filter and the single-card fragment the live updates fetch (in-process, fake backend).

Every absolute time is ``<time datetime="ISO with offset" data-fmt="…">text with its
zone</time>`` (``present.time_tag``); a cron scheduler shows its own zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from supervisor.core.definitions import Kind, Options, command
from supervisor.core.records import Outcome
from supervisor.web.health import Health
from supervisor.web.present import outcome_text, time_tag, zoned_text
from supervisor.web.render import load_assets, make_environment, render
from tests.test_web_fakes import default_options
from tests.test_web_health import give_runs
from tests.test_web_pages import Site, card

TIME = re.compile(r"<time ([^>]*)>([^<]*)</time>")
ZONE_AT_END = re.compile(r" (UTC|[A-Z]{3,5}|[+-]\d{2,4})$")


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop.set()


def times_of(html: str) -> list[tuple[str, str]]:
    return TIME.findall(html)


def assert_every_time_follows_the_convention(html: str) -> None:
    found = times_of(html)
    assert found, "no <time> on the page"
    for attributes, text in found:
        if 'data-fmt="ago"' in attributes:  # "3 min ago": a duration, no zone to name
            continue
        iso = re.search(r'datetime="([^"]+)"', attributes)
        assert iso is not None, attributes
        assert datetime.fromisoformat(iso.group(1)).utcoffset() is not None, attributes
        assert 'data-fmt="' in attributes, attributes
        assert ZONE_AT_END.search(text), text


def test_zoned_text_names_the_zone_in_every_form() -> None:
    moment = datetime(2026, 3, 1, 12, 22, 5, 250_000, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    assert zoned_text(moment) == "2026-03-01 12:22:05 UTC"
    assert zoned_text(moment, zone=berlin) == "2026-03-01 13:22:05 CET"
    assert zoned_text(moment, form="clock", now=moment) == "12:22 UTC"
    assert zoned_text(moment, form="clock", now=moment + timedelta(days=1)) == (
        "2026-03-01 12:22 UTC"
    )
    assert zoned_text(moment, form="log", now=moment) == "12:22:05.250 UTC"
    summer = datetime(2026, 7, 1, 1, 0, tzinfo=UTC)
    assert zoned_text(summer, form="clock", zone=berlin, now=summer) == "03:00 CEST"
    with pytest.raises(ValueError, match="unknown time form"):
        zoned_text(moment, form="fancy")


def test_time_tag_is_the_element_the_script_reformats() -> None:
    moment = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    tag = str(time_tag(moment, "clock", zone="Europe/Berlin", now=moment))
    assert tag == (
        '<time datetime="2026-03-01T02:00:00+00:00" data-fmt="clock"'
        ' title="2026-03-01 02:00:00 UTC" data-zone="Europe/Berlin">03:00 CET</time>'
    )
    assert str(time_tag(None, empty="<never>")) == '<span class="none">&lt;never&gt;</span>'
    assert 'class="log-time"' in str(time_tag(moment, "log", css="log-time"))


@pytest.mark.parametrize(
    ("outcome", "code", "text"),
    [
        (Outcome.FAILED, 3, "Failed (exit code 3)"),
        (Outcome.FAILED, 0, "Failed"),
        (Outcome.FAILED, None, "Failed"),
        (Outcome.CRASHED, 3, "Crashed"),  # a signal or a core dump: no exit code to show
        (Outcome.SUCCEEDED, 0, "Succeeded"),
        (None, None, "Running"),
    ],
)
def test_outcome_text(outcome: Outcome | None, code: int | None, text: str) -> None:
    assert outcome_text(outcome, code) == text


def test_every_page_writes_its_times_with_their_zone(site: Site) -> None:
    runs = give_runs(site, "jobs.repeat", [Outcome.SUCCEEDED, Outcome.FAILED])
    site.backend.log("jobs.repeat", "hello", run_id=runs[-1].run_id)
    site.clock.advance(120)
    for path in ("/", "/schedulers/jobs.repeat", "/schedulers/jobs.repeat/history"):
        html = site.client.get(path).body
        assert_every_time_follows_the_convention(html)
    page = site.client.get("/schedulers/jobs.repeat").body
    assert re.search(r'data-fmt="log"[^>]*>\d\d:\d\d:\d\d\.\d{3} UTC</time>', page)


def test_a_cron_scheduler_shows_its_own_zone(site: Site) -> None:
    page = site.client.get("/").body
    nightly = card(page, "jobs.nightly")
    assert '<span class="mono">0 3 * * *</span> <span class="zone"' in nightly
    assert ">Europe/Berlin</span>" in nightly
    # its next run in its own zone, beside the one the browser shows in its own
    status = site.backend.status("jobs.nightly")
    planned = replace(status, next_planned_at=datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    env = make_environment(load_assets())
    drawn = render(
        env,
        "card.html",
        {
            "s": planned,
            "h": Health(failing=False),
            "href": "/x",
            "icons": "/i",
            "search": "",
            "rank": 0,
        },
    )
    there = re.search(r'data-zone="Europe/Berlin">([^<]+)</time>', drawn)
    assert there is not None and there.group(1) == "2026-03-02 03:00 CET"
    assert 'data-zone-name="Europe/Berlin"' in drawn
    assert '<time datetime="2026-03-02T02:00:00+00:00" data-fmt="relative"' in drawn
    status = site.client.get("/schedulers/jobs.nightly").body
    assert ">Europe/Berlin</span>" in status.split('class="panel status-panel"')[1]


def test_a_failed_command_shows_its_exit_code_on_the_card_and_in_the_history() -> None:
    shell = Options(
        id="jobs.shell", name="Shell check", kind=Kind.MANUAL, runner=command(["/bin/false"])
    )
    site = Site([*default_options(), shell])
    try:
        for sid in ("jobs.shell", "jobs.manual"):
            runs = give_runs(site, sid, [Outcome.SUCCEEDED, Outcome.FAILED])
            with site.backend.lock:
                site.backend.slots[sid].runs[0] = replace(
                    runs[-1],
                    exit_code=3,
                    error="exit code 3" if sid == "jobs.shell" else "RuntimeError: boom",
                )
        page = site.client.get("/").body
        assert "Failed (exit code 3)" in card(page, "jobs.shell")
        history = site.client.get("/schedulers/jobs.shell/history").body
        assert '<span class="outcome outcome-failed">Failed (exit code 3)</span>' in history
        assert "exit 3</div>" not in history  # said once, not twice or thrice
        assert '<div class="run-error' not in history
        status = site.client.get("/schedulers/jobs.shell").body
        assert "Failed (exit code 3)</span></span>" in status  # the status panel's
        # a Python runner that raised: its traceback says why, not the child's exit code
        assert ">Failed</span>" in card(page, "jobs.manual")
        python = site.client.get("/schedulers/jobs.manual/history").body
        assert "exit code" not in python and "exit 3</div>" not in python
    finally:
        site.stop.set()


def test_the_outcome_filter_and_its_no_match_message(site: Site) -> None:
    give_runs(site, "jobs.manual", [Outcome.FAILED])
    give_runs(site, "jobs.hello", [Outcome.SUCCEEDED])
    page = site.client.get("/?outcome=failed").body
    assert re.findall(r'<article class="card" data-id="([^"]+)"', page) == ["jobs.manual"]
    assert '<option value="failed" selected>' in page
    assert "last outcome failed" in page
    none = site.client.get("/?outcome=timed_out").body
    assert "No scheduler's last run timed out" in none
    assert '<article class="card"' not in none
    assert site.client.get("/?outcome=bogus").status == 400
    # the text filter matches what the script matches: the outcome word too
    assert re.findall(
        r'<article class="card" data-id="([^"]+)"', site.client.get("/?q=succeeded").body
    ) == ["jobs.hello"]


def test_the_cards_fragment_answers_only_the_cards_asked_for(site: Site) -> None:
    give_runs(site, "jobs.manual", [Outcome.SUCCEEDED, Outcome.CRASHED])
    answer = site.client.get("/?cards=jobs.manual,jobs.hello,nope")
    assert answer.status == 200
    ids = re.findall(r'<article class="card" data-id="([^"]+)"', answer.body)
    assert sorted(ids) == ["jobs.hello", "jobs.manual"]
    assert "<html" not in answer.body  # a fragment, not a page
    assert 'data-health="failing"' in card(answer.body, "jobs.manual")
    assert "strip-crashed" in card(answer.body, "jobs.manual")


def test_an_error_keeps_its_lines_and_is_marked_for_clamping(site: Site) -> None:
    give_runs(site, "jobs.manual", [Outcome.FAILED])
    traceback = "RuntimeError: boom\nTraceback (most recent call last):\n  File x, line 1"
    with site.backend.lock:
        slot = site.backend.slots["jobs.manual"]
        slot.runs[0] = replace(slot.runs[0], error=traceback)
    history = site.client.get("/schedulers/jobs.manual/history").body
    assert f'<div class="run-error error-text" data-clamp>{traceback}</div>' in history.replace(
        "&#34;", '"'
    )
    page = site.client.get("/").body
    css = site.client.get(re.findall(r'href="(/static/admin\.css[^"]*)"', page)[0]).body
    assert ".error-text { white-space: pre-wrap;" in css
