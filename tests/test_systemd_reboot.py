"""Timed pauses and planned retries across a reboot in systemd mode, against a real
systemd booted in a private namespace (``NamespacedSystemd.reboot``: PID 1 is killed, as
at a power cut, and booted again on the same ``/etc/systemd/system`` and state
directory; ``/run``, the transient units, the timer stamps and the journal are lost).

- A pause holds across a reboot (regression: the transient resume timer vanished at boot
  and the enabled timers started, ending the pause early).
- A pause whose end passed while the machine was down resumes at boot.
- A planned retry does not survive a reboot, as under the manager (a restart drops it):
  the next run is a first try again, with all its retries.
- ``uninstall-units`` leaves none of a pause's or a retry's units behind.

Not covered (a namespace shares the host's kernel): a real reboot's clock (a wrong clock
at boot moves the resume with it), and ``time-set.target`` ordering."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.systemd_ns import NamespacedSystemd, systemd_namespace, wait_until
from tests.test_systemd_e2e import REPO_UNDER_TMP, Cli, journal
from tests.test_systemd_pause_retry import APP, _services

__all__ = ["systemd_namespace"]

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(REPO_UNDER_TMP, reason="the checkout is under /tmp or /var/tmp"),
]

# rt.tick runs every 0.5 s after the end of its last run: a tick this long after boot
# would have come had its timers started.
QUIET_SECONDS = 3.0


def _ticks(ns: NamespacedSystemd) -> list[float]:
    return [float(r["F_ENTERED"]) for r in journal(ns, "SCHEDULER_ID=rt.tick", "MESSAGE=tick")]


def _stays_empty(ns: NamespacedSystemd, seconds: float) -> list[float]:
    """The ticks seen while watching for ``seconds`` (polled; empty if none came)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = _ticks(ns)
        if found:
            return found
        time.sleep(0.1)  # polling the journal during the watch
    return _ticks(ns)


def _pause_files(ns: NamespacedSystemd) -> list[str]:
    """The pause's files in ``/etc/systemd/system``: its units and the enable link."""
    return sorted(str(p.relative_to(ns.etc_units_dir)) for p in ns.etc_units_dir.rglob("*:*"))


def _stem(service: str) -> str:
    return service.removesuffix(".service")


def test_a_timed_pause_survives_a_reboot(systemd_namespace: NamespacedSystemd) -> None:
    ns = systemd_namespace
    cli = Cli(ns, ns.shared_dir / "state")
    cli.run("install-units", "--app", APP)
    stem = _stem(_services()["rt.tick"])
    timers = (f"{stem}.timer", f"{stem}-start.timer")
    ns.wait_until(lambda: len(_ticks(ns)) >= 1, 30, message="rt.tick running")
    cli.run("pause", "rt.tick", "--until", "1h", "--reason", "backup window")
    assert _pause_files(ns) == [
        f"{stem}:resume.service",
        f"{stem}:resume.timer",
        f"timers.target.wants/{stem}:resume.timer",
    ]

    ns.reboot()

    # the resume timer started at boot and ran its step, which found the end ahead
    ns.wait_until(
        lambda: ns.show(f"{stem}:resume.service", "ExecMainExitTimestamp")["ExecMainExitTimestamp"],
        30,
        message="the resume step at boot",
    )
    shown = ns.show(f"{stem}:resume.timer", "ActiveState", "SubState", "UnitFileState")
    assert shown == {"ActiveState": "active", "SubState": "waiting", "UnitFileState": "enabled"}
    for timer in timers:
        assert ns.show(timer, "ActiveState", "UnitFileState") == {
            "ActiveState": "inactive",
            "UnitFileState": "disabled",
        }
    assert _stays_empty(ns, QUIET_SECONDS) == []
    status: dict[str, Any] = cli.json("status", "rt.tick")
    assert status["state"] == "stopped"
    assert status["decision"]["kind"] == "paused"
    assert status["decision"]["reason"] == "backup window"

    cli.run("resume", "rt.tick")  # ends it now: the timers are enabled and run again
    assert _pause_files(ns) == []
    for timer in timers:
        assert ns.show(timer, "UnitFileState")["UnitFileState"] == "enabled"
    ns.wait_until(lambda: _ticks(ns), 30, message="a tick after resume")

    cli.run("pause", "rt.tick", "--until", "1h")
    cli.run("uninstall-units")
    assert _pause_files(ns) == []
    assert not list(ns.etc_units_dir.rglob("*.timer"))  # no timer and no wants link left
    listed = ns.systemctl("list-timers", "--all", "--plain", "--no-legend").stdout
    assert "rt.tick" not in listed and "resume" not in listed


def test_a_pause_that_ended_while_the_machine_was_down_resumes_at_boot(
    systemd_namespace: NamespacedSystemd,
) -> None:
    ns = systemd_namespace
    cli = Cli(ns, ns.shared_dir / "state")
    cli.run("install-units", "--app", APP)
    stem = _stem(_services()["rt.tick"])
    ns.wait_until(lambda: len(_ticks(ns)) >= 1, 30, message="rt.tick running")
    cli.run("pause", "rt.tick", "--until", "3s")
    until = datetime.fromisoformat(cli.json("status", "rt.tick")["decision"]["until"])

    ns.power_off()
    wait_until(lambda: time.time() > until.timestamp() + 1, 30, message="the pause's end")
    ns.power_on()

    ticks = ns.wait_until(lambda: _ticks(ns), 30, message="a tick after boot")
    assert min(ticks) > until.timestamp()
    ns.wait_until(lambda: _pause_files(ns) == [], 10, message="the pause's units removed")
    assert ns.show(f"{stem}:resume.timer", "LoadState")["LoadState"] == "not-found"
    for timer in (f"{stem}.timer", f"{stem}-start.timer"):
        assert ns.show(timer, "UnitFileState")["UnitFileState"] == "enabled"
    assert cli.json("status", "rt.tick")["decision"] is None


def test_a_planned_retry_is_dropped_by_a_reboot_and_the_next_run_is_a_first_try(
    systemd_namespace: NamespacedSystemd,
) -> None:
    ns = systemd_namespace
    cli = Cli(ns, ns.shared_dir / "state")
    cli.run("install-units", "--app", APP)
    stem = _stem(_services()["rt.fail"])
    cli.run("settings", "rt.fail", "--retry-delay", "1h")
    cli.run("execute", "rt.fail")

    def planned() -> dict[str, Any] | None:
        status: dict[str, Any] = cli.json("status", "rt.fail")
        return status if status.get("retry") else None

    assert ns.wait_until(planned, 30, message="a planned retry")["retry"] == {
        "attempt": 1,
        "of": 2,
    }

    ns.reboot()

    assert ns.show(f"{stem}:retry.timer", "LoadState")["LoadState"] == "not-found"
    status: dict[str, Any] = cli.json("status", "rt.fail")
    assert status["retry"] is None and status["next_planned_at"] is None
    dropin = ns.etc_units_dir / f"{stem}.service.d" / "60-sched-supervisor-retries.conf"
    assert dropin.exists()  # the retries themselves stay

    run_id = cli.json("execute", "rt.fail")["run_id"]
    again = ns.wait_until(planned, 30, message="a retry after the reboot")
    assert again["retry"] == {"attempt": 1, "of": 2}  # a first try: retry 1 of 2 again
    (retried,) = journal(ns, f"RUN_ID={run_id}", "SUPERVISOR_EVENT=run_retry")
    assert retried["SUPERVISOR_ATTEMPT"] == "0"

    cli.run("uninstall-units")
    assert ns.show(f"{stem}:retry.timer", "LoadState")["LoadState"] == "not-found"
    assert _pause_files(ns) == [] and not dropin.exists()
