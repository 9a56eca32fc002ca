"""A manager on SQLite whose store cannot be written: a real manager process on a real
``state.db`` that fills its (small, real) file system or that another process locks with
``BEGIN EXCLUSIVE``. ``supervisor status``, ``list`` and their ``--json`` name the problem,
since when and what is kept; runs go on; once the store works again the line goes, the
kept log records are stored and the history stored before is intact."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from tests.commands import supervisor
from tests.fullfs import SmallFilesystem, small_filesystem
from tests.manager_process import LoggedManager, cli
from tests.waiting import end_process, wait_for

__all__ = ["small_filesystem"]

APP = "tests.apps.store_fault_jobs:cfg"


def started(state: Path, log: Path) -> LoggedManager:
    """``supervisor run`` on ``state``, its stderr in ``log``."""
    return LoggedManager(
        supervisor("run", "--app", APP, "--state-dir", str(state), "--no-admin"), state, log
    )


@pytest.fixture
def manager_on(tmp_path: Path) -> Iterator[list[LoggedManager]]:
    managers: list[LoggedManager] = []
    yield managers
    for manager in managers:
        if manager.process.poll() is None:
            end_process(manager.process)


def store_field(state: Path) -> dict[str, Any] | None:
    status: dict[str, Any] = json.loads(cli(state, "status", "f.tick", "--json"))
    return status.get("store")


def store_line(state: Path, *args: str) -> str | None:
    found = re.search(r"^store:\s+(.+)$", cli(state, *args), re.MULTILINE)
    return None if found is None else found.group(1)


def runs(state: Path, scheduler_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(cli(state, "runs", scheduler_id, "--json"))
    return listed


def finished_runs(state: Path) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in runs(state, "f.tick") if r["outcome"] is not None}


def long_numbers(state: Path, run_id: str) -> list[int]:
    lines = cli(state, "logs", "f.long", "--run", run_id, "--json").splitlines()
    return [
        int(record["fields"]["n"])
        for record in map(json.loads, lines)
        if record["message"] == "still going"
    ]


def outage_then_recovery(
    state: Path, manager: LoggedManager, *, problem: str, words: str, begin: Any, end: Any
) -> None:
    """The outage ``begin()`` makes is shown as ``problem``, then gone after ``end()``;
    the long run goes on through it and every one of its log records is stored."""
    wait_for(lambda: len(finished_runs(state)) >= 3, timeout=30, what="runs stored")
    long_id = json.loads(cli(state, "execute", "f.long", "--json"))["run_id"]
    wait_for(lambda: long_numbers(state, long_id), timeout=30, what="the long run's logs")
    before = finished_runs(state)
    begin()
    field = wait_for(lambda: store_field(state), timeout=60, what=f"the {problem} shown")
    assert field["state"] == problem, field
    assert field["since"] and field["seconds"] >= 0
    assert "state.db" in field["reason"]
    line = store_line(state, "status", "f.tick")
    assert line is not None and line.startswith(f"{words} since "), line
    listed = json.loads(cli(state, "list", "--json"))
    assert all(s["store"]["state"] == problem for s in listed), listed
    assert (store_line(state, "list") or "").startswith(f"{words} since ")
    # The long run goes on, its records kept meanwhile.
    wait_for(
        lambda: (store_field(state) or {}).get("kept_log_records", 0) >= 5,
        timeout=30,
        what="log records kept in memory",
    )
    status = json.loads(cli(state, "status", "f.long", "--json"))
    assert status["state"] == "running" and status["current_run_id"] == long_id, status
    end()
    wait_for(lambda: store_field(state) is None, timeout=60, what="the store line gone")
    assert store_line(state, "status", "f.tick") is None
    assert store_line(state, "list") is None
    cli(state, "stop", "f.long")
    wait_for(
        lambda: any(r["outcome"] == "cancelled" for r in runs(state, "f.long")),
        timeout=30,
        what="the long run's end stored",
    )
    after = finished_runs(state)
    assert all(after.get(run_id) == run for run_id, run in before.items()), (before, after)
    numbers = long_numbers(state, long_id)
    assert numbers == list(range(1, len(numbers) + 1)), numbers  # none lost, in order
    assert len(numbers) > 20
    assert manager.process.poll() is None, manager.log()
    assert f"warning: store: {words} since " in manager.log()
    wait_for(  # the manager's once-a-second look says it too
        lambda: "store: writes work again after " in manager.log(),
        timeout=10,
        what="the recovery in the manager's log",
    )
    manager.stop()


def test_a_full_disk_is_shown_until_space_returns_and_no_log_record_is_lost(
    small_filesystem: SmallFilesystem, tmp_path: Path, manager_on: list[LoggedManager]
) -> None:
    state = small_filesystem.root / "state"
    manager = started(state, tmp_path / "manager.log")
    manager_on.append(manager)
    outage_then_recovery(
        state,
        manager,
        problem="disk_full",
        words="disk full",
        begin=small_filesystem.fill,
        end=small_filesystem.free,
    )


def test_a_database_locked_by_another_process_is_shown_until_it_lets_go(
    tmp_path: Path, manager_on: list[LoggedManager]
) -> None:
    state = tmp_path / "state"
    manager = started(state, tmp_path / "manager.log")
    manager_on.append(manager)
    holder: list[subprocess.Popen[str]] = []
    script = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(state / 'state.db')!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\nsys.stdin.read()\n"
    )

    def lock() -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        holder.append(process)
        assert process.stdout is not None and process.stdout.readline() == "held\n"

    def release() -> None:
        holder[0].communicate(timeout=30)  # its stdin closed: it exits, letting go
        assert holder[0].returncode == 0

    try:
        outage_then_recovery(
            state,
            manager,
            problem="locked",
            words="locked by another process",
            begin=lock,
            end=release,
        )
    finally:
        for process in holder:
            if process.poll() is None:
                process.kill()
            process.communicate()  # reaped, its pipes closed
    with contextlib.closing(sqlite3.connect(state / "state.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_journal_that_became_read_only_is_shown_until_it_is_writable_again(
    tmp_path: Path, manager_on: list[LoggedManager]
) -> None:
    """``chattr +i`` on ``state.db-wal`` (root may write any mode, not an immutable file):
    SQLite says "disk I/O error"; the manager finds the file it cannot write."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    state = tmp_path / "state"
    manager = started(state, tmp_path / "manager.log")
    manager_on.append(manager)
    wal = state / "state.db-wal"

    def immutable(flag: str) -> None:
        result = subprocess.run(["chattr", flag, str(wal)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr {flag} does not work here: {result.stderr.strip()}")

    try:
        outage_then_recovery(
            state,
            manager,
            problem="read_only",
            words="read-only",
            begin=lambda: immutable("+i"),
            end=lambda: immutable("-i"),
        )
    finally:
        subprocess.run(["chattr", "-i", str(wal)], capture_output=True, check=False)


def test_a_corrupt_state_db_is_shown_and_the_runs_go_on(
    tmp_path: Path, manager_on: list[LoggedManager]
) -> None:
    """Another process checkpoints the WAL into ``state.db`` and overwrites every page
    after the first: the manager's next writes meet the damage. It is not repaired (the
    file is no longer trustworthy), but it is named, and the run in progress goes on."""
    state = tmp_path / "state"
    manager = started(state, tmp_path / "manager.log")
    manager_on.append(manager)
    wait_for(lambda: len(finished_runs(state)) >= 2, timeout=30, what="runs stored")
    long_id = json.loads(cli(state, "execute", "f.long", "--json"))["run_id"]
    db = state / "state.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\x55" * (len(data) - page)
    db.write_bytes(bytes(data))
    field = wait_for(lambda: store_field(state), timeout=60, what="the damage shown")
    assert field["state"] == "corrupt", field
    assert "malformed" in field["reason"]
    assert (store_line(state, "list") or "").startswith("corrupt since ")
    status = json.loads(cli(state, "status", "f.long", "--json"))
    assert status["state"] == "running" and status["current_run_id"] == long_id, status
    assert manager.process.poll() is None, manager.log()
    wait_for(
        lambda: "warning: store: corrupt since " in manager.log(),
        timeout=10,
        what="the damage in the manager's log",
    )
    # Regression: the stop was refused ("stop not done: the audit trail cannot be
    # written"): an operator could not stop a scheduler while the store was corrupt.
    done = CliRunner().invoke(
        main, ["stop", "f.long", "--reason", "store damaged", "--state-dir", str(state)]
    )
    assert done.exit_code == 0, done.output
    # Click 8.1 (Debian 12) mixes stderr into ``stdout`` (``stderr`` is not kept apart);
    # newer Click keeps them apart.
    said, warned = done.stdout, done.stderr_bytes
    if warned is None:
        said, _, warned_text = said.partition("\n")
        said, warned = said + "\n", warned_text.encode()
    assert said == "stopped f.long: store damaged\n", done.output
    warned = warned.decode()
    assert "warning: the audit entry could not be written" in warned and "malformed" in warned
    assert "kept in memory" in warned
    wait_for(
        lambda: json.loads(cli(state, "status", "f.long", "--json"))["current_run_id"] is None,
        timeout=30,
        what="the long run stopped",
    )
    assert json.loads(cli(state, "status", "f.long", "--json"))["state"] == "stopped"
    wait_for(  # the entry's own record, should the store never take it
        lambda: "audit entry kept in memory until the store takes writes again" in manager.log(),
        timeout=10,
        what="the kept audit entry in the manager's log",
    )
    assert "store damaged" in manager.log()
    # The notification watcher cannot read the runs meanwhile: said once, not every look.
    # (tests/test_notify_outage.py pins the back-off over many looks, on an injected clock.)
    watcher_lines = [line for line in manager.log().splitlines() if "notification watcher" in line]
    assert len(watcher_lines) <= 1, watcher_lines
    assert all("cannot look at the schedulers" in line for line in watcher_lines), watcher_lines
    # Regression: at shutdown nothing said which kept entries were never written (the
    # manager's close did not try them): now one attempt, and each one it cannot write.
    manager.process.send_signal(signal.SIGTERM)
    assert manager.process.wait(timeout=60) == 0, manager.log()
    said_at_exit = manager.log().split("shutting down", 1)[-1]
    assert "1 audit entry kept in memory could not be written" in said_at_exit, said_at_exit
    assert "audit entry not written: stop by " in said_at_exit and "store damaged" in said_at_exit
