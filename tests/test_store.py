"""What only the SQLite store does, against real files in tmp_path: creating, checking and
refusing files, WAL and pragmas, migrations, index use, restarts, crashes, several
processes, and a full file system. The behaviour every store shares is in
test_store_contract.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import supervisor
from supervisor.core.errors import StoreError, SupervisorError, UnknownRun
from supervisor.core.records import (
    Level,
    LogQuery,
    Outcome,
)
from supervisor.store.protocols import Changed, LostLogs, UserChange, new_stamp
from supervisor.store.sqlite import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    SqliteStore,
    state_db_path,
)
from supervisor.store.sqlite.logs import SCHEDULERS_WITH_LOGS, RunRange, log_query
from tests.fullfs import SmallFilesystem, small_filesystem

__all__ = ["small_filesystem"]

from tests.store_values import (
    T0,
    delete_the_newest_record,
    finish,
    make_run,
    record,
    run_six_and_one_other,
)

REPO = Path(supervisor.__file__).resolve().parent.parent


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return state_db_path(tmp_path / "state")


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(db_path) as opened:
        yield opened


def messages(store: SqliteStore, scheduler_id: str = "demo.job", **query: Any) -> list[str]:
    return [r.message for _, r in store.logs(LogQuery(scheduler_id=scheduler_id, **query))]


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection for looking at (or forging) a database from outside the store."""
    return sqlite3.connect(path, isolation_level=None)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


# -- opening, creating, refusing ----------------------------------------------------------


def test_new_database_has_our_header_wal_and_private_mode(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        assert store.path == db_path
        conn = raw(db_path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()
    assert db_path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["state.db"]


def test_connections_use_synchronous_normal_and_a_busy_timeout(store: SqliteStore) -> None:
    with store._db.read() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with store._db.write() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_data_written_before_close_is_there_after_reopen(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "kept")])
        store.set_meta("k", "v")
    with SqliteStore.open(db_path) as store:
        assert store.get_run("r1").run_id == "r1"
        assert [r.message for _, r in store.logs(LogQuery(scheduler_id="demo.job"))] == ["kept"]
        assert store.get_meta("k") == "v"


def test_version_zero_database_of_ours_is_migrated(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    with SqliteStore.open(db_path) as store:
        store.set_meta("k", "v")
        assert store.get_meta("k") == "v"
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_version_one_database_is_migrated_and_keeps_its_cut_logs(db_path: Path) -> None:
    """Version 2 keeps "cut at the cap" apart from "dropped" (lost records count too)."""
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (run_id, scheduler_id, trigger, started_at, log_records, log_bytes,"
        " dropped_records, dropped_bytes, first_log_id, last_log_id)"
        " VALUES ('cut', 'demo.job', 'manual', ?, 1, 10, 5, 50, 1, 1)",
        (T0.isoformat(timespec="microseconds"),),
    )
    conn.execute(
        "INSERT INTO logs (id, scheduler_id, run_seq, time, level, source, message)"
        " VALUES (1, 'demo.job', 1, 0, 30, 'logger', 'log truncated')"
    )
    conn.close()
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        assert store.get_run("cut").log_truncated is True
        store.append_logs([record("cut", "after the cut")])  # still dropped: the log was cut
        assert store.log_stats("cut").dropped_records == 6
        assert store.count_logs("cut") == 1
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def version_3_database(db_path: Path) -> sqlite3.Connection:
    """A version-3 file, as the previous release left it (written by its own statements),
    and a plain connection to it."""
    db_path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    conn = raw(db_path)
    for step in MIGRATIONS[:3]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 3")
    return conn


def test_a_version_3_database_keeps_its_users_and_gives_each_a_stamp(db_path: Path) -> None:
    """Version 4 adds each login's credentials stamp; a version-3 file is migrated in
    place: every row stays, each login gets a stamp of its own, and the users commands
    work on it."""
    from click.testing import CliRunner

    from supervisor.cli.main import main

    conn = version_3_database(db_path)
    created = T0.isoformat(timespec="microseconds")
    for name, role in (("ada", "admin"), ("bob", "viewer"), ("cyd", "operator")):
        conn.execute(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (name, role, f"hash-{name}", created),
        )
    conn.execute(
        "INSERT INTO audit (time, actor, action, detail) VALUES (?, 'ada', 'add user', 'bob')",
        (created,),
    )
    conn.close()
    with SqliteStore.open(db_path) as store:
        users = store.list_users()
        assert [(u.name, u.role, u.password_hash, u.created_at) for u in users] == [
            ("ada", "admin", "hash-ada", T0),
            ("bob", "viewer", "hash-bob", T0),
            ("cyd", "operator", "hash-cyd", T0),
        ]
        stamps = [u.stamp for u in users]
        assert all(len(stamp) == 32 for stamp in stamps) and len(set(stamps)) == 3
        assert [e.detail for _, e in store.audit()] == ["bob"]
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    # The users commands on the migrated file: a new password gives a new stamp.
    result = CliRunner().invoke(
        main,
        ["users", "passwd", "bob", "--password-stdin", "--state-dir", str(db_path.parent)],
        input="a long new password\n",
    )
    assert result.exit_code == 0, result.output
    with SqliteStore.open(db_path) as store:
        bob = store.get_user("bob")
        assert bob is not None and bob.stamp not in stamps and bob.password_hash != "hash-bob"
        assert [u.stamp for u in store.list_users() if u.name != "bob"] == [stamps[0], stamps[2]]


def _stamp(conn: sqlite3.Connection, name: str) -> str:
    stamp: str = conn.execute("SELECT stamp FROM users WHERE name = ?", (name,)).fetchone()[0]
    return stamp


def test_regression_a_writer_that_knows_no_stamps_still_ends_the_sessions(
    store: SqliteStore, db_path: Path
) -> None:
    """Regression: a new password or a disable written by code that does not know about
    stamps (the release before, the sqlite3 shell) left the stamp as it was, so the
    sessions made with the old password went on. The database now makes a new stamp for
    every changed hash whose writer did not write one itself."""
    store.add_user("ada", role="admin", password_hash="hash-1")
    store.add_user("bob", role="viewer", password_hash="hash-b")
    conn = raw(db_path)
    first = _stamp(conn, "ada")
    conn.execute("UPDATE users SET password_hash = 'hash-2' WHERE name = 'ada'")  # no stamps
    second = _stamp(conn, "ada")
    assert second != first and len(second) == 32
    # Version 4's own statement, writing back the stamp it read, for a disable:
    conn.execute(
        "UPDATE users SET role = ?, password_hash = ?, stamp = ? WHERE name = ?",
        ("admin", "!hash-2", second, "ada"),
    )
    third = _stamp(conn, "ada")
    assert third not in {first, second}
    # What must keep the stamp keeps it: a role change, the same hash written again.
    conn.execute("UPDATE users SET role = 'operator', password_hash = password_hash")
    assert _stamp(conn, "ada") == third
    conn.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES"
                 " ('cyd', 'viewer', 'h', '2026-01-01T00:00:00.000000+00:00')")  # fmt: skip
    cyd = _stamp(conn, "cyd")
    assert len(cyd) == 32 and cyd not in {first, second, third}
    conn.close()
    bob = store.get_user("bob")
    assert bob is not None and bob.stamp != cyd  # other logins keep theirs


def test_a_change_that_keeps_the_stamp_on_purpose_keeps_it_once(
    store: SqliteStore, db_path: Path
) -> None:
    """A rehash at login (a new hash, no new stamp) keeps the stamp: the store says so in
    its UPDATE, and that holds for that statement only. A change with a new stamp writes
    that one."""
    store.add_user("ada", role="admin", password_hash="hash-1")
    before = store.get_user("ada")
    assert before is not None
    rehash = UserChange(expected_hash="hash-1", password_hash="hash-1b")
    assert store.change_user("ada", rehash) is Changed.DONE
    after = store.get_user("ada")
    assert after is not None and after.stamp == before.stamp
    # ``expected_stamp`` still finds the stamp the session holds.
    own = UserChange(expected_hash="hash-1b", expected_stamp=before.stamp,
                     password_hash="hash-2", stamp=new_stamp())  # fmt: skip
    assert store.change_user("ada", own) is Changed.DONE
    changed = store.get_user("ada")
    assert changed is not None and changed.stamp == own.stamp
    conn = raw(db_path)
    assert conn.execute("SELECT keep_stamp FROM users").fetchall() == [(0,)]
    conn.execute("UPDATE users SET password_hash = 'hash-3'")  # the next writer's change
    assert _stamp(conn, "ada") != own.stamp
    conn.close()


def version_4_database(db_path: Path) -> sqlite3.Connection:
    """A version-4 file, as the previous release left it, and a plain connection to it."""
    conn = version_3_database(db_path)
    for statement in MIGRATIONS[3]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    return conn


def test_a_version_4_database_gets_the_stamp_triggers_in_place(db_path: Path) -> None:
    conn = version_4_database(db_path)
    created = T0.isoformat(timespec="microseconds")
    conn.execute(
        "INSERT INTO users (name, role, password_hash, created_at, stamp) VALUES"
        " ('ada', 'admin', 'hash-ada', ?, 'stamp-of-ada')",
        (created,),
    )
    conn.close()
    with SqliteStore.open(db_path) as store:
        ada = store.get_user("ada")
        assert ada is not None and (ada.password_hash, ada.stamp) == ("hash-ada", "stamp-of-ada")
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    conn.execute("UPDATE users SET password_hash = 'hash-new' WHERE name = 'ada'")
    assert _stamp(conn, "ada") != "stamp-of-ada"
    conn.close()


def _refuses(path: Path, *expected: str) -> str:
    """Opening ``path`` raises StoreError naming it, and leaves its bytes as they were."""
    before = path.read_bytes()
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    for text in expected:
        assert text in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == siblings
    return message


def test_empty_file_is_refused_untouched(db_path: Path) -> None:
    """Regression: a 0-byte state.db was silently initialised as a new database."""
    db_path.parent.mkdir(parents=True)
    db_path.touch()
    message = _refuses(db_path, "empty (0 bytes)", "remove it")
    assert db_path.stat().st_size == 0, message


def test_a_file_removed_while_opening_is_not_recreated_empty(db_path: Path) -> None:
    """Connections open with mode=rw: SQLite itself never creates an empty state.db."""
    with SqliteStore.open(db_path) as store:
        db_path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        with pytest.raises(StoreError):
            store.count_logs("r1")  # a new reader connection: refused, not created
    assert not db_path.exists()


def test_a_creation_that_died_halfway_leaves_no_state_db_and_its_leftover_is_removed(
    db_path: Path,
) -> None:
    """A crash between creating and initialising: state.db does not exist yet (the new
    database is linked into place complete), so the next start simply creates it."""
    db_path.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    leftover = db_path.parent / f".state.db.new-{int(dead.stdout)}"
    leftover.write_bytes(b"SQLite format 3\x00 half written")
    alive = db_path.parent / f".state.db.new-{os.getppid()}"  # a creation still going on
    alive.write_bytes(b"")
    with SqliteStore.open(db_path) as store:
        store.set_meta("k", "v")
    assert not leftover.exists()
    assert alive.exists()


def test_creating_never_leaves_an_empty_or_temporary_file(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["state.db"]
    assert db_path.read_bytes().startswith(b"SQLite format 3\x00")


def test_random_bytes_are_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(os.urandom(8192))
    _refuses(db_path, "not a SQLite database")


def test_text_file_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_text("[settings]\nthis is not a database\n")
    _refuses(db_path, "not a SQLite database")


def test_truncated_database_is_refused_untouched(db_path: Path) -> None:
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "x" * 500) for _ in range(200)])
    data = db_path.read_bytes()
    assert len(data) > 8 * 4096
    db_path.write_bytes(data[: len(data) // 2])
    _refuses(db_path, "truncated")


def test_database_cut_inside_its_header_is_refused(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    db_path.write_bytes(db_path.read_bytes()[:60])
    _refuses(db_path, "not a SQLite database")


def test_foreign_database_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.close()
    _refuses(db_path, "not a sched-supervisor database")


def test_foreign_application_id_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE runs (x)")
    conn.close()
    _refuses(db_path, "not a sched-supervisor database", "0x4d2")


def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    conn = raw(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    _refuses(db_path, "newer", f"schema version {SCHEMA_VERSION + 1}")


def test_newer_schema_only_in_the_wal_is_refused(db_path: Path) -> None:
    """The header in the main file may lag the WAL: what SQLite sees counts too."""
    with SqliteStore.open(db_path):
        pass
    holder = raw(db_path)  # keeps the WAL from being checkpointed away
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    try:
        with pytest.raises(StoreError, match="newer"):
            SqliteStore.open(db_path)
    finally:
        holder.close()


def test_directory_in_place_of_the_file_is_refused(db_path: Path) -> None:
    db_path.mkdir(parents=True)
    with pytest.raises(StoreError, match="not a regular file"):
        SqliteStore.open(db_path)


def test_directory_that_cannot_be_created_gives_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(blocker / "state" / "state.db")
    assert str(blocker) in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_directory_gives_store_error(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            SqliteStore.open(directory / "state.db")
    finally:
        directory.chmod(0o700)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_database_gives_store_error(db_path: Path) -> None:
    with SqliteStore.open(db_path):
        pass
    db_path.chmod(0o400)
    with pytest.raises(StoreError, match="not readable and writable"):
        SqliteStore.open(db_path)


def test_store_errors_are_supervisor_errors() -> None:
    assert issubclass(StoreError, SupervisorError)


def test_overrides_are_stored_as_readable_json(store: SqliteStore, db_path: Path) -> None:
    store.set_overrides("a.job", {"start_delay": timedelta(seconds=90), "disabled": True})
    conn = raw(db_path)
    text = conn.execute("SELECT settings FROM overrides").fetchone()[0]
    conn.close()
    assert json.loads(text) == {
        "start_delay": {"$type": "duration", "seconds": 90},
        "disabled": True,
    }


# -- runs ---------------------------------------------------------------------------------


def test_retention_keeps_the_newest_runs_and_deletes_the_logs_of_the_rest(
    db_path: Path,
) -> None:
    with SqliteStore.open(db_path, max_runs_per_scheduler=3) as store:
        run_six_and_one_other(store)
        assert [r.run_id for r in store.runs("demo.job")] == ["r5", "r4", "r3"]
        for gone in ("r0", "r1", "r2"):
            with pytest.raises(UnknownRun):
                store.get_run(gone)
        assert messages(store, limit=1000) == [
            f"r{i} line {n}" for i in (3, 4, 5) for n in range(3)
        ]
        assert messages(store, "other.job") == ["other scheduler"]
    conn = raw(db_path)
    assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 10
    conn.close()


def test_cursors_are_not_reused_after_retention_deletes_the_newest_records(
    db_path: Path,
) -> None:
    with SqliteStore.open(db_path, max_runs_per_scheduler=1) as store:
        cursor_a = delete_the_newest_record(store)
    with SqliteStore.open(db_path) as store:
        store.insert_run(make_run("c", started_at=T0 + timedelta(minutes=2)))
        store.append_logs([record("c", "from c")])
        ((cursor_c, _),) = store.logs(LogQuery(scheduler_id="demo.job"))
        assert cursor_c > cursor_a


# -- logs ---------------------------------------------------------------------------------


def test_log_queries_read_ranges_of_the_index() -> None:
    """Every shape of log query is an index search: no table scan, at any size."""
    conn = sqlite3.connect(":memory:")
    for step in MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    shapes: list[tuple[LogQuery, RunRange | None]] = [
        (LogQuery(scheduler_id="demo.job"), None),
        (LogQuery(scheduler_id="demo.job", before=10), None),
        (LogQuery(scheduler_id="demo.job", after=10), None),
        (LogQuery(scheduler_id="demo.job", min_level=Level.ERROR), None),
        (LogQuery(scheduler_id="demo.job", run_id="r"), RunRange(1, 5, 500)),
        (
            LogQuery(scheduler_id="demo.job", run_id="r", min_level=Level.CRITICAL, after=7),
            RunRange(1, 5, 500),
        ),
    ]
    for query, run_range in shapes:
        sql, params = log_query(query, scheduler_ids=["demo.job"], run_range=run_range)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert not [step for step in plan if re.match(r"SCAN (logs|l)\b", step)], (query, plan)
        assert any("USING COVERING INDEX logs_by_level" in step for step in plan), plan
    conn.close()


def test_searches_of_a_scheduler_read_its_index_ranges_and_every_scheduler_hops() -> None:
    """Text, field and time filters of one scheduler's search stay on its index ranges
    (no table scan); "every scheduler" at a high level finds the schedulers by index."""
    conn = sqlite3.connect(":memory:")
    for step in MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    search = LogQuery(
        scheduler_id="demo.job",
        text="erp",
        fields=(("order_id", "42"),),
        since=datetime(2026, 3, 1, tzinfo=UTC),
        until=datetime(2026, 3, 2, tzinfo=UTC),
    )
    for query in (search, dataclasses.replace(search, min_level=Level.ERROR, before=99)):
        sql, params = log_query(query, scheduler_ids=["demo.job", "b"], run_range=None)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert not [step for step in plan if re.match(r"SCAN (logs|l)\b", step)], plan
        assert any("USING INDEX logs_by_level" in step for step in plan), plan
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + SCHEDULERS_WITH_LOGS)]
    assert not [step for step in plan if re.match(r"SCAN logs\b", step)], plan
    conn.close()


# -- the per-run log cap ------------------------------------------------------------------


def test_the_log_cap_and_its_marker_hold_across_a_reopen(db_path: Path) -> None:
    # (The cap itself, on this store too: test_store_contract.py.)
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        store.insert_run(make_run("r1"))
        # 100 bytes each (90 of message, 10 of fields JSON): 10 fit, 3 are dropped.
        store.append_logs([record("r1", "m" * 90, fields={"n": 1000 + i}) for i in range(13)])
        assert store.log_stats("r1").dropped_records == 3
        assert finish(store, "r1").log_truncated is True

    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        store.append_logs([record("r1", "late", fields={})])
        after = store.log_stats("r1")
        assert after.dropped_records == 4
        assert after.stored_records == 11
        assert store.count_logs("r1") == 11


def test_log_byte_count_survives_a_restart(db_path: Path) -> None:
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "a" * 600)])
    with SqliteStore.open(db_path, max_log_bytes_per_run=1000) as store:
        assert store.log_stats("r1").stored_bytes == 600
        store.append_logs([record("r1", "b" * 600)])
        assert store.log_stats("r1").dropped_records == 1
        assert [m[:1] for m in messages(store)] == [
            "a",
            "l",
        ]


# -- concurrency and crashes --------------------------------------------------------------


def test_concurrent_writer_and_readers(store: SqliteStore) -> None:
    store.insert_run(make_run("r1"))
    batches, per_batch = 60, 200
    failures: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for b in range(batches):
                store.append_logs(
                    [record("r1", f"b{b} n{n}", fields={"b": b}) for n in range(per_batch)]
                )
                store.set_meta("progress", str(b))
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    def read() -> None:
        try:
            seen = 0
            deadline = time.monotonic() + 60
            while not failures and time.monotonic() < deadline:
                finished = done.is_set()
                count = store.count_logs("r1")
                assert count >= seen and count % per_batch == 0  # whole batches only
                seen = count
                rows = store.logs(LogQuery(scheduler_id="demo.job", limit=50))
                cursors = [c for c, _ in rows]
                assert cursors == sorted(cursors)
                assert len(rows) == min(50, count) or store.count_logs("r1") > count
                store.runs("demo.job")
                if finished:
                    break
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    assert store.count_logs("r1") == batches * per_batch
    assert store.log_stats("r1").stored_records == batches * per_batch


def test_a_killed_process_loses_nothing_it_committed(db_path: Path) -> None:
    """A writer is SIGKILLed mid-stream; every batch it reported committed is there."""
    script = textwrap.dedent(
        """
        import sys
        from datetime import UTC, datetime
        from pathlib import Path
        from supervisor.core.records import Level, LogRecord, RunRecord, Source, Trigger
        from supervisor.store.sqlite import SqliteStore

        store = SqliteStore.open(Path(sys.argv[1]))
        now = datetime.now(UTC)
        store.insert_run(RunRecord(run_id="r1", scheduler_id="demo.job",
                                   trigger=Trigger.MANUAL, triggered_by=None, started_at=now))
        batch = 0
        while True:
            store.append_logs([LogRecord(time=now, level=Level.INFO, message=f"{batch}:{n}",
                                         fields={}, run_id="r1", source=Source.STDOUT)
                               for n in range(100)])
            batch += 1
            print(batch, flush=True)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    committed = 0
    deadline = time.monotonic() + 30
    while committed < 20 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        committed = int(line)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert committed >= 20
    assert (db_path.parent / "state.db-wal").exists()  # it died without closing
    with SqliteStore.open(db_path) as store:
        assert store.count_logs("r1") >= committed * 100
        assert store.log_stats("r1").stored_records == store.count_logs("r1")
        assert len(
            store.logs(LogQuery(scheduler_id="demo.job", run_id="r1", limit=1_000_000))
        ) == store.count_logs("r1")
    conn = raw(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_process_exiting_without_close_loses_nothing(db_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from datetime import UTC, datetime
        from pathlib import Path
        from supervisor.store.sqlite import SqliteStore

        store = SqliteStore.open(Path(sys.argv[1]))
        store.set_overrides("a.job", {"disabled": True})
        store.set_meta("k", "v")
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(db_path)], check=True, env=child_env())
    with SqliteStore.open(db_path) as store:
        assert store.overrides("a.job") == {"disabled": True}
        assert store.get_meta("k") == "v"


def test_two_stores_on_one_file_see_each_others_commits(db_path: Path) -> None:
    with SqliteStore.open(db_path) as first, SqliteStore.open(db_path) as second:
        first.add_user("alice", role="admin", password_hash="h")
        assert second.get_user("alice") is not None
        second.set_meta("k", "v")
        assert first.get_meta("k") == "v"


# -- a full file system -------------------------------------------------------------------


def test_a_full_file_system_fails_whole_calls_and_the_store_works_once_space_returns(
    small_filesystem: SmallFilesystem,
) -> None:
    path = state_db_path(small_filesystem.root / "state")
    with SqliteStore.open(path) as store:
        store.insert_run(make_run("r1"))
        store.append_logs([record("r1", "before")])
        small_filesystem.fill()
        big = [record("r1", f"line {i} " + "x" * 100) for i in range(20_000)]
        with pytest.raises(StoreError) as caught:
            store.append_logs(big)
        assert str(path) in str(caught.value) and "full" in str(caught.value)
        assert messages(store) == ["before"]  # nothing half-stored
        assert store.log_stats("r1").stored_records == 1
        small_filesystem.free()
        store.add_lost_logs(
            LostLogs(
                run_id="r1",
                records=len(big),
                bytes=2_000_000,
                first_time=T0,
                last_time=T0,
                reason=str(caught.value),
            )
        )
        finish(store, "r1")
        assert store.log_stats("r1").dropped_records == len(big)
        assert store.get_run("r1").outcome is Outcome.SUCCEEDED
    conn = raw(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_file_another_opener_migrated_while_this_one_waited_is_not_migrated_twice(
    db_path: Path,
) -> None:
    """Two processes opening an old file at once: the one that waited for the write lock
    reads the version again under it, and finds the file migrated (before, it migrated
    again and failed on a duplicate column)."""
    from supervisor.store.sqlite.opening import _check_and_configure

    conn = version_3_database(db_path)
    conn.execute(
        "INSERT INTO users (name, role, password_hash, created_at) VALUES"
        " ('ada', 'admin', 'h', '2026-01-01T00:00:00.000000+00:00')"
    )
    conn.close()

    class OtherOpenerFirst:
        """A connection whose opener is overtaken, just before it takes the write lock,
        by another opener that migrates the file."""

        def __init__(self) -> None:
            self.conn = sqlite3.connect(db_path, isolation_level=None)
            self.overtaken = False

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "BEGIN IMMEDIATE" and not self.overtaken:
                self.overtaken = True
                SqliteStore.open(db_path).close()
            return self.conn.execute(sql, *args)

    opener = OtherOpenerFirst()
    _check_and_configure(db_path, opener)  # type: ignore[arg-type]
    opener.conn.close()
    assert opener.overtaken
    with SqliteStore.open(db_path) as store:
        users = store.list_users()
        assert [u.name for u in users] == ["ada"] and len(users[0].stamp) == 32
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
