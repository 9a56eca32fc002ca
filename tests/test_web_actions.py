"""The Admin Center's controls (``web.actions``): decisions ask first and keep a reason,
Start and Stop are greyed while they would do nothing, and a refused control answers on
the page it came from (in-process, fake backend)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.core.errors import BackendError
from supervisor.core.records import DecisionKind
from tests.test_web_fakes import START
from tests.test_web_pages import Site

PAGE = "/schedulers/jobs.repeat"


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop.set()


def button(page: str, control: str) -> str:
    """The ``<button>`` tag of one control."""
    match = re.search(rf'<button [^>]*data-control="{control}"[^>]*>', page)
    assert match is not None, f"no {control} button"
    return match.group(0)


def test_stop_without_its_confirmation_asks_first_and_changes_nothing(site: Site) -> None:
    status, _, page = site.post(f"{PAGE}/stop", {"back": PAGE})
    assert status == 200
    assert '<h2 id="confirm-stop-h">Stop Fail with random?</h2>' in page
    assert 'name="confirmed" value="1"' in page and 'name="reason"' in page
    assert f'name="back" value="{PAGE}"' in page
    assert site.backend.commands == [] and site.audit.entries == []


def test_a_confirmed_stop_keeps_its_reason_on_the_page_the_card_and_the_audit(
    site: Site,
) -> None:
    form = {"confirmed": "1", "reason": "  ERP   maintenance ", "back": PAGE}
    status, location, page = site.post(f"{PAGE}/stop", form)
    assert status == 303 and location == PAGE
    assert "Stopped" in page
    assert re.search(r'data-field="decision">stopped by ada [^<]* UTC: ERP maintenance<', page)
    overview = site.client.get("/").body
    assert "stopped by ada" in overview and "ERP maintenance" in overview
    (entry,) = site.audit.entries
    assert (entry.action, entry.actor, entry.detail) == ("stop", "ada", "ERP maintenance")


def test_start_is_greyed_while_active_and_stop_while_stopped(site: Site) -> None:
    page = site.client.get(PAGE).body
    start = button(page, "start")
    assert " disabled" in start and 'title="Already active: it plans runs"' in start
    assert " disabled" not in button(page, "stop")
    site.post(f"{PAGE}/stop", {"confirmed": "1"})
    page = site.client.get(PAGE).body
    stop = button(page, "stop")
    assert " disabled" in stop and 'title="Already stopped"' in stop
    assert " disabled" not in button(page, "start")
    assert 'data-confirm="confirm-stop"' in stop
    assert '<dialog class="confirm-dialog" id="confirm-stop"' in page


def test_a_pause_reads_its_time_in_the_browsers_zone(site: Site) -> None:
    form = {"confirmed": "1", "until": "18:00", "offset": "60", "reason": "ERP", "back": PAGE}
    status, _, page = site.post(f"{PAGE}/pause", form)
    assert status == 303
    decision = site.backend.slots["jobs.repeat"].decision
    assert decision is not None and decision.kind is DecisionKind.PAUSED
    # START is 2026-03-01 12:00 UTC: 18:00 at UTC+1 is 17:00 UTC the same day.
    assert decision.until == START.replace(hour=17)
    assert "resumes by itself at 2026-03-01 17:00 UTC" in page
    assert "paused until 2026-03-01 17:00 UTC by ada: ERP" in page
    assert ">Resume<" in page


def test_a_pause_date_across_a_dst_change_is_read_in_the_browsers_named_zone(
    site: Site,
) -> None:
    # START is 2026-03-01 (UTC+1 in Berlin); 2026-04-01 is summer time (UTC+2). The
    # script sends both the zone's name and today's offset.
    form = {
        "confirmed": "1",
        "until": "2026-04-01T09:00",
        "zone": "Europe/Berlin",
        "offset": "60",
        "back": PAGE,
    }
    status, _, page = site.post(f"{PAGE}/pause", form)
    assert status == 303
    decision = site.backend.slots["jobs.repeat"].decision
    assert decision is not None and decision.until == datetime(2026, 4, 1, 7, 0, tzinfo=UTC)
    assert "resumes by itself at 2026-04-01 07:00 UTC" in page


def test_a_pause_in_an_unknown_zone_is_refused_saying_so(site: Site) -> None:
    form = {"confirmed": "1", "until": "18:00", "zone": "Mars/Olympus", "back": PAGE}
    status, _, page = site.post(f"{PAGE}/pause", form)
    assert status == 400
    assert 'role="alert">zone: &#39;Mars/Olympus&#39; is not a known time zone<' in page
    assert site.backend.commands == []


def test_a_pause_of_a_stopped_scheduler_is_refused_and_the_stop_stays(site: Site) -> None:
    site.post(f"{PAGE}/stop", {"confirmed": "1", "reason": "ERP"})
    form = {"confirmed": "1", "until": "2h", "back": PAGE}
    status, location, page = site.post(f"{PAGE}/pause", form)
    assert status == 303 and location == PAGE
    assert "Pause refused" in page
    assert "is stopped by ada 2026-03-01 12:00 UTC: ERP — start it first, or the stop stays" in (
        page
    )
    decision = site.backend.slots["jobs.repeat"].decision
    assert decision is not None and decision.kind is DecisionKind.STOPPED
    assert decision.reason == "ERP"


def test_a_pause_with_a_bad_time_asks_again_saying_why(site: Site) -> None:
    form = {"confirmed": "1", "until": "whenever", "reason": "ERP", "back": PAGE}
    status, _, page = site.post(f"{PAGE}/pause", form)
    assert status == 400
    assert "is not a time or a duration" in page
    assert 'value="whenever"' in page and 'value="ERP"' in page  # what was typed stays
    assert site.backend.commands == []


def test_a_disable_with_a_reason_and_an_enable(site: Site) -> None:
    site.post(f"{PAGE}/disable", {"confirmed": "1", "reason": "broken upstream"})
    page = site.client.get(PAGE).body
    assert "disabled by ada" in page and "broken upstream" in page
    assert 'title="Disabled: enable it first"' in button(page, "start")
    site.post(f"{PAGE}/enable")
    assert site.backend.status("jobs.repeat").settings.disabled is False


def test_a_refused_execute_now_stays_on_its_page_and_links_to_the_live_log(site: Site) -> None:
    back = f"{PAGE}/logs?level=info"
    site.post(f"{PAGE}/execute")
    run_id = site.backend.slots["jobs.repeat"].current.run_id  # type: ignore[union-attr]
    status, location, page = site.post(f"{PAGE}/execute", {"back": back})
    assert status == 303 and location == back
    assert "Execute Now refused" in page and f"already running (run {run_id})" in page
    assert f'href="{PAGE}/logs?run={run_id}"' in page
    assert f"Watch run {run_id[:8]} live" in page


def test_a_refused_start_is_flashed_where_it_was_pressed(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(scheduler_id: str, *, actor: str) -> None:
        raise BackendError("systemctl start failed: unit not loaded")

    monkeypatch.setattr(site.backend, "start", refuse)
    status, location, page = site.post(f"{PAGE}/start", {"back": "/?q=repeat"})
    assert status == 303 and location == "/?q=repeat"
    assert "Start refused" in page and "unit not loaded" in page
    assert "Something went wrong" not in page


def test_without_a_back_field_the_referer_decides_and_foreign_ones_are_ignored(
    site: Site,
) -> None:
    token = site.client.csrf(PAGE)
    here = {"Referer": "http://localhost/?filter=failing", "Host": "localhost"}
    response = site.client.post(f"{PAGE}/execute", {"csrf": token}, headers=here)
    assert response.header("Location") == "/?filter=failing"
    away = {"Referer": "http://evil.example/x", "Host": "localhost"}
    response = site.client.post(f"{PAGE}/execute", {"csrf": token}, headers=away)
    assert response.header("Location") == PAGE


def test_a_long_reason_is_refused_and_asked_again(site: Site) -> None:
    status, _, page = site.post(f"{PAGE}/stop", {"confirmed": "1", "reason": "x" * 600})
    assert status == 400 and "500 characters" in page
    assert site.backend.commands == []


def test_retries_are_a_setting_of_the_form(site: Site) -> None:
    page = site.client.get(PAGE).body
    assert 'name="retries"' in page and 'name="retry_delay"' in page
    form = {"start_delay": "0s", "pause_time": "1m", "timeout": "", "retries": "3"}
    site.post(f"{PAGE}/settings", {**form, "retry_delay": "45s"})
    settings = site.backend.status("jobs.repeat").settings
    assert settings.retries == 3 and settings.retry_delay == timedelta(seconds=45)
    status, _, page = site.post(f"{PAGE}/settings", {**form, "retries": "many"})
    assert status == 400 and "must be a whole number" in page


def test_a_reason_with_markup_stays_text(site: Site) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    site.post(f"{PAGE}/stop", {"confirmed": "1", "reason": hostile})
    page = site.client.get(PAGE).body
    assert hostile not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
