"""systemd mode end to end, against a real systemd booted in a private namespace.

generate → install → timers fire → journald records carry SCHEDULER_ID, RUN_ID, PRIORITY
and the structured fields → stop / start / execute / settings rewrite / reset through the
CLI → uninstall leaves nothing. The CLI runs inside the namespace (``nsenter``) with the
venv's interpreter and the repository on ``PYTHONPATH``, as an operator would run it.
Shared files live in the namespace's shared directory (under ``/var/lib``, not a tmp dir:
the units have ``PrivateTmp=``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.cfgscheduler import enable
from supervisor.core.app import load_app
from supervisor.service.systemd_mode import unit_layout
from supervisor.systemd.backend import UnitLayout
from supervisor.systemd.journal import parse_json_lines
from supervisor.systemd.units import SETTINGS_DROPIN_NAME
from tests.apps.systemd_jobs import BIG_FIELD_CHARS, HOLD_FILE
from tests.systemd_ns import NamespacedSystemd, systemd_namespace

__all__ = ["systemd_namespace"]

REPO_UNDER_TMP = str(Path(__file__).resolve()).startswith(("/tmp/", "/var/tmp/"))
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(
        REPO_UNDER_TMP,
        reason="the checkout is under /tmp or /var/tmp, which the test systemd and units "
        "with PrivateTmp=yes cannot see; run from elsewhere (.ci/run copies it)",
    ),
]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
APP = "tests.apps.systemd_jobs:cfg"


def _require_wiring() -> None:
    """The units run ``python -m supervisor exec``: the main CLI must have the commands."""
    from supervisor.cli.main import main

    missing = {"exec", "generate-units", "install-units", "uninstall-units"} - set(main.commands)
    assert not missing, (
        f"supervisor.cli.main lacks {sorted(missing)}: cli.py must call "
        "supervisor.cli.systemd.register(main) and pick its client with open_client()"
    )


class Cli:
    """The ``supervisor`` command, run inside the namespace."""

    def __init__(self, ns: NamespacedSystemd, state_dir: Path) -> None:
        self.ns = ns
        self.state_dir = state_dir
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(REPO),
            "SUPERVISOR_STATE_DIR": str(state_dir),
            "LANG": "C.UTF-8",
        }
        self.module = "supervisor"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.ns.run([PYTHON, "-m", self.module, *args], env=self.env, cwd=REPO, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(
                f"supervisor {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
            )
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        out = self.run(*args, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def journal(ns: NamespacedSystemd, *matches: str) -> list[dict[str, str]]:
    return parse_json_lines(ns.journalctl("-o", "json", "--all", *matches).stdout)


@pytest.fixture
def layout() -> UnitLayout:
    return unit_layout(load_app(APP), manifest=None)


def test_systemd_mode_end_to_end(systemd_namespace: NamespacedSystemd, layout: UnitLayout) -> None:
    _require_wiring()
    ns = systemd_namespace
    state_dir = ns.shared_dir / "state"
    cli = Cli(ns, state_dir)
    registry = enable(load_app(APP)).registry
    service = {o.id: layout.service_name(o) for o in registry}
    timer = {o.id: layout.timer_name(o) for o in registry}
    start_timer = {o.id: layout.start_timer_name(o) for o in registry}
    assert timer["sd.manual"] is None and timer["sd.tick"] is not None
    assert start_timer["sd.cron"] is None
    tick_start = str(start_timer["sd.tick"])

    # -- generate ------------------------------------------------------------------------
    generated = ns.shared_dir / "generated"
    cli.run("generate-units", "--app", APP, "--output-dir", str(generated))
    names = sorted(p.name for p in generated.iterdir())
    assert {service["sd.tick"], str(timer["sd.tick"]), tick_start} <= set(names)
    assert str(timer["sd.cron"]) in names
    assert all(o.id not in ns.systemctl("list-units", "--all").stdout for o in registry)

    # -- install: timers start and fire ------------------------------------------------
    installed = cli.run("install-units", "--app", APP)
    assert "/etc/systemd/system" in installed.stdout
    manifest = json.loads((state_dir / "systemd-units.json").read_text())
    assert sorted(manifest["units"]) == sorted(
        [*service.values(), *(t for t in [*timer.values(), *start_timer.values()] if t)]
    )
    for unit in manifest["units"]:
        assert (ns.etc_units_dir / unit).exists()
    for unit in (str(timer["sd.tick"]), tick_start):
        assert ns.systemctl("is-active", unit).stdout.strip() == "active"
        assert ns.systemctl("is-enabled", unit).stdout.strip() == "enabled"

    def tick_records() -> list[dict[str, str]]:
        found = journal(ns, "SCHEDULER_ID=sd.tick", "F_WHO=world")
        return found if len(found) >= 2 else []

    first, second = ns.wait_until(tick_records, 30, message="two runs of sd.tick")[:2]
    assert first["RUN_ID"] != second["RUN_ID"]
    for record in (first, second):
        assert record["RUN_ID"] == record["_SYSTEMD_INVOCATION_ID"]
        assert record["PRIORITY"] == "6"
        assert record["F_N"] == "42"
        assert record["F_NOTE"] == "first line\nsecond line"
        assert record["_SYSTEMD_UNIT"] == service["sd.tick"]
    run_id = first["RUN_ID"]
    from_run = journal(ns, "SCHEDULER_ID=sd.tick", f"_SYSTEMD_INVOCATION_ID={run_id}")
    by_message = {r.get("MESSAGE"): r for r in from_run}
    assert by_message["from stdlib logging"]["F_COLOUR"] == "blue"
    assert by_message["from stdlib logging"]["PRIORITY"] == "4"
    assert by_message["plain stdout line"]["PRIORITY"] == "6"
    assert by_message["plain stderr line"]["PRIORITY"] == "4"

    def cron_runs() -> list[float]:
        found = journal(ns, "SCHEDULER_ID=sd.cron", "MESSAGE=cron fired")
        times = sorted(float(r["F_ENTERED"]) for r in found)
        return times if len(times) >= 2 else []

    cron_times = ns.wait_until(cron_runs, 30, message="two runs of the 6-field cron")
    assert all(t % 3 < 1.5 for t in cron_times)  # on whole multiples of 3 s (plus startup)
    assert cron_times[1] - cron_times[0] == pytest.approx(3, abs=1.0)

    # -- reading through the CLI ---------------------------------------------------------
    listed = {s["id"]: s for s in cli.json("list")}
    assert listed["sd.manual"]["state"] == "paused"
    assert listed["sd.tick"]["state"] in ("paused", "running")
    assert listed["sd.tick"]["last_outcome"] == "succeeded"
    logs = cli.json_lines("logs", "sd.tick", "--run", run_id)
    ticks = [r for r in logs if r["message"] == "tick"]
    assert ticks and ticks[0]["fields"]["n"] == 42
    assert ticks[0]["fields"]["nested"] == {"a": [1, 2]}
    assert ticks[0]["run_id"] == run_id
    sources = {r["message"]: r["source"] for r in logs}
    assert sources["plain stdout line"] == "stdout"
    assert sources["plain stderr line"] == "stderr"
    assert sources["tick"] == "logger"
    runs = cli.json("runs", "sd.tick")
    assert runs[-1]["outcome"] == "succeeded" and runs[-1]["trigger"] == "schedule"
    units = cli.json("status", "sd.tick")["units"]
    assert units["kind"] == "persistent"
    assert units["timer"] == f"/etc/systemd/system/{timer['sd.tick']}"
    assert units["start_timer"] == f"/etc/systemd/system/{tick_start}"
    assert cli.run("action", "sd.manual", "ping").stdout.strip() == "pong"

    # -- stop / start ---------------------------------------------------------------------
    cli.run("stop", "sd.tick")
    assert cli.json("status", "sd.tick")["state"] == "stopped"
    for unit in (str(timer["sd.tick"]), tick_start):
        assert ns.systemctl("is-active", unit).stdout.strip() == "inactive"
    before = len(cli.json("runs", "sd.tick", "--limit", "1000"))
    cli.run("start", "sd.tick")
    ns.wait_until(
        lambda: len(cli.json("runs", "sd.tick", "--limit", "1000")) > before,
        30,
        message="a run after start",
    )

    # -- execute: refused while running; stop cancels --------------------------------------
    hold = ns.inside(str(HOLD_FILE))
    hold.write_text("hold")
    executed = cli.json("execute", "sd.manual")
    manual_run = executed["run_id"]
    status = ns.wait_until(
        lambda: (s := cli.json("status", "sd.manual"))["state"] == "running" and s,
        10,
        message="sd.manual running",
    )
    assert status["current_run_id"] == manual_run
    assert status["current_pid"] > 0  # the service's main process (MainPID)
    again = cli.run("execute", "sd.manual", check=False)
    assert again.returncode == 4
    assert manual_run in again.stderr

    def manual_logged() -> list[dict[str, Any]]:
        found = cli.json_lines("logs", "sd.manual", "--run", manual_run)
        return [r for r in found if r["message"] == "manual run"]

    (manual_record,) = ns.wait_until(manual_logged, 20, message="the manual run's record")
    assert len(manual_record["fields"]["blob4"]) == BIG_FIELD_CHARS  # a memfd entry, whole
    assert manual_record["fields"]["trigger"] == "manual"
    cli.run("stop", "sd.manual")
    assert cli.json("status", "sd.manual")["state"] == "stopped"
    (manual,) = [r for r in cli.json("runs", "sd.manual") if r["run_id"] == manual_run]
    assert manual["outcome"] == "cancelled"
    assert manual["trigger"] == "manual" and manual["triggered_by"] == "root"
    cli.run("start", "sd.manual")
    assert cli.json("status", "sd.manual")["state"] == "paused"
    hold.unlink()

    # -- outcomes: failed, and a command runner's exit status -----------------------------
    failed_run = cli.json("execute", "sd.fail")["run_id"]
    command_run = cli.json("execute", "sd.command")["run_id"]

    def finished(scheduler_id: str, wanted: str) -> dict[str, Any] | None:
        for run in cli.json("runs", scheduler_id):
            if run["run_id"] == wanted and run["outcome"] is not None:
                return dict(run)
        return None

    failed = ns.wait_until(lambda: finished("sd.fail", failed_run), 20, message="sd.fail done")
    assert failed["outcome"] == "failed"
    assert failed["error"] == "nothing to do today"
    assert failed["exit_code"] == 1
    assert cli.json("status", "sd.fail")["last_error"] == "nothing to do today"
    command_failed = ns.wait_until(
        lambda: finished("sd.command", command_run), 20, message="sd.command done"
    )
    assert (command_failed["outcome"], command_failed["exit_code"]) == ("failed", 3)
    assert command_failed["error"] == "exit code 3"
    assert cli.json("status", "sd.command")["last_error"] == "exit code 3"
    command_logs = cli.json_lines("logs", "sd.command", "--run", command_run)
    assert any(r["message"] == "from-command" for r in command_logs)

    # -- settings: a drop-in restating the triggers; reset removes it ---------------------
    # The start timer has fired since `start`: a settings change (its reload) must neither
    # restart nor re-arm it, or sd.tick would run once more (systemd issue 31914).
    ns.wait_until(
        lambda: ns.show(tick_start, "SubState")["SubState"] == "elapsed", 10, message="elapsed"
    )
    fired = ns.show(tick_start, "LastTriggerUSec")["LastTriggerUSec"]
    view = cli.json("settings", "sd.tick", "--pause-time", "7s")
    assert view["effective"]["pause_time"] == 7 and view["overridden"] == ["pause_time"]
    tick_timer = str(timer["sd.tick"])
    dropins = ns.systemctl("show", "-p", "DropInPaths", "--value", tick_timer).stdout.split()
    assert dropins and all(p.startswith(f"/etc/systemd/system/{tick_timer}.d/") for p in dropins)
    timers = ns.systemctl("show", "-p", "TimersMonotonic", "--value", tick_timer).stdout
    assert "OnUnitInactiveUSec" in timers and "7s" in timers
    assert ns.systemctl("is-active", tick_timer).stdout.strip() == "active"
    assert ns.show(tick_start, "SubState", "LastTriggerUSec") == {
        "SubState": "elapsed",
        "LastTriggerUSec": fired,
    }
    start_dropins = ns.show(tick_start, "DropInPaths")["DropInPaths"].split()
    assert start_dropins == [f"/etc/systemd/system/{tick_start}.d/{SETTINGS_DROPIN_NAME}"]
    assert cli.json("settings", "sd.tick")["overridden"] == ["pause_time"]

    cron_timer = str(timer["sd.cron"])
    cli.run("settings", "sd.cron", "--cron", "*/4 * * * * *")
    calendar = ns.systemctl("show", "-p", "TimersCalendar", "--value", cron_timer).stdout
    assert "/4 " in calendar and "/3 " not in calendar

    cli.run("settings", "sd.tick", "--disable")
    assert cli.json("status", "sd.tick")["state"] == "disabled"
    for unit in (tick_timer, tick_start):
        assert ns.systemctl("is-active", unit).stdout.strip() == "inactive"
        assert ns.systemctl("is-enabled", unit).stdout.strip() == "disabled"
    cli.run("settings", "sd.tick", "--reset")
    cli.run("settings", "sd.cron", "--reset")
    assert cli.json("settings", "sd.tick")["overridden"] == []
    for unit in (tick_timer, tick_start):
        assert ns.systemctl("show", "-p", "DropInPaths", "--value", unit).stdout.strip() == ""
        assert ns.systemctl("is-active", unit).stdout.strip() == "active"
        assert ns.systemctl("is-enabled", unit).stdout.strip() == "enabled"
    calendar = ns.systemctl("show", "-p", "TimersCalendar", "--value", cron_timer).stdout
    assert "/3 " in calendar

    # -- uninstall leaves nothing ---------------------------------------------------------
    cli.run("uninstall-units")
    assert not (state_dir / "systemd-units.json").exists()
    assert sorted(p.name for p in ns.etc_units_dir.rglob("*")) == []
    leftovers = ns.systemctl("list-units", "--all", "--plain", "--no-legend").stdout
    assert not any(unit in leftovers for unit in manifest["units"])
    files = ns.systemctl("list-unit-files", "--plain", "--no-legend").stdout
    assert not any(unit in files for unit in manifest["units"])


def test_runtime_install_says_so_and_etc_wins(
    systemd_namespace: NamespacedSystemd, layout: UnitLayout
) -> None:
    _require_wiring()
    ns = systemd_namespace
    cli = Cli(ns, ns.shared_dir / "state")
    registry = enable(load_app(APP)).registry
    tick, manual = registry.get("sd.tick"), registry.get("sd.manual")
    tick_service, manual_service = layout.service_name(tick), layout.service_name(manual)
    generated = ns.shared_dir / "generated"
    cli.run("generate-units", "--app", APP, "--output-dir", str(generated))
    mine = ns.etc_units_dir / manual_service  # an operator's own copy in /etc
    mine.write_text((generated / manual_service).read_text())

    done = cli.run("install-units", "--app", APP, "--runtime")
    assert "runtime: gone after a reboot" in done.stdout
    assert f"{mine.name} exists and wins over /run/systemd/system" in done.stderr
    assert ns.inside(f"/run/systemd/system/{tick_service}").exists()
    assert not (ns.etc_units_dir / tick_service).exists()
    assert cli.json("status", "sd.tick")["units"]["kind"] == "runtime"
    assert cli.json("status", "sd.manual")["units"] == {
        "kind": "persistent",
        "service": f"/etc/systemd/system/{manual_service}",
        "timer": None,
        "start_timer": None,
    }
    for unit in (layout.timer_name(tick), layout.start_timer_name(tick)):
        assert ns.systemctl("is-enabled", str(unit)).stdout.strip() == "enabled-runtime"

    cli.run("uninstall-units")
    assert not ns.inside(f"/run/systemd/system/{tick_service}").exists()
    assert mine.exists()  # not installed by us: left alone
