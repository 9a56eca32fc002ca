"""What the Admin Center pages show and what their forms do (in-process, fake backend)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from supervisor.core.access import with_role
from supervisor.core.definitions import Options
from supervisor.core.records import Level, Outcome
from supervisor.web.app import create_app
from supervisor.web.logs import LOG_PAGE
from supervisor.web.overview import SNAPSHOT_SECONDS
from tests.test_web_fakes import Client, make_world
from tests.test_web_routes import FAST
from tests.waiting import wait_for


class Site:
    def __init__(self, options: list[Options] | None = None) -> None:
        world = make_world(options)
        self.use_cases, self.backend, self.audit, self.users, self.clock = world
        self.stop = threading.Event()
        self.app = create_app(
            self.use_cases,
            users=self.users,
            config=FAST,
            clock=self.clock,
            stop=self.stop,
            sleep=lambda _: None,
        )
        self.client = Client(self.app)
        assert self.client.login("ada").status == 303

    def post(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """POST with a valid token; (status, Location, body of the page it leads to)."""
        token = self.client.csrf("/schedulers/jobs.repeat")
        response = self.client.post(path, {"csrf": token, **(form or {})})
        location = response.header("Location") or ""
        page = self.client.get(location).body if response.status == 303 else response.body
        return response.status, location, page


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.stop.set()


def card(page: str, scheduler_id: str) -> str:
    start = page.index(f'data-id="{scheduler_id}"')
    return page[start : page.index("</article>", start)]


def test_the_overview_shows_a_card_per_scheduler(site: Site) -> None:
    site.backend.execute("jobs.repeat", actor="ada")
    site.clock.advance(3)
    site.backend.finish("jobs.repeat", Outcome.FAILED, error="RuntimeError: ops")
    page = site.client.get("/").body
    assert "<h1>Background Processes</h1>" in page
    assert page.count('<article class="card"') == 4
    repeat = card(page, "jobs.repeat")
    for text in (
        "Fail with random",
        "Runs scheduled and fails in random ways",
        "Repeating",
        "#kind-schedule",
        "state-paused",
        "Last started",
        "Last completed",
        "Next planned",
        'datetime="2026-03-01T12:00:13+00:00"',  # next planned: end + 10 s pause
        "outcome-failed",
        "RuntimeError: ops",
    ):
        assert text in repeat, text
    assert "#kind-cron" in card(page, "jobs.nightly")
    assert "Manual" in card(page, "jobs.manual")


def test_execute_now_starts_a_run_and_refuses_a_second_one(site: Site) -> None:
    status, location, page = site.post("/schedulers/jobs.repeat/execute")
    assert status == 303 and location == "/schedulers/jobs.repeat"
    run_id = site.backend.slots["jobs.repeat"].current.run_id  # type: ignore[union-attr]
    assert "Run started" in page and run_id in page
    status, _, page = site.post("/schedulers/jobs.repeat/execute")
    assert status == 303
    assert "Execute Now refused" in page and f"already running (run {run_id})" in page
    assert [e.action for e in site.audit.entries] == ["execute"]


def test_stop_and_start(site: Site) -> None:
    site.post("/schedulers/jobs.repeat/stop", {"confirmed": "1"})
    assert "state-stopped" in site.client.get("/schedulers/jobs.repeat").body
    site.post("/schedulers/jobs.repeat/start")
    assert "state-paused" in site.client.get("/schedulers/jobs.repeat").body
    assert [e.action for e in site.audit.entries] == ["stop", "start"]


def test_a_custom_action_shows_its_result(site: Site) -> None:
    status, _, page = site.post("/schedulers/jobs.repeat/actions/count")
    assert status == 303
    assert "Count things" in page and "42 things" in page
    assert site.audit.entries[-1].detail == "result: 42 things"


def test_an_unknown_action_or_scheduler_is_404(site: Site) -> None:
    assert site.post("/schedulers/jobs.repeat/actions/nope")[0] == 404
    assert site.client.get("/schedulers/no.such").status == 404
    assert site.client.get("/schedulers/no.such/logs").status == 404


def test_saving_settings_applies_them_and_marks_them_overridden(site: Site) -> None:
    status, location, page = site.post(
        "/schedulers/jobs.repeat/settings",
        {"start_delay": "1s", "pause_time": "1m30s", "timeout": "", "disabled": ""},
    )
    assert status == 303 and location.endswith("#settings")
    assert site.backend.slots["jobs.repeat"].overrides == {"pause_time": timedelta(seconds=90)}
    assert "Settings saved" in page
    assert 'value="1m30s"' in page
    assert page.count(">overridden<") == 1
    assert "Code default: <span" in page
    entry = site.audit.entries[-1]
    assert entry.action == "update settings"
    assert entry.before is not None and entry.after is not None
    assert entry.before["pause_time"] == 10 and entry.after["pause_time"] == 90
    audit_page = site.client.get("/audit").body
    assert "update settings" in audit_page and "ada" in audit_page
    assert re.search(r'class="changed"><th scope="row">pause_time</th>', audit_page)
    assert "1m30s" in audit_page and "10s" in audit_page


def test_each_bad_field_gets_its_own_message_and_nothing_is_applied(site: Site) -> None:
    status, _, page = site.post(
        "/schedulers/jobs.repeat/settings",
        {"start_delay": "soon", "pause_time": "5 minutes", "timeout": "-3s"},
    )
    assert status == 400
    for field in ("start_delay", "pause_time", "timeout"):
        assert f'id="e-{field}"' in page, field
        assert f'id="f-{field}" type="text" name="{field}" value=' in page
    assert "invalid duration" in page
    assert 'value="5 minutes"' in page  # what was typed is shown back
    assert site.backend.slots["jobs.repeat"].overrides == {}
    assert site.audit.entries == []


def test_a_rule_of_the_kind_is_reported_on_its_field(site: Site) -> None:
    status, _, page = site.post(
        "/schedulers/jobs.repeat/settings", {"start_delay": "0s", "pause_time": "0s"}
    )
    assert status == 400
    assert 'id="e-pause_time"' in page and "must be positive" in page


def test_reset_returns_to_the_code_defaults(site: Site) -> None:
    site.post("/schedulers/jobs.repeat/settings", {"start_delay": "1s", "pause_time": "30s"})
    status, _, page = site.post("/schedulers/jobs.repeat/settings/reset")
    assert status == 303
    assert site.backend.slots["jobs.repeat"].overrides == {}
    assert "Settings reset" in page and ">overridden<" not in page
    assert site.audit.entries[-1].action == "reset settings"


def test_a_cron_scheduler_previews_its_next_five_runs(site: Site) -> None:
    page = site.client.get("/schedulers/jobs.nightly").body
    preview = page[page.index("data-preview-list") :]
    preview = preview[: preview.index("</ol>")]
    times = re.findall(r'datetime="([^"]+)"', preview)
    assert times == [
        "2026-03-02T02:00:00+00:00",
        "2026-03-03T02:00:00+00:00",
        "2026-03-04T02:00:00+00:00",
        "2026-03-05T02:00:00+00:00",
        "2026-03-06T02:00:00+00:00",
    ]
    assert "03:00:00 CET (UTC+0100)" in preview


def test_the_preview_follows_what_is_typed(site: Site) -> None:
    response = site.client.get(
        "/schedulers/jobs.nightly/preview?cron=30+2+*+*+*&timezone=America/New_York"
    )
    data = json.loads(response.body)
    assert data["error"] is None and len(data["times"]) == 5
    assert data["times"][0]["text"].startswith("Mon 2026-03-02 02:30:00 EST")
    bad = json.loads(site.client.get("/schedulers/jobs.nightly/preview?cron=0+3&timezone=UTC").body)
    assert bad["times"] == [] and bad["error"]["field"] == "cron"
    zone = json.loads(
        site.client.get("/schedulers/jobs.nightly/preview?cron=0+3+*+*+*&timezone=Mars/Base").body
    )
    assert zone["error"]["field"] == "timezone"


def test_the_run_history_draws_durations_coloured_by_outcome(site: Site) -> None:
    for outcome, seconds in ((Outcome.SUCCEEDED, 2), (Outcome.FAILED, 4), (Outcome.CRASHED, 1)):
        site.backend.execute("jobs.repeat", actor="ada")
        site.clock.advance(seconds)
        site.backend.finish("jobs.repeat", outcome)
    site.backend.execute("jobs.repeat", actor="otto")
    fragment = site.client.get("/schedulers/jobs.repeat/history").body
    assert "<svg" in fragment and "<!doctype" not in fragment
    bars = re.findall(r'<rect class="bar (outcome-[a-z_]+)"[^>]*height="([\d.]+)"', fragment)
    assert [css for css, _ in bars] == [
        "outcome-succeeded",
        "outcome-failed",
        "outcome-crashed",
        "outcome-running",
    ]
    heights = [float(h) for _, h in bars]
    assert heights[1] == max(heights) and heights[0] == pytest.approx(heights[1] / 2, abs=1)
    assert "top: 4.00 s" in fragment
    assert fragment.count("<tr") == 5  # head + 4 runs
    assert "otto" in fragment and "manual" in fragment


def test_the_log_viewer_pages_through_a_long_log_by_cursor(site: Site) -> None:
    site.backend.execute("jobs.repeat", actor="ada")
    cursors = [site.backend.log("jobs.repeat", f"line {i}", n=i) for i in range(450)]
    page = site.client.get("/schedulers/jobs.repeat/logs").body
    assert page.count('<li class="log-row') == LOG_PAGE
    assert "line 449" in page and "line 250" in page and "line 249" not in page
    assert 'data-tail-url="/events/schedulers/jobs.repeat/logs"' in page  # live at the end
    older = re.search(r'href="([^"]+)" rel="prev"', page)
    assert older is not None
    assert f"before={cursors[250]}" in older.group(1)
    page = site.client.get(older.group(1).replace("&amp;", "&")).body
    assert "line 249" in page and "line 50" in page and "line 250" not in page
    assert "data-tail-url" not in page  # an older page does not follow live
    newer = re.search(r'href="([^"]+)" rel="next"', page)
    assert newer is not None
    page = site.client.get(newer.group(1).replace("&amp;", "&")).body
    assert "line 250" in page and "line 449" in page


def test_the_log_viewer_filters_by_level_and_run(site: Site) -> None:
    first = site.backend.execute("jobs.repeat", actor="ada")
    site.backend.log("jobs.repeat", "first info")
    site.backend.log("jobs.repeat", "first error", level=Level.ERROR)
    site.backend.finish("jobs.repeat", Outcome.FAILED)
    site.backend.execute("jobs.repeat", actor="ada")
    site.backend.log("jobs.repeat", "second warning", level=Level.WARNING, attempt=2)
    errors = site.client.get("/schedulers/jobs.repeat/logs?level=warning").body
    assert "first error" in errors and "second warning" in errors and "first info" not in errors
    only = site.client.get(f"/schedulers/jobs.repeat/logs?run={first}").body
    assert "first info" in only and "second warning" not in only
    fields = site.client.get("/schedulers/jobs.repeat/logs").body
    assert '<span class="field-key">attempt</span><span class="field-value">2</span>' in fields


def test_bad_query_values_are_400(site: Site) -> None:
    assert site.client.get("/schedulers/jobs.repeat/logs?before=abc").status == 400
    assert site.client.get("/schedulers/jobs.repeat/logs?level=loud").status == 400
    assert site.client.get("/audit?before=-1").status == 400


def test_the_audit_page_shows_who_did_what_and_when(site: Site) -> None:
    site.use_cases.stop(with_role("otto", "operator"), "jobs.hello")
    page = site.client.get("/audit").body
    assert "otto" in page and "stop" in page and 'href="/schedulers/jobs.hello"' in page
    assert 'datetime="2026-03-01T12:00:00+00:00"' in page
    filtered = site.client.get("/audit?scheduler=jobs.repeat").body
    assert "jobs.hello" not in filtered.split("<table", 1)[-1]


def test_pages_load_their_script_and_styles_from_static(site: Site) -> None:
    page = site.client.get("/").body
    script = re.search(r'<script src="(/static/admin\.js\?v=[0-9a-f]+)" defer>', page)
    style = re.search(r'href="(/static/admin\.css\?v=[0-9a-f]+)"', page)
    assert script is not None and style is not None
    js = site.client.get(script.group(1))
    assert js.status == 200
    assert (js.header("Content-Type") or "").startswith("text/javascript")
    assert "immutable" in (js.header("Cache-Control") or "")
    assert site.client.get("/static/../app.py").status == 404
    assert site.client.get("/static/__init__.py").status == 404


def test_the_overview_shows_changes_made_through_it_at_once(site: Site) -> None:
    assert "state-running" not in card(site.client.get("/").body, "jobs.manual")
    site.post("/schedulers/jobs.manual/execute")
    assert "state-running" in card(site.client.get("/").body, "jobs.manual")


def test_the_overview_shows_other_changes_within_its_snapshot_time(site: Site) -> None:
    assert "state-running" not in card(site.client.get("/").body, "jobs.manual")
    site.backend.execute("jobs.manual", actor="cli")  # not through the Admin Center
    started = time.monotonic()
    wait_for(
        lambda: "state-running" in card(site.client.get("/").body, "jobs.manual"),
        timeout=5,
        what="the run on the overview",
    )
    assert time.monotonic() - started <= SNAPSHOT_SECONDS + 0.5
