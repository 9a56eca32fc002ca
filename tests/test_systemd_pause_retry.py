"""Timed pauses and retries in systemd mode, against a real systemd booted in a private
namespace, through the CLI (a new process for each command, as after a restart of the
Admin Center): a pause stops the timers and its resume timer starts them at its end;
resume cancels it; a failed run is retried with the doubling wait, shown as "retry N of
M", and a stopped run is never retried."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from supervisor.cfgscheduler import enable
from supervisor.core.app import load_app
from supervisor.service.systemd_mode import unit_layout
from tests.apps.systemd_retry_jobs import HOLD_FILE
from tests.systemd_ns import NamespacedSystemd, systemd_namespace
from tests.test_systemd_e2e import REPO_UNDER_TMP, Cli, journal

__all__ = ["systemd_namespace"]

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(REPO_UNDER_TMP, reason="the checkout is under /tmp or /var/tmp"),
]

APP = "tests.apps.systemd_retry_jobs:cfg"


def _services() -> dict[str, str]:
    layout = unit_layout(load_app(APP), manifest=None)
    return {o.id: layout.service_name(o) for o in enable(load_app(APP)).registry}


def _ticks(ns: NamespacedSystemd) -> list[float]:
    found = journal(ns, "SCHEDULER_ID=rt.tick", "MESSAGE=tick")
    return sorted(float(r["F_ENTERED"]) for r in found)


def _ended(ns: NamespacedSystemd, scheduler_id: str) -> list[dict[str, str]]:
    return journal(ns, f"SCHEDULER_ID={scheduler_id}", "SUPERVISOR_EVENT=run_end")


def test_a_timed_pause_resumes_by_itself_and_resume_cancels_it(
    systemd_namespace: NamespacedSystemd,
) -> None:
    ns = systemd_namespace
    cli = Cli(ns, ns.shared_dir / "state")
    cli.run("install-units", "--app", APP)
    service = _services()["rt.tick"]
    resume = service.removesuffix(".service") + ":resume.timer"
    ns.wait_until(lambda: len(_ticks(ns)) >= 2, 30, message="rt.tick running")

    cli.run("pause", "rt.tick", "--until", "4s", "--reason", "backup window")
    paused_at = time.time()
    status: dict[str, Any] = cli.json("status", "rt.tick")
    assert status["state"] == "stopped"
    decision = status["decision"]
    assert decision["kind"] == "paused" and decision["reason"] == "backup window"
    until = datetime.fromisoformat(decision["until"]).timestamp()
    assert until == pytest.approx(paused_at + 4, abs=3)
    shown = ns.show(resume, "ActiveState", "SubState", "Description")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "waiting")
    assert "rt.tick" in shown["Description"]

    resumed = ns.wait_until(
        lambda: [t for t in _ticks(ns) if t > until], 20, message="the pause's end"
    )
    during = [t for t in _ticks(ns) if paused_at + 1.5 < t < until]  # a run may finish
    assert during == [] and resumed[0] - until < 3
    assert ns.show(resume, "LoadState")["LoadState"] == "not-found"  # gone once fired
    assert cli.json("status", "rt.tick")["decision"] is None

    cli.run("pause", "rt.tick", "--until", "1h")
    # waiting, or running its step at once (OnActiveSec=0), which finds the end ahead
    assert ns.show(resume, "SubState")["SubState"] in ("waiting", "running")
    cli.run("resume", "rt.tick")
    assert ns.show(resume, "LoadState")["LoadState"] == "not-found"
    again = time.time()
    ns.wait_until(lambda: [t for t in _ticks(ns) if t > again], 20, message="resumed now")
    assert cli.json("status", "rt.tick")["state"] in ("paused", "running")

    cli.run("uninstall-units")
    assert ns.show(resume, "LoadState")["LoadState"] == "not-found"


def test_a_failed_run_is_retried_with_a_doubling_wait_and_a_stopped_one_never(
    systemd_namespace: NamespacedSystemd,
) -> None:
    ns = systemd_namespace
    cli = Cli(ns, ns.shared_dir / "state")
    hold = ns.inside(HOLD_FILE)  # the units see the namespace's /run
    cli.run("install-units", "--app", APP)
    services = _services()
    retry_timer = services["rt.fail"].removesuffix(".service") + ":retry.timer"

    cli.run("execute", "rt.fail")

    def planned() -> dict[str, Any] | None:
        status: dict[str, Any] = cli.json("status", "rt.fail")
        return status if status.get("retry") else None

    status = ns.wait_until(planned, 20, message="a planned retry")
    attempt = status["retry"]["attempt"]  # 1, or 2 on a slow machine (1 s, then 2 s)
    assert status["retry"] == {"attempt": attempt, "of": 2} and attempt in (1, 2)
    assert status["state"] == "paused" and status["next_planned_at"] is not None
    ends = ns.wait_until(lambda: e if len(e := _ended(ns, "rt.fail")) >= 3 else None, 30)
    # no fourth try: two retries allowed
    ns.wait_until(lambda: ns.show(retry_timer, "LoadState")["LoadState"] == "not-found", 10)
    assert len(_ended(ns, "rt.fail")) == 3
    runs = cli.json("runs", "rt.fail")
    assert [r["trigger"] for r in runs] == ["retry", "retry", "manual"]
    assert all(r["outcome"] == "failed" for r in runs)
    retried = journal(ns, "SCHEDULER_ID=rt.fail", "SUPERVISOR_EVENT=run_retry")
    assert [e["SUPERVISOR_ATTEMPT"] for e in retried] == ["0", "1", "2"]
    planned_waits = [
        (int(e["SUPERVISOR_RETRY_AT"]) - int(e["__REALTIME_TIMESTAMP"])) / 1e6 for e in retried[:2]
    ]
    assert planned_waits[0] == pytest.approx(1.0, abs=0.3)
    assert planned_waits[1] == pytest.approx(2.0, abs=0.3)  # twice the first
    starts = sorted(datetime.fromisoformat(r["started_at"]).timestamp() for r in runs)
    ended = sorted(int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in ends)
    for wait, start, end in zip((1.0, 2.0), starts[1:], ended, strict=False):
        # from the runner's end to the next runner's start: the wait, plus the retry
        # step after the run and the next run's interpreter start
        assert wait <= start - end < wait + 3
    logs = [line["message"] for line in cli.json_lines("logs", "rt.fail")]
    assert [m[:12] for m in logs if m.startswith("retry ")] == ["retry 1 of 2", "retry 2 of 2"]

    # a stopped run is cancelled and never retried
    hold.write_text("")
    run_id = cli.json("execute", "rt.hold")["run_id"]
    ns.wait_until(
        lambda: journal(ns, f"RUN_ID={run_id}", "SUPERVISOR_EVENT=run_start"), 20, message="rt.hold"
    )
    assert cli.json("status", "rt.hold")["state"] == "running"  # held, not failed yet
    cli.run("stop", "rt.hold")
    (run,) = [r for r in cli.json("runs", "rt.hold") if r["run_id"] == run_id]
    assert run["outcome"] == "cancelled"
    hold_retry = services["rt.hold"].removesuffix(".service") + ":retry.timer"
    assert ns.show(hold_retry, "LoadState")["LoadState"] == "not-found"
    retried = journal(ns, "SCHEDULER_ID=rt.hold", "SUPERVISOR_EVENT=run_retry")
    assert [e.get("SUPERVISOR_RETRY_ATTEMPT") for e in retried] == [None]
