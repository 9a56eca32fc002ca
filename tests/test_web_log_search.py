"""The Admin Center's log search and record permalinks (in-process, fake backend)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest

from supervisor.core.records import Level, Outcome
from tests.test_web_pages import Site


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    # jobs.repeat: an old run with an error, then a new run; jobs.hello: one run
    s.backend.execute("jobs.repeat", actor="ada")
    s.backend.log("jobs.repeat", "Connecting to ERP", order_id=42)
    s.backend.log("jobs.repeat", "ERP refused the login", level=Level.ERROR, order_id=42)
    s.backend.finish("jobs.repeat", Outcome.FAILED)
    s.clock.advance(2 * 3600)
    s.backend.execute("jobs.hello", actor="ada")
    s.backend.log("jobs.hello", "disk almost full", level=Level.WARNING, mount="/var")
    s.backend.log("jobs.hello", "order 43 failed", level=Level.ERROR, order_id=43)
    s.backend.finish("jobs.hello", Outcome.FAILED)
    yield s
    s.stop.set()


def hits(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<span class="log-message">([^<]*)</span>', page)]


def test_the_search_form_is_empty_until_asked(site: Site) -> None:
    page = site.client.get("/logs").body
    assert "<h1>Log search</h1>" in page
    assert 'href="/logs?level=error&amp;since=1h"' in page  # the preset
    assert hits(page) == []
    assert 'href="/logs" class="current" aria-current="page">Log search</a>' in page


def test_all_errors_in_the_last_hour_across_schedulers(site: Site) -> None:
    page = site.client.get("/logs?level=error&since=1h").body
    assert hits(page) == ["order 43 failed"]
    everything = site.client.get("/logs?level=error&since=3h").body
    assert hits(everything) == ["ERP refused the login", "order 43 failed"]
    # each result names its scheduler and run, and carries its time with the zone
    assert '<a class="log-scheduler" href="/schedulers/jobs.repeat"' in everything
    assert re.search(
        r'class="log-run mono" href="/schedulers/jobs.repeat/logs\?run=\w+"', everything
    )
    assert re.search(
        r'<time datetime="2026-03-01T1\d:\d\d:\d\d\+00:00" data-fmt="datetime"'
        r' title="[^"]+ UTC" class="log-time search-time">2026-03-01 1\d:\d\d:\d\d UTC</time>',
        everything,
    )
    # the filters stay in the form
    assert '<option value="error" selected>' in page
    assert 'name="since" value="1h"' in page


def test_text_and_field_filters(site: Site) -> None:
    assert hits(site.client.get("/logs?q=erp").body) == [
        "Connecting to ERP",
        "ERP refused the login",
    ]
    assert hits(site.client.get("/logs?q=%2Fvar").body) == ["disk almost full"]  # a field value
    assert hits(site.client.get("/logs?fields=order_id%3D42").body) == [
        "Connecting to ERP",
        "ERP refused the login",
    ]
    both = site.client.get("/logs?fields=order_id%3D42&q=refused&scheduler=jobs.repeat").body
    assert hits(both) == ["ERP refused the login"]
    assert hits(site.client.get("/logs?q=erp&scheduler=jobs.hello").body) == []
    assert "No log records match these filters." in site.client.get("/logs?q=nothing").body


def test_filters_that_do_not_read_are_said_on_the_page(site: Site) -> None:
    bad_time = site.client.get("/logs?since=yesterdayish")
    assert bad_time.status == 200
    assert "data-search-error" in bad_time.body and "since" in bad_time.body
    bad_field = site.client.get("/logs?fields=order_id").body
    assert "expected NAME=VALUE" in bad_field
    quote = site.client.get("/logs?fields=a%3D%22open").body
    assert "quote values holding spaces" in quote
    assert site.client.get("/logs?scheduler=jobs.nope").status == 404
    assert site.client.get("/logs?level=loud").body.count("data-search-error") == 1


def test_a_permalink_opens_the_log_at_its_record_highlighted(site: Site) -> None:
    page = site.client.get("/logs?q=refused").body
    link = re.search(r'class="log-permalink" href="([^"]+)"', page)
    assert link is not None
    target = html.unescape(link.group(1))
    path, _, fragment = target.partition("#")
    cursor = fragment.removeprefix("log-")
    assert path == f"/schedulers/jobs.repeat/logs?at={cursor}"
    opened = site.client.get(path).body
    row = re.search(r'<li class="log-row[^"]*" id="log-(\d+)"[^>]*aria-current="true"', opened)
    assert row is not None and row.group(1) == cursor
    assert 'class="log-row level-error source-logger highlighted"' in opened
    assert "Connecting to ERP" in opened  # the records around it too
    assert "data-tail-url" not in opened  # a permalink does not follow live


def test_a_permalink_to_a_record_gone_says_so(site: Site) -> None:
    page = site.client.get("/schedulers/jobs.repeat/logs?at=999999").body
    assert "data-permalink-missing" in page


def test_search_pages_by_cursor_keeping_the_filters(site: Site) -> None:
    site.backend.execute("jobs.repeat", actor="ada")
    for i in range(130):
        site.backend.log("jobs.repeat", f"bulk {i}", batch=7)
    page = site.client.get("/logs?fields=batch%3D7").body
    assert hits(page)[0] == "bulk 30" and hits(page)[-1] == "bulk 129"
    older = re.search(r'href="([^"]+)" rel="prev"', page)
    assert older is not None
    older_page = site.client.get(html.unescape(older.group(1))).body
    assert hits(older_page) == [f"bulk {i}" for i in range(30)]
    assert "fields=batch%3D7" in older.group(1)
    assert 'rel="next"' in older_page


def test_an_iso_time_without_offset_is_in_the_browsers_zone(site: Site) -> None:
    # jobs.hello's records are at 14:00 UTC; 14:30 in UTC+01:00 is 13:30 UTC
    assert hits(site.client.get("/logs?since=2026-03-01T14:30&offset=60").body) == [
        "disk almost full",
        "order 43 failed",
    ]
    assert hits(site.client.get("/logs?since=2026-03-01T14:30").body) == []  # UTC
    assert hits(site.client.get("/logs?since=2026-03-01T14:30%2B01:00").body) == [
        "disk almost full",
        "order 43 failed",
    ]
    assert "data-search-error" in site.client.get("/logs?since=1h&offset=5000").body
    assert "data-log-empty" not in site.client.get("/logs?offset=60").body  # no search yet
