"""Smoke test of the namespaced systemd used by the systemd-mode tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.required import skip_or_fail
from tests.systemd_ns import NamespacedSystemd, systemd_namespace, unavailable_reason

__all__ = ["systemd_namespace"]  # the fixture, used below by name

pytestmark = pytest.mark.systemd

HELLO_SERVICE = """\
[Unit]
Description=Smoke test of the namespaced systemd
StartLimitIntervalSec=0

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo hello-from-the-namespace; echo "$$" > {shared}/pid'
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={shared}
LogExtraFields=SCHEDULER_ID=smoke.test
"""


def test_boots_runs_a_unit_logs_it_and_leaves_nothing_behind(tmp_path: Path) -> None:
    skip_or_fail("systemd", unavailable_reason())
    marker = tmp_path / "host-marker"  # pytest's tmp_path lives under the host's /tmp
    marker.write_text("must survive")
    dev_log_existed = os.path.lexists("/dev/log")

    ns = NamespacedSystemd.boot()
    try:
        assert ns.failed_at_boot == []
        # Nothing but journald runs at boot: no udev coldplug, sysctl, tmpfiles, ...
        services = ns.systemctl("list-units", "--type=service", "--plain", "--no-legend")
        active = {line.split()[0] for line in services.stdout.splitlines() if line}
        assert active == {"systemd-journald.service", "systemd-journal-flush.service"}
        assert ns.systemctl("is-active", "sched-test.target").stdout.strip() == "active"
        ns.write_unit("smoke.service", HELLO_SERVICE.format(shared=ns.shared_dir))
        ns.daemon_reload()
        started = ns.systemctl("start", "smoke.service")
        assert started.returncode == 0, started.stderr
        assert (ns.shared_dir / "pid").read_text().strip()  # wrote through ReadWritePaths

        def logged() -> list[dict[str, object]]:
            out = ns.journalctl("-o", "json", "SCHEDULER_ID=smoke.test").stdout
            records = [json.loads(line) for line in out.splitlines()]
            return [r for r in records if r.get("MESSAGE") == "hello-from-the-namespace"]

        (record,) = ns.wait_until(logged, 10, message="the unit's output in the journal")
        assert record["_SYSTEMD_UNIT"] == "smoke.service"
        assert ns.show("smoke.service", "Result")["Result"] == "success"
        # The namespace's /tmp is its own; the host's is untouched.
        assert not ns.inside(marker).exists()
        assert marker.read_text() == "must survive"
        assert ns.pid in ns.processes()  # with journald, at least
    finally:
        ns.stop()

    assert marker.read_text() == "must survive"
    assert ns.processes() == []
    assert not ns.cgroup.exists()
    assert not ns.root.exists()
    assert os.path.lexists("/dev/log") == dev_log_existed


def test_fixture_gives_a_running_systemd(systemd_namespace: NamespacedSystemd) -> None:
    state = systemd_namespace.systemctl("is-system-running").stdout.strip()
    assert state == "running"
    assert systemd_namespace.inside("/run/systemd/system/sched-test.target").exists()
