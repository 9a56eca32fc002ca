"""What only the PostgreSQL store does (the conformance suite covers the rest): clear errors
for a database it cannot use, one schema however many hosts open it at once, cursors in
commit order across writers, recovery after a server restart, and fenced run writes under
the cluster's lease tokens. On a throwaway cluster (tests/postgres.py)."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from supervisor.core.errors import StaleLease, StoreError, UnknownRun
from supervisor.core.records import LogQuery, Outcome
from tests.postgres import PostgresCluster, free_port, pg_cluster, pg_dsn, skip_reason
from tests.store_values import T0, finish, make_run, record
from tests.waiting import wait_for

__all__ = ["pg_cluster", "pg_dsn"]

if skip_reason() is None:
    import psycopg

    from supervisor.cluster import schema as cluster_schema
    from supervisor.cluster.db import connect as cluster_connect
    from supervisor.cluster.lease import Leases, LeaseTiming
    from supervisor.store.postgres import SCHEMA_VERSION, TABLES, PostgresStore

LONG = timedelta(seconds=60)


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresStore]:
    with PostgresStore.open(pg_dsn) as opened:
        yield opened


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


# -- a database it cannot use --------------------------------------------------------------


def test_an_unreachable_server_is_named(pg_cluster: PostgresCluster) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StoreError) as caught:
        PostgresStore.open(f"postgresql://sst@127.0.0.1:{port}/app?connect_timeout=3")
    message = str(caught.value)
    assert f"PostgreSQL database sst@127.0.0.1:{port}/app" in message
    assert "cannot reach the server" in message
    assert "refused" in message.lower()


def test_a_wrong_password_is_named_and_never_shown(pg_cluster: PostgresCluster) -> None:
    user = f"pw{secrets.token_hex(4)}"
    pg_cluster.require_password(user, "right-one")
    url = f"postgresql://{user}:wrong-one@127.0.0.1:{pg_cluster.port}/postgres"

    def refused() -> str | None:
        try:
            PostgresStore.open(url).close()
        except StoreError as error:
            return str(error)
        return None  # the reload has not reached the server yet

    message = wait_for(refused, what="the password rule to apply")
    assert f"wrong password for user {user!r}" in message
    assert "wrong-one" not in message and "right-one" not in message
    assert f"{user}@127.0.0.1:{pg_cluster.port}/postgres" in message
    no_password = f"postgresql://{user}@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(StoreError, match="asks for a password and none was given"):
        PostgresStore.open(no_password)
    good = f"postgresql://{user}:right-one@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(StoreError, match="may not create the store's tables"):
        PostgresStore.open(good)  # a plain login may not create tables in public


def test_a_missing_database_is_named(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(StoreError, match=r"database .nothere. does not exist .*createdb"):
        PostgresStore.open(pg_cluster.dsn("nothere"))


def test_a_database_of_another_application_is_refused_and_left_alone(pg_dsn: str) -> None:
    execute(pg_dsn, "CREATE TABLE orders (id int); CREATE TABLE customers (id int)")
    with pytest.raises(StoreError, match="holds tables of another application") as caught:
        PostgresStore.open(pg_dsn)
    assert "customers, orders" in str(caught.value)
    with psycopg.connect(pg_dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert not {name for name in names if name.startswith("sst_")}


def test_the_cluster_tables_do_not_make_a_database_foreign(pg_dsn: str) -> None:
    with cluster_connect(pg_dsn) as conn:
        cluster_schema.install(conn)
    with PostgresStore.open(pg_dsn) as store:
        store.set_meta("k", "v")
        assert store.get_meta("k") == "v"


def test_a_newer_or_foreign_or_damaged_schema_is_refused(pg_cluster: PostgresCluster) -> None:
    newer = pg_cluster.create_database(f"n{secrets.token_hex(4)}")
    PostgresStore.open(newer).close()
    execute(newer, f"UPDATE sst_schema SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer sched-supervisor"):
        PostgresStore.open(newer)
    foreign = pg_cluster.create_database(f"f{secrets.token_hex(4)}")
    PostgresStore.open(foreign).close()
    execute(foreign, "UPDATE sst_schema SET application = 'other-tool'")
    with pytest.raises(StoreError, match="belongs to 'other-tool'"):
        PostgresStore.open(foreign)
    damaged = pg_cluster.create_database(f"d{secrets.token_hex(4)}")
    PostgresStore.open(damaged).close()
    execute(damaged, "DROP TABLE sst_logs")
    with pytest.raises(StoreError, match=r"damaged store .missing table sst_logs"):
        PostgresStore.open(damaged)


def test_a_version_1_store_gains_the_host_of_each_run(pg_cluster: PostgresCluster) -> None:
    old = pg_cluster.create_database(f"v{secrets.token_hex(4)}")
    with PostgresStore.open(old) as store:
        store.insert_run(make_run("before"))
    # What version 1 looked like: no host column (nor the users' stamps of versions 3, 4).
    execute(old, "DROP TRIGGER sst_users_stamp ON sst_users")
    execute(old, "DROP FUNCTION sst_users_stamp()")
    execute(old, "ALTER TABLE sst_users DROP COLUMN keep_stamp")
    execute(old, "ALTER TABLE sst_runs DROP COLUMN host")
    execute(old, "ALTER TABLE sst_users DROP COLUMN stamp")
    execute(old, "UPDATE sst_schema SET version = 1")
    with PostgresStore.open(old) as store:
        assert store.get_run("before").host is None  # a single manager's run
        store.insert_run(replace(make_run("after", started_at=T0 + LONG), host="b"))
        assert store.get_run("after").host == "b"
        (unfinished,) = [u for u in store.unfinished_runs() if u.run.run_id == "after"]
        assert unfinished.run.host == "b"
    with psycopg.connect(old, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM sst_schema").fetchone() == (SCHEMA_VERSION,)


def test_a_version_2_store_keeps_its_users_and_gives_each_a_stamp(
    pg_cluster: PostgresCluster,
) -> None:
    """Version 3 adds each login's credentials stamp. A version-2 store, made by the
    previous release's statements, is migrated in place: every user stays, each with a
    stamp of its own, and a row an older host inserts afterwards gets one too."""
    from supervisor.store.postgres.schema import APPLICATION, MIGRATIONS, VERSION_TABLE

    old = pg_cluster.create_database(f"v{secrets.token_hex(4)}")
    with psycopg.connect(old, autocommit=True) as conn, conn.transaction():
        for step in MIGRATIONS[:2]:
            for statement in step:
                conn.execute(statement)  # type: ignore[arg-type]
        conn.execute(
            f"INSERT INTO {VERSION_TABLE} (application, version) VALUES (%s, 2)",
            (APPLICATION,),
        )
        for name, role in (("ada", "admin"), ("bob", "viewer")):
            conn.execute(
                "INSERT INTO sst_users (name, role, password_hash, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (name, role, f"hash-{name}", T0),
            )
    with PostgresStore.open(old) as store:
        users = store.list_users()
        assert [(u.name, u.role, u.password_hash, u.created_at) for u in users] == [
            ("ada", "admin", "hash-ada", T0),
            ("bob", "viewer", "hash-bob", T0),
        ]
        assert all(u.stamp for u in users) and users[0].stamp != users[1].stamp
    with psycopg.connect(old, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM sst_schema").fetchone() == (SCHEMA_VERSION,)
        conn.execute(  # a host still running the previous release adds a user
            "INSERT INTO sst_users (name, role, password_hash, created_at)"
            " VALUES ('cyd', 'viewer', 'h', now())"
        )
    with PostgresStore.open(old) as store:
        cyd = store.get_user("cyd")
        assert cyd is not None and cyd.stamp and cyd.stamp not in {u.stamp for u in users}


def _pg_stamp(conn: psycopg.Connection[tuple[object, ...]], name: str) -> str:
    row = conn.execute("SELECT stamp FROM sst_users WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def test_regression_a_host_of_the_release_before_still_ends_the_sessions(
    store: PostgresStore, pg_dsn: str
) -> None:
    """Regression: during a rolling upgrade a host still running the release before (or
    anyone with psql) changed a password or disabled a login without a new stamp, so the
    sessions made with the old password went on on every host. The database now makes a
    new stamp for every changed hash whose writer did not write one itself."""
    from supervisor.store.protocols import Changed, UserChange, new_stamp

    store.add_user("ada", role="admin", password_hash="hash-1")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        first = _pg_stamp(conn, "ada")
        # The release before's statement for a disable, writing back the stamp it read:
        conn.execute(
            "UPDATE sst_users SET role = %s, password_hash = %s, stamp = %s WHERE name = %s",
            ("admin", "!hash-1", first, "ada"),
        )
        second = _pg_stamp(conn, "ada")
        assert second != first
        conn.execute("UPDATE sst_users SET password_hash = 'hash-2'")  # knows no stamps
        third = _pg_stamp(conn, "ada")
        assert third not in {first, second}
        conn.execute("UPDATE sst_users SET role = 'viewer', password_hash = password_hash")
        assert _pg_stamp(conn, "ada") == third  # no new hash: the sessions go on
    # This release keeps the stamp on purpose (a rehash at login) and says so, once.
    rehash = UserChange(expected_hash="hash-2", password_hash="hash-2b")
    assert store.change_user("ada", rehash) is Changed.DONE
    kept = store.get_user("ada")
    assert kept is not None and kept.stamp == third
    own = UserChange(expected_hash="hash-2b", expected_stamp=third, password_hash="hash-3",
                     stamp=new_stamp())  # fmt: skip
    assert store.change_user("ada", own) is Changed.DONE
    changed = store.get_user("ada")
    assert changed is not None and changed.stamp == own.stamp
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT keep_stamp FROM sst_users").fetchall() == [(False,)]
        conn.execute("UPDATE sst_users SET password_hash = 'hash-4'")
        assert _pg_stamp(conn, "ada") != own.stamp


def test_a_version_3_store_gets_the_stamp_trigger_in_place(pg_cluster: PostgresCluster) -> None:
    from supervisor.store.postgres.schema import APPLICATION, MIGRATIONS, VERSION_TABLE

    old = pg_cluster.create_database(f"v{secrets.token_hex(4)}")
    with psycopg.connect(old, autocommit=True) as conn, conn.transaction():
        for step in MIGRATIONS[:3]:
            for statement in step:
                conn.execute(statement)  # type: ignore[arg-type]
        conn.execute(
            f"INSERT INTO {VERSION_TABLE} (application, version) VALUES (%s, 3)",
            (APPLICATION,),
        )
        conn.execute(
            "INSERT INTO sst_users (name, role, password_hash, created_at, stamp)"
            " VALUES ('ada', 'admin', 'hash-ada', %s, 'stamp-of-ada')",
            (T0,),
        )
    with PostgresStore.open(old) as store:
        ada = store.get_user("ada")
        assert ada is not None and (ada.password_hash, ada.stamp) == ("hash-ada", "stamp-of-ada")
    with psycopg.connect(old, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM sst_schema").fetchone() == (SCHEMA_VERSION,)
        assert SCHEMA_VERSION == 4
        conn.execute("UPDATE sst_users SET password_hash = 'hash-new'")
        assert _pg_stamp(conn, "ada") != "stamp-of-ada"


def test_a_search_path_gives_the_store_a_schema_of_its_own(pg_dsn: str) -> None:
    execute(pg_dsn, "CREATE TABLE orders (id int); CREATE SCHEMA sched")
    with PostgresStore.open(pg_dsn + " options=-csearch_path=sched") as store:
        store.set_meta("k", "v")
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT schemaname FROM pg_tables WHERE tablename = 'sst_meta'"
        ).fetchall()
    assert rows == [("sched",)]


# -- several hosts on one database ---------------------------------------------------------


def test_hosts_opening_at_once_create_the_schema_once(pg_dsn: str) -> None:
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        try:
            start.wait()
            opened.append(PostgresStore.open(pg_dsn))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(opened) == 6
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM sst_schema").fetchone() == (1,)
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert tables >= TABLES
    opened[0].insert_run(make_run("r1"))
    assert opened[5].get_run("r1") == make_run("r1")
    for store in opened:
        store.close()


def test_a_reader_following_cursors_misses_nothing_while_two_hosts_append(pg_dsn: str) -> None:
    with PostgresStore.open(pg_dsn) as one, PostgresStore.open(pg_dsn) as two:
        one.insert_run(make_run("a"))
        two.insert_run(make_run("b"))
        batches, per_batch = 30, 20
        failures: list[BaseException] = []

        def write(store: PostgresStore, run_id: str) -> None:
            try:
                for b in range(batches):
                    store.append_logs(
                        [record(run_id, f"{run_id} {b} {n}") for n in range(per_batch)]
                    )
            except BaseException as error:
                failures.append(error)

        writers = [
            threading.Thread(target=write, args=(one, "a")),
            threading.Thread(target=write, args=(two, "b")),
        ]
        for thread in writers:
            thread.start()
        seen: list[str] = []
        cursor = 0
        while True:
            done = not any(thread.is_alive() for thread in writers)
            rows = two.logs(LogQuery(scheduler_id="demo.job", after=cursor, limit=1000))
            seen.extend(r.message for _, r in rows)
            if rows:
                cursor = rows[-1][0]
            if done and not rows:
                break
        assert not failures, failures
        assert len(seen) == 2 * batches * per_batch
        assert sorted(seen) == sorted(
            f"{run_id} {b} {n}" for run_id in "ab" for b in range(batches) for n in range(per_batch)
        )


def test_the_store_recovers_after_the_server_restarts(pg_cluster: PostgresCluster) -> None:
    dsn = pg_cluster.create_database(f"r{secrets.token_hex(4)}")
    with PostgresStore.open(dsn) as store:
        store.insert_run(make_run("before"))
        # Four connections in use at once, then idle in the pool.
        with store._db.read(), store._db.read(), store._db.read(), store._db.read():
            pass
        pg_cluster.restart()  # every pooled connection is cut
        failures: list[StoreError] = []

        def works() -> bool:
            try:
                store.insert_run(make_run(f"after-{secrets.token_hex(3)}"))
            except StoreError as error:
                failures.append(error)
                return False
            return True

        wait_for(works, what="the store to reconnect")
        # One call meets a cut connection; the pool then drops the other cut ones.
        assert len(failures) <= 1, failures
        assert store.get_run("before") == make_run("before")


# -- fenced run writes -----------------------------------------------------------------------


@pytest.fixture
def leases(pg_dsn: str) -> Iterator[tuple[Leases, Leases]]:
    timing = LeaseTiming(ttl=LONG, renew_every=timedelta(seconds=5))
    with cluster_connect(pg_dsn) as conn_a, cluster_connect(pg_dsn) as conn_b:
        cluster_schema.install(conn_a)
        cluster_schema.register(conn_a, ["demo.job"])
        yield (
            Leases(conn_a, holder="host-a", timing=timing),
            Leases(conn_b, holder="host-b", timing=timing),
        )


def test_a_stale_token_cannot_start_or_end_a_run(
    store: PostgresStore, leases: tuple[Leases, Leases]
) -> None:
    host_a, host_b = leases
    [lease_a], _ = host_a.acquire(["demo.job"])
    store.insert_run_fenced(replace(make_run("r1"), host="a"), token=lease_a.token)
    assert store.get_run("r1") == replace(make_run("r1"), host="a")
    host_a.release([lease_a])  # graceful hand-off: the token moves on
    [lease_b], _ = host_b.acquire(["demo.job"])
    assert lease_b.token > lease_a.token
    with pytest.raises(StaleLease) as caught:
        store.finish_run_fenced(
            "r1",
            token=lease_a.token,
            ended_at=T0 + timedelta(seconds=5),
            outcome=Outcome.SUCCEEDED,
            exit_code=0,
            signal=None,
            error=None,
        )
    assert (caught.value.scheduler_id, caught.value.token) == ("demo.job", lease_a.token)
    assert store.get_run("r1").outcome is None  # nothing written
    with pytest.raises(StaleLease):
        store.insert_run_fenced(make_run("r2"), token=lease_a.token)
    with pytest.raises(UnknownRun):
        store.get_run("r2")
    # The new owner closes what the old one left open; the old one's late end stays refused.
    closed = store.interrupt_runs_before(
        "demo.job", token=lease_b.token, ended_at=T0 + timedelta(seconds=6), error="taken over"
    )
    assert closed == ["r1"]
    assert store.get_run("r1").outcome is Outcome.INTERRUPTED
    with pytest.raises(StaleLease):
        store.interrupt_runs_before("demo.job", token=lease_a.token, ended_at=T0, error=None)
    # The current token writes; retrying the same end stores the same row.
    store.insert_run_fenced(
        make_run("r3", started_at=T0 + timedelta(seconds=7)), token=lease_b.token
    )
    for _ in range(2):
        ended = store.finish_run_fenced(
            "r3",
            token=lease_b.token,
            ended_at=T0 + timedelta(seconds=8),
            outcome=Outcome.FAILED,
            exit_code=1,
            signal=None,
            error="exit 1",
        )
        assert (ended.outcome, ended.exit_code) == (Outcome.FAILED, 1)
    # A run started under the old token cannot be ended under the new one either.
    with pytest.raises(StaleLease):
        store.finish_run_fenced(
            "r1",
            token=lease_b.token,
            ended_at=T0,
            outcome=Outcome.SUCCEEDED,
            exit_code=0,
            signal=None,
            error=None,
        )
    with pytest.raises(UnknownRun):
        store.finish_run_fenced(
            "nope",
            token=lease_b.token,
            ended_at=T0,
            outcome=Outcome.SUCCEEDED,
            exit_code=0,
            signal=None,
            error=None,
        )
    with pytest.raises(StoreError, match="already stored"):
        store.insert_run_fenced(make_run("r3"), token=lease_b.token)


def test_a_fenced_write_and_a_takeover_never_interleave(
    pg_dsn: str, store: PostgresStore, leases: tuple[Leases, Leases]
) -> None:
    host_a, _ = leases
    [lease_a], _ = host_a.acquire(["demo.job"])
    store.insert_run_fenced(make_run("r1"), token=lease_a.token)
    # A takeover in progress: the lease row is updated, not yet committed.
    with psycopg.connect(pg_dsn) as taker:
        taker.execute(
            "UPDATE cluster_leases SET token = token + 1, holder = 'host-b'"
            " WHERE scheduler_id = 'demo.job'"
        )
        outcome: list[BaseException | None] = []

        def late_end() -> None:
            try:
                store.finish_run_fenced(
                    "r1",
                    token=lease_a.token,
                    ended_at=T0 + timedelta(seconds=1),
                    outcome=Outcome.SUCCEEDED,
                    exit_code=0,
                    signal=None,
                    error=None,
                )
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        writer = threading.Thread(target=late_end)
        writer.start()

        def waiting_on_the_lease() -> bool:
            row = taker.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            ).fetchone()
            return bool(row and row[0])

        wait_for(waiting_on_the_lease, what="the fenced write to wait for the takeover")
        assert not outcome  # it waits: it neither wrote nor was refused yet
        taker.commit()
    writer.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], StaleLease)
    assert store.get_run("r1").outcome is None


def test_fenced_writes_without_the_lease_table_say_so(store: PostgresStore) -> None:
    with pytest.raises(StoreError, match="need the cluster's lease table cluster_leases"):
        store.insert_run_fenced(make_run("r1"), token=1)
    store.insert_run(make_run("r1"))  # unfenced writes still work
    assert finish(store, "r1").outcome is Outcome.SUCCEEDED


# -- one manager per store ---------------------------------------------------------------------


def test_one_manager_lock_per_store(pg_cluster: PostgresCluster) -> None:
    dsn = pg_cluster.create_database(f"x{secrets.token_hex(4)}")
    with PostgresStore.open(dsn) as one, PostgresStore.open(dsn) as two:
        first, second = one.exclusive(), two.exclusive()
        first.acquire()
        try:
            with pytest.raises(StoreError, match="is in use by another manager") as caught:
                second.acquire()
            assert "sched-supervisor manager" in str(caught.value)  # who holds it
            assert first.check() is None
            pg_cluster.restart()  # the lock's session ends with the server
            assert "took the manager lock again" in (first.check() or "")
            with pytest.raises(StoreError, match="in use by another manager"):
                second.acquire()
            with PostgresStore.open(
                pg_cluster.create_database(f"y{secrets.token_hex(4)}")
            ) as other:
                elsewhere = other.exclusive()
                elsewhere.acquire()  # another database: another lock
                elsewhere.close()
        finally:
            first.close()
            first.close()
        second.acquire()  # free once the first lets go
        second.close()


def lock_pids(dsn: str) -> list[int]:
    """Server pids of the sessions holding a manager lock on ``dsn``'s database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(
            "SELECT l.pid FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND a.application_name LIKE 'sched-supervisor manager %'"
        ).fetchall()
    return [row[0] for row in found]


def end_lock_session(dsn: str) -> None:
    """End the session holding the manager lock (as an operator's pg_terminate_backend)."""
    (pid,) = lock_pids(dsn)
    execute(dsn, f"SELECT pg_terminate_backend({pid})")
    wait_for(lambda: lock_pids(dsn) == [], what="the lock released")


def test_a_lock_another_manager_took_refuses_every_write_and_names_that_manager(
    pg_cluster: PostgresCluster,
) -> None:
    dsn = pg_cluster.create_database(f"l{secrets.token_hex(4)}")
    with PostgresStore.open(dsn) as one, PostgresStore.open(dsn) as two:
        first, second = one.exclusive(), two.exclusive()
        first.acquire()
        try:
            one.insert_run(make_run("r1"))
            end_lock_session(dsn)
            second.acquire()  # before the first takes it back
            try:
                (holder,) = lock_pids(dsn)
                with pytest.raises(StoreError, match="another manager holds it now") as caught:
                    one.insert_run(make_run("r2"))  # refused before it is written
                assert f"server pid {holder}" in str(caught.value)
                with pytest.raises(StoreError, match="another manager holds it now"):
                    first.check()  # the manager's loop learns it too: it must stop
                with pytest.raises(StoreError, match="another manager holds it now"):
                    one.set_meta("k", "v")  # every write, for good
                assert one.get_run("r1") == make_run("r1")  # reads still work
                two.insert_run(make_run("r3"))  # the holder writes
                with psycopg.connect(dsn) as conn:
                    stored = conn.execute("SELECT run_id FROM sst_runs ORDER BY seq").fetchall()
                assert stored == [("r1",), ("r3",)]
            finally:
                second.close()
        finally:
            first.close()


def test_a_lock_another_manager_held_meanwhile_is_lost_for_good(
    pg_cluster: PostgresCluster,
) -> None:
    dsn = pg_cluster.create_database(f"m{secrets.token_hex(4)}")
    with PostgresStore.open(dsn) as one, PostgresStore.open(dsn) as two:
        first, second = one.exclusive(), two.exclusive()
        first.acquire()
        try:
            end_lock_session(dsn)
            second.acquire()  # another manager runs on the store for a while, then stops
            other = two.get_meta("manager_lock_holder")
            second.close()
            wait_for(lambda: lock_pids(dsn) == [], what="the other's session gone")
            # Free again, the lock is not simply taken back: the store was another's.
            with pytest.raises(StoreError, match="held it meanwhile") as caught:
                one.insert_run(make_run("r1"))
            assert str(other) in str(caught.value)
            with pytest.raises(StoreError, match="held it meanwhile"):
                first.check()
            assert lock_pids(dsn) == []  # nor kept
        finally:
            first.close()


def call_within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; what it raised (None if it returned). Fails the test if it
    is still running after ``seconds`` (it hangs: left behind, a daemon)."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test
            raised.append(error)
        else:
            raised.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert raised, f"still waiting after {seconds} s"
    return raised[0]


@pytest.mark.parametrize(
    ("query", "bound", "within"),
    [
        pytest.param("", "5 s", 15, id="default"),  # statement_timeout 4 s + 1 s
        pytest.param("&call_timeout=1.5s", "1.5 s", 4, id="call_timeout"),
    ],
)
def test_a_black_holed_connection_fails_within_seconds_and_the_next_call_reconnects(
    pg_cluster: PostgresCluster, query: str, bound: str, within: float
) -> None:
    from tests.tcp_proxy import FaultyProxy

    database = f"h{secrets.token_hex(4)}"
    pg_cluster.create_database(database)
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        url = f"postgresql://sst@127.0.0.1:{proxy.port}/{database}?connect_timeout=3{query}"
        with PostgresStore.open(url) as store:
            store.insert_run(make_run("before"))
            proxy.blackhole()  # acknowledged, never forwarded, never closed
            started = time.monotonic()
            error = call_within(within, lambda: store.insert_run(make_run("lost")))
            took = time.monotonic() - started
            print(f"a black-holed write failed after {took:.2f} s (bound {bound})")
            assert isinstance(error, StoreError)
            assert str(error).startswith(
                f"PostgreSQL database sst@127.0.0.1:{proxy.port}/{database}: no answer from"
                f" the server within {bound}"
            )
            proxy.heal()
            store.insert_run(make_run("after"))  # on a new connection
            assert store.get_run("after") == make_run("after")


def test_a_write_waiting_on_a_row_lock_fails_with_the_servers_reason(
    pg_dsn: str, store: PostgresStore
) -> None:
    store.insert_run(make_run("r1"))
    # A writer that vanished mid-transaction (its host lost the network) holds the log
    # cursor's row lock until the server ends its session.
    with psycopg.connect(pg_dsn) as vanished:
        vanished.execute("SELECT value FROM sst_counters WHERE name = 'log_id' FOR UPDATE")
        started = time.monotonic()
        error = call_within(15, lambda: store.append_logs([record("r1")]))
        took = time.monotonic() - started
    assert isinstance(error, StoreError)
    assert "lock timeout" in str(error)
    assert took < 4.5  # the session's lock_timeout (2 s), not the client's deadline
    store.append_logs([record("r1")])  # once it let go
    assert store.count_logs("r1") == 1


def test_a_lock_session_the_network_dropped_is_ended_and_the_lock_taken_back(
    pg_cluster: PostgresCluster,
) -> None:
    from tests.tcp_proxy import FaultyProxy

    database = f"d{secrets.token_hex(4)}"
    dsn = pg_cluster.create_database(database)
    with FaultyProxy(("127.0.0.1", pg_cluster.port), refuse=0, cut=0) as proxy:
        url = f"postgresql://sst@127.0.0.1:{proxy.port}/{database}?connect_timeout=3"
        with PostgresStore.open(url) as store:
            guard = store.exclusive()
            guard.acquire()
            try:
                (dropped,) = lock_pids(dsn)
                proxy.blackhole()
                proxy.heal()  # new connections go through; the open ones stay swallowed
                # The server still holds the old session (and the lock) for this manager.
                assert lock_pids(dsn) == [dropped]
                assert "took the manager lock again" in (guard.check() or "")
                (held,) = lock_pids(dsn)
                assert held != dropped
                # Writes go on (the first one may meet a swallowed pooled connection).
                with contextlib.suppress(StoreError):
                    store.insert_run(make_run("r0"))
                store.insert_run(make_run("r1"))
            finally:
                guard.close()
