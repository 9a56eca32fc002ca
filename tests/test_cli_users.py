"""``supervisor users``: every subcommand on the state directory's SQLite store and on a
PostgreSQL store (``--store postgresql://…``, a throwaway cluster made with initdb), the
audit each change writes (as the OS user), the last admin kept, clear errors for an
unknown user, a wrong scheme and an unreachable store, and passwords (typed or in the
URL) never shown."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import secrets
import select
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from supervisor.cli.main import main
from supervisor.core.access import os_user_name
from supervisor.core.passwords import is_temporary, verify_password
from supervisor.store.protocols import Store
from supervisor.usecases.accounts import is_disabled
from tests.postgres import PostgresCluster, free_port, pg_cluster
from tests.waiting import wait_for

__all__ = ["pg_cluster"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "a passphrase nobody types twice"
SUBCOMMANDS: list[list[str]] = [
    ["add", "ghost", "--role", "viewer", "--password-stdin"],
    ["passwd", "ghost", "--password-stdin"],
    ["remove", "ghost"],
    ["role", "ghost", "admin"],
    ["disable", "ghost"],
    ["enable", "ghost"],
    ["list"],
]


@dataclass(frozen=True, slots=True)
class Where:
    """The options that name one store, and how a test opens it to look."""

    options: list[str]
    state_dir: Path
    url: str | None

    @contextmanager
    def opened(self) -> Iterator[Store]:
        if self.url is None:
            from supervisor.store.sqlite import SqliteStore

            with SqliteStore.open(self.state_dir / "state.db") as store:
                yield store
        else:
            from supervisor.store.postgres import PostgresStore

            with PostgresStore.open(self.url) as shared:
                yield shared


def url_of(cluster: PostgresCluster, database: str, *, user: str = "sst") -> str:
    return f"postgresql://{user}@127.0.0.1:{cluster.port}/{database}"


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    state = tmp_path / "state"
    if request.param == "sqlite":
        return Where(["--state-dir", str(state)], state, None)
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    database = f"u{secrets.token_hex(6)}"
    cluster.create_database(database)
    url = url_of(cluster, database)
    return Where(["--state-dir", str(state), "--store", url], state, url)


def users(where: Where, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["users", *args, *where.options], input=stdin)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def trail(where: Where) -> list[tuple[str, str, str | None]]:
    with where.opened() as store:
        return [(e.actor, e.action, e.detail) for _, e in reversed(store.audit())]


def test_every_subcommand_works_on_the_store_and_is_audited_as_the_os_user(
    where: Where,
) -> None:
    ok(users(where, "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSPHRASE + "\n"))
    added = ok(users(where, "add", "olga", "--role", "operator"))
    assert "one-time" in added
    assert ok(users(where, "role", "olga", "admin")) == "olga is now admin\n"
    assert ok(users(where, "role", "olga", "admin")) == "olga is admin already\n"
    assert ok(users(where, "disable", "olga")) == "disabled user olga\n"
    assert ok(users(where, "disable", "olga")) == "olga is disabled already\n"
    listed = json.loads(ok(users(where, "list", "--json")))
    assert listed == [
        {"name": "ada", "role": "admin", "disabled": False},
        {"name": "olga", "role": "admin", "disabled": True},
    ]
    table = ok(users(where, "list")).splitlines()
    assert table[0].split() == ["NAME", "ROLE", "STATE"]
    assert table[2].split() == ["olga", "admin", "disabled"]
    assert ok(users(where, "enable", "olga")) == "enabled user olga\n"
    assert ok(users(where, "enable", "olga")) == "olga is enabled already\n"
    ok(users(where, "passwd", "olga", "--password-stdin", stdin=PASSPHRASE + "\n"))
    with where.opened() as store:
        olga = store.get_user("olga")
        assert olga is not None and not is_disabled(olga)
        assert verify_password(PASSPHRASE, olga.password_hash)
        assert not is_temporary(olga.password_hash)
    ok(users(where, "remove", "olga"))
    me = os_user_name()
    assert trail(where) == [
        (me, "add user", "ada (admin)"),
        (me, "add user", "olga (operator)"),
        (me, "set role", "olga: operator -> admin"),
        (me, "disable user", "olga"),
        (me, "enable user", "olga"),
        (me, "set password", "olga"),
        (me, "remove user", "olga"),
    ]
    if where.url is not None:  # the shared store got users without a state directory
        assert not where.state_dir.exists()


def test_the_first_admin_made_from_the_shell_is_the_stores_own(where: Where) -> None:
    """A manager started on the store afterwards makes no bootstrap admin of its own."""
    import io

    from supervisor.web.auth import ensure_bootstrap_admin

    ok(users(where, "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSPHRASE + "\n"))
    with where.opened() as store:
        assert ensure_bootstrap_admin(store, out=io.StringIO()) is None
        assert [u.name for u in store.list_users()] == ["ada"]


def test_setting_admins_password_deletes_this_hosts_one_time_password_file(
    where: Where,
) -> None:
    import io

    from supervisor.core.passwords import ScryptCost
    from supervisor.web.auth import ensure_bootstrap_admin

    where.state_dir.mkdir(mode=0o700)
    with where.opened() as store:
        made = ensure_bootstrap_admin(
            store, out=io.StringIO(), state_dir=where.state_dir, cost=ScryptCost(n=1 << 10)
        )
    assert made is not None and made.file is not None and made.file.exists()
    ok(users(where, "passwd", "admin", "--password-stdin", stdin=PASSPHRASE + "\n"))
    assert not made.file.exists()


def test_the_last_enabled_admin_is_kept(where: Where) -> None:
    ok(users(where, "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSPHRASE + "\n"))
    ok(users(where, "add", "olga", "--role", "admin"))
    ok(users(where, "disable", "olga"))
    for args, what in (
        (["role", "ada", "viewer"], "demote"),
        (["disable", "ada"], "disable"),
        (["remove", "ada"], "remove"),
    ):
        refused = users(where, *args)
        assert refused.exit_code == 2, refused.output
        assert refused.output == f"error: name: 'ada' is the last admin: cannot {what}\n"
    assert [action for _, action, _ in trail(where)] == ["add user", "add user", "disable user"]
    ok(users(where, "enable", "olga"))
    ok(users(where, "role", "ada", "viewer"))  # olga is an enabled admin again


@pytest.mark.parametrize("args", SUBCOMMANDS[1:-1], ids=lambda a: a[0])
def test_an_unknown_user_is_a_clear_error(where: Where, args: list[str]) -> None:
    ok(users(where, "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSPHRASE + "\n"))
    missing = users(where, *args, stdin=PASSPHRASE + "\n")
    assert missing.exit_code == 2
    assert missing.output == "error: name: no user 'ghost'\n"


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: a[0])
def test_a_store_that_is_no_postgresql_url_is_refused(tmp_path: Path, args: list[str]) -> None:
    for location in ("mysql://ada@db/app", str(tmp_path / "state.db"), "host=db dbname=app"):
        result = CliRunner().invoke(
            main,
            ["users", *args, "--store", location, "--state-dir", str(tmp_path / "s")],
            input=PASSPHRASE + "\n",
        )
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: --store: expected a postgresql://")
        assert result.output.count("\n") == 1
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: a[0])
def test_an_unreachable_store_is_exit_7_naming_it_without_its_password(
    tmp_path: Path, args: list[str]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://ada:{PASSPHRASE.replace(' ', '%20')}@127.0.0.1:{port}/app"
    result = CliRunner().invoke(
        main, ["users", *args, "--store", url, "--state-dir", str(tmp_path)], input="x" * 20
    )
    assert result.exit_code == 7, result.output
    assert result.output.startswith(
        f"error: cannot use PostgreSQL database ada@127.0.0.1:{port}/app: cannot reach the server"
    )
    assert "passphrase" not in result.output


def test_a_password_in_the_url_is_never_shown(pg_cluster: PostgresCluster) -> None:
    secret = "Pg-" + secrets.token_hex(8)
    user = f"u{secrets.token_hex(4)}"
    pg_cluster.require_password(user, secret)
    database = f"p{secrets.token_hex(6)}"
    pg_cluster.create_database(database)
    import psycopg

    with psycopg.connect(pg_cluster.dsn(database), autocommit=True) as conn:
        conn.execute(f'GRANT ALL ON SCHEMA public TO "{user}"')
    base = f"127.0.0.1:{pg_cluster.port}/{database}"
    good = f"postgresql://{user}:{secret}@{base}"
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["users", "add", "ada", "--role", "admin", "--password-stdin", "--store", good],
        input=PASSPHRASE + "\n",
    )
    assert added.exit_code == 0, added.output
    assert secret not in added.output and PASSPHRASE not in added.output
    listed = runner.invoke(main, ["users", "list", "--store", good])
    assert listed.exit_code == 0 and "ada" in listed.output and secret not in listed.output
    failing = {
        "wrong password": f"postgresql://{user}:{secret}x@{base}",
        "bad percent-encoding": f"postgresql://{user}:{secret}%zz@{base}",
        "bad query parameter": f"postgresql://{user}:{secret}@{base}?bogus=1",
        "password parameter": f"postgresql://{user}@{base}?bogus=1&password={secret}",
        "unbalanced host": f"postgresql://{user}:{secret}@[127.0.0.1/{database}",
    }
    for case, url in failing.items():
        result = runner.invoke(main, ["users", "list", "--store", url])
        assert result.exit_code == 7, (case, result.output)
        assert result.output.startswith("error: cannot use PostgreSQL"), (case, result.output)
        assert secret not in result.output, (case, result.output)
    wrong = runner.invoke(main, ["users", "list", "--store", failing["wrong password"]])
    assert f"wrong password for user '{user}'" in wrong.output


def test_a_password_typed_on_a_terminal_is_not_echoed(tmp_path: Path) -> None:
    """``--password-stdin`` from a terminal reads without echo (a pipe is read as is)."""
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "supervisor", "users", "add", "ada", "--role", "admin"]
    argv += ["--password-stdin", "--state-dir", str(state)]
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        # The terminal is the command's own controlling terminal (/dev/tty), as at a shell:
        # getpass turns echo off there, whichever click asks it.
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(follower)
    seen = b""
    try:
        seen += read_until(leader, b"Password for ada")
        # Type once echo is off: some click versions write the prompt before they turn it
        # off, and turning it off flushes what was typed before.
        wait_for(
            lambda: not termios.tcgetattr(leader)[3] & termios.ECHO,
            timeout=60,
            what="the terminal's echo to go off",
        )
        os.write(leader, PASSPHRASE.encode() + b"\n")
        seen += read_until(leader, b"added user ada")
        assert process.wait(timeout=60) == 0, seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    assert PASSPHRASE.encode() not in seen
    from supervisor.store.sqlite import SqliteStore

    with SqliteStore.open(state / "state.db") as store:
        ada = store.get_user("ada")
        assert ada is not None and verify_password(PASSPHRASE, ada.password_hash)


def read_until(fd: int, wanted: bytes, *, timeout: float = 60.0) -> bytes:
    """What the terminal shows until ``wanted`` appears (or fail at the deadline)."""
    import time

    deadline = time.monotonic() + timeout
    seen = b""
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} on the terminal: {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed
                chunk = b""
            assert chunk, f"the terminal closed before {wanted!r}: {seen!r}"
            seen += chunk
    return seen


def empty_database(cluster: PostgresCluster) -> tuple[str, str]:
    database = f"e{secrets.token_hex(6)}"
    cluster.create_database(database)
    return database, url_of(cluster, database)


def store_tables(cluster: PostgresCluster, database: str) -> list[str]:
    import psycopg

    with psycopg.connect(cluster.dsn(database), autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'sst%'")
        return sorted(row[0] for row in rows)


@pytest.mark.parametrize("args", SUBCOMMANDS[1:], ids=lambda a: a[0])
def test_only_add_creates_the_store_in_an_empty_database(
    pg_cluster: PostgresCluster, tmp_path: Path, args: list[str]
) -> None:
    """Regression: `users list --store URL` made every sst_* table in any database."""
    database, url = empty_database(pg_cluster)
    result = CliRunner().invoke(
        main, ["users", *args, "--store", url, "--state-dir", str(tmp_path)], input=PASSPHRASE
    )
    assert result.exit_code == 7, result.output
    assert result.output == (
        f"error: cannot use PostgreSQL database sst@127.0.0.1:{pg_cluster.port}/{database}: no"
        " sched-supervisor store there; `supervisor users add` or `supervisor run --store`"
        " creates it\n"
    )
    assert store_tables(pg_cluster, database) == []
    added = CliRunner().invoke(
        main, ["users", "add", "ada", "--role", "admin", "--store", url], input=PASSPHRASE
    )
    assert added.exit_code == 0, added.output
    assert "sst_users" in store_tables(pg_cluster, database)


def test_a_shared_stores_admin_password_leaves_the_state_dirs_own_file(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """Regression: `users passwd admin --store URL --state-dir S` deleted the one-time
    password file of S's own SQLite store."""
    import io

    from supervisor.core.passwords import ScryptCost
    from supervisor.store.postgres import PostgresStore
    from supervisor.store.sqlite import SqliteStore
    from supervisor.web.auth import ensure_bootstrap_admin

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cheap = ScryptCost(n=1 << 10)
    with SqliteStore.open(state / "state.db") as own:
        made = ensure_bootstrap_admin(own, out=io.StringIO(), state_dir=state, cost=cheap)
    assert made is not None and made.file is not None
    _, url = empty_database(pg_cluster)
    with PostgresStore.open(url) as shared:  # the shared store's admin: another password
        assert ensure_bootstrap_admin(shared, out=io.StringIO(), cost=cheap) is not None
    changed = CliRunner().invoke(
        main,
        ["users", "passwd", "admin", "--password-stdin", "--store", url, "--state-dir", str(state)],
        input=PASSPHRASE + "\n",
    )
    assert changed.exit_code == 0, changed.output
    assert made.file.read_text() == made.password + "\n"  # still S's admin's password
    ok(users(Where(["--state-dir", str(state)], state, None), "passwd", "admin",
             "--password-stdin", stdin=PASSPHRASE + "\n"))  # fmt: skip
    assert not made.file.exists()  # S's own store changed: the file went


def test_a_password_with_an_unencoded_at_sign_is_never_shown(tmp_path: Path) -> None:
    port = free_port()
    for url in (
        f"postgresql://u:p@ss9word@127.0.0.1:{port}/db",
        f"postgresql://u:p%zzsecret@127.0.0.1:{port}/db",
    ):
        result = CliRunner().invoke(
            main, ["users", "list", "--store", url, "--state-dir", str(tmp_path)]
        )
        assert result.exit_code == 7, result.output
        assert result.output.startswith("error: cannot use PostgreSQL"), result.output
        assert "ss9word" not in result.output and "secret" not in result.output


def test_the_store_may_come_from_the_environment(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """So the URL is not in /proc/PID/cmdline and the shell history."""
    _, url = empty_database(pg_cluster)
    added = CliRunner().invoke(
        main,
        ["users", "add", "ada", "--role", "admin", "--state-dir", str(tmp_path / "state")],
        env={"SCHED_SUPERVISOR_STORE": url},
    )
    assert added.exit_code == 0, added.output
    listed = CliRunner().invoke(main, ["users", "list"], env={"SCHED_SUPERVISOR_STORE": url})
    assert listed.exit_code == 0 and "ada" in listed.output, listed.output
    assert not (tmp_path / "state").exists()
    for command in (["users", "list"], ["run"]):
        shown = CliRunner().invoke(main, [*command, "--help"])
        assert "SCHED_SUPERVISOR_STORE" in " ".join(shown.output.split()), command
