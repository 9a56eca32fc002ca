"""The read commands with no manager running: they read a real ``state.db`` that a real
manager left (cleanly, or killed with SIGKILL), say so on stderr, and change nothing on
disk; a corrupt or missing database is a clear one-line error."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.core.errors import StoreError
from supervisor.core.records import LogQuery
from supervisor.store.sqlite.readonly import open_read_only
from tests.commands import supervisor
from tests.manager_process import ROOT, run_to_its_end, running_manager
from tests.waiting import wait_for

APP = "tests.apps.cli_jobs:cfg"


def snapshot(state: Path) -> dict[str, tuple[str, float]]:
    """Every file of the state directory with its content hash and mtime."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(state.iterdir())
        if p.is_file()
    }


def run_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        supervisor(*args, "--state-dir", str(state)),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="module")
def left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state directory whose manager ran one failing run and then stopped."""
    state = tmp_path_factory.mktemp("cli-offline") / "state"
    with running_manager(state, APP):
        run_to_its_end(state, "c.report")  # (a failing run)
    yield state


def test_read_commands_read_the_database_and_say_so(left_behind: Path) -> None:
    before = snapshot(left_behind)
    notice = f"no manager is running; read from state.db at {left_behind / 'state.db'}\n"
    listed = run_cli(left_behind, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == notice
    report = next(line for line in listed.stdout.splitlines() if line.startswith("c.report "))
    assert " failed " in report and report.endswith("RuntimeError: the report server is down")
    status = run_cli(left_behind, "status", "c.report")
    assert status.returncode == 0 and status.stderr == notice
    assert "                second line of the reason" in status.stdout
    assert "line 14" in status.stdout  # its log tail, from the file
    runs = run_cli(left_behind, "runs", "c.report", "--json")
    assert runs.stderr == notice  # stdout stays pure JSON
    assert [r["outcome"] for r in json.loads(runs.stdout)] == ["failed"]
    logs = run_cli(left_behind, "logs", "c.report")
    assert logs.returncode == 0 and logs.stderr == notice
    assert "line 0" in logs.stdout and "run failed: RuntimeError" in logs.stdout
    # Nothing written, nothing created: not the database, not a -wal or -shm beside it.
    assert snapshot(left_behind) == before


def test_unknown_ids_and_controls_without_a_manager(left_behind: Path) -> None:
    before = snapshot(left_behind)
    typo = run_cli(left_behind, "status", "c.reprot")
    assert typo.returncode == 3
    assert typo.stderr.splitlines()[-1] == (
        "error: no scheduler with id 'c.reprot' (did you mean c.report?)"
    )
    control = run_cli(left_behind, "execute", "c.report")
    assert control.returncode == 8
    assert control.stderr.count("\n") == 1 and "no manager is running" in control.stderr
    assert snapshot(left_behind) == before


def test_a_killed_managers_last_changes_are_read_without_writing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = subprocess.Popen(
        supervisor("run", "--app", APP, "--state-dir", str(state), "--no-admin"),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (state / "control.sock").exists(), timeout=30, what="the manager")
        run_to_its_end(state, "c.report")  # (a failing run)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert (state / "state.db-wal").exists() and (state / "state.db-shm").exists()
    before = snapshot(state)
    runs = run_cli(state, "runs", "c.report", "--json")
    assert runs.returncode == 0, runs.stderr
    assert [r["outcome"] for r in json.loads(runs.stdout)] == ["failed"]
    assert snapshot(state) == before  # db, -wal and -shm: same bytes, same times


def test_a_killed_writers_log_is_read_and_no_file_is_touched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    writer = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from supervisor.store.sqlite import SqliteStore\n"
        "from tests.store_values import make_run, record\n"
        "s = SqliteStore.open(Path(sys.argv[1]))\n"
        's.insert_run(make_run("a"))\n'
        's.append_logs([record("a", "last words")])\n'
        "os._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", writer, str(state / "state.db")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert sorted(snapshot(state)) == ["state.db", "state.db-shm", "state.db-wal"]
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    hashes = snapshot(state)
    opened = open_read_only(state / "state.db")
    try:
        assert not opened.partial
        found = opened.store.logs(LogQuery(scheduler_id=None))
        assert [r.message for _, r in found] == ["last words"]
    finally:
        opened.store.close()
    assert snapshot(state) == hashes
    assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before


def test_a_corrupt_database_is_a_clear_error_and_left_as_it_was(
    left_behind: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(left_behind, state)
    garbage = b"not a database at all\n" * 200
    (state / "state.db").write_bytes(garbage)
    result = run_cli(state, "list")
    assert result.returncode == 7
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot use state database {state / 'state.db'}")
    assert (state / "state.db").read_bytes() == garbage
    assert sorted(p.name for p in state.iterdir()) == sorted(p.name for p in left_behind.iterdir())


def test_no_manager_and_no_database_says_both(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "status", "c.report")
    assert result.returncode == 8
    assert result.stderr.count("\n") == 1
    assert "no manager is running" in result.stderr and "no state database" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_open_read_only_refuses_writes_and_foreign_files(left_behind: Path, tmp_path: Path) -> None:
    opened = open_read_only(left_behind / "state.db")
    try:
        assert not opened.partial
        assert opened.store.runs("c.report", limit=5)
        with pytest.raises(StoreError, match="read-only"):
            opened.store.set_meta("x", "y")
    finally:
        opened.store.close()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a sched-supervisor database"):
        open_read_only(other)
    with pytest.raises(StoreError, match="no state database"):
        open_read_only(tmp_path / "missing.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_app_names_the_schedulers_when_the_database_is_read(left_behind: Path) -> None:
    # Where the recorded app may not be imported (root reading the service's directory),
    # --app says which one names the schedulers.
    result = run_cli(left_behind, "list", "--json", "--app", "tests.apps.manager_jobs:cfg")
    assert result.returncode == 0, result.stderr
    assert "m.cron" in [s["id"] for s in json.loads(result.stdout)]
    report = run_cli(left_behind, "runs", "c.report", "--app", APP, "--json")
    assert [r["outcome"] for r in json.loads(report.stdout)] == ["failed"]


def test_a_version_3_database_is_read_unmigrated(left_behind: Path, tmp_path: Path) -> None:
    """Versions 4 and 5 only added the logins' credentials stamp and its triggers, which
    the read commands never read: a manager of the versions before leaves a file they read
    as it is; older ones are refused with what to do."""
    state = tmp_path / "state"
    shutil.copytree(left_behind, state)
    conn = sqlite3.connect(state / "state.db")
    for trigger in ("users_new_stamp", "users_stamp_kept", "users_first_stamp"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("ALTER TABLE users DROP COLUMN keep_stamp")
    conn.execute("ALTER TABLE users DROP COLUMN stamp")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    before = snapshot(state)
    result = run_cli(state, "runs", "c.report", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["outcome"] for r in json.loads(result.stdout)] == ["failed"]
    assert snapshot(state) == before
    conn = sqlite3.connect(state / "state.db")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    result = run_cli(state, "runs", "c.report")
    assert result.returncode != 0
    assert "older schema (version 2): start the manager once to migrate it" in result.stderr
