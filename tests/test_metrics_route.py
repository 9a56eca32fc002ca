"""``/metrics`` of a real Admin Center over a real manager, scraped over HTTP with a bearer
token and parsed by prometheus_client's parser (a tiny log cap makes runs drop records)."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.core.access import su
from supervisor.service.manager_mode import RunOptions, Service, admin_factory
from tests.waiting import wait_for

TOKEN = "scrape-token-0123456789"
LOG_CAP = 16


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    state: Path = tmp_path_factory.mktemp("metrics") / "state"
    running = Service(
        RunOptions(
            app_spec="tests.apps.manager_jobs:cfg",
            state_dir=state,
            admin=("127.0.0.1", 0),
            grace_seconds=0.5,
            # So small that a run's first record (m.fail's "run failed: ...") is dropped.
            max_log_bytes_per_run=LOG_CAP,
        ),
        log=io.StringIO(),
        admin_factory=admin_factory(metrics_token=TOKEN),
    )
    running.start()
    yield running
    running.close()


def scrape(service: Service, token: str | None) -> tuple[int, str, str]:
    admin = service._admin  # the handle start_admin returned
    assert admin is not None
    request = urllib.request.Request(f"{admin.url}/metrics")  # type: ignore[attr-defined]
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), ""


def test_a_scraper_with_the_token_reads_every_scheduler(service: Service) -> None:
    assert service.use_cases is not None
    # A first scrape sets the baseline: a run that ended before it would be history, not
    # counted (counters count runs ended since the collector's first look).
    assert scrape(service, TOKEN)[0] == 200
    run_id = service.use_cases.execute(su(), "m.fail")

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        status, content_type, body = scrape(service, TOKEN)
        assert status == 200
        assert content_type.startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        key = ("sched_supervisor_runs_total", (("outcome", "failed"), ("scheduler", "m.fail")))
        return samples if samples.get(key) == 1 else None

    samples = wait_for(counted, timeout=30, what=f"the failed run {run_id} to be counted")
    assert samples[("sched_supervisor_state", (("scheduler", "m.fail"), ("state", "paused")))] == 1
    assert ("sched_supervisor_failures_in_a_row", (("scheduler", "m.fail"),)) in samples
    # m.fail's one record did not fit the cap: dropped, counted, its log marked incomplete.
    assert samples[("sched_supervisor_log_records_dropped_total", (("scheduler", "m.fail"),))] == 1
    assert samples[("sched_supervisor_runs_log_truncated_total", (("scheduler", "m.fail"),))] == 1
    ids = {dict(labels).get("scheduler") for _name, labels in samples}
    assert {"m.fail", "m.repeat", "m.cron"} <= ids


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_without_the_token_or_a_session_no_metrics_are_shown(
    service: Service, token: str | None
) -> None:
    status, _content_type, body = scrape(service, token)
    assert status in (302, 303, 401)
    assert "sched_supervisor" not in body
