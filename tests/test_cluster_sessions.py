"""Two Admin Centers of a cluster on one PostgreSQL store (made with initdb): a change of
a user made on one host ends the user's sessions on the other at their next request.

Each host is a real ``supervisor run --cluster DSN --store DSN --admin`` process
(tests/cluster_managers.py); the users are made, and a password set, by the real
``supervisor users --store`` CLI. A reset on host a's users page, the user's own change
on host b and one from the shell each send the user's other sessions, on both hosts, to
the login page saying why, and each end is in the shared audit trail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")

from tests.cluster_managers import ManagerHost, as_url, db, hosts
from tests.cluster_managers import start as start_hosts
from tests.http_session import HttpSession
from tests.postgres import free_port, pg_cluster, pg_dsn
from tests.test_web_sessions_end import (
    ADMIN_PASSWORD,
    OTTO_PASSWORD,
    answers,
    logged_in,
    post_form,
    sent_to_login_saying,
    shell,
)
from tests.waiting import wait_for

__all__ = ["db", "hosts", "pg_cluster", "pg_dsn"]


def one_time_password(page: str) -> str:
    match = re.search(r"one-time password: (\S+)", page)
    assert match is not None, page[:2000]
    return match.group(1)


def test_a_change_on_one_host_ends_the_users_sessions_on_the_other(
    db: Any, pg_dsn: str, hosts: list[ManagerHost], tmp_path: Path
) -> None:
    store = as_url(pg_dsn)
    # The first users made from the shell, before any host starts (no bootstrap admin).
    shell("users", "add", "ada", "--role", "admin", "--password-stdin", "--store", store,
          password=ADMIN_PASSWORD)  # fmt: skip
    shell("users", "add", "otto", "--role", "operator", "--password-stdin", "--store", store,
          password=OTTO_PASSWORD)  # fmt: skip
    port_a, port_b = free_port(), free_port()
    start_hosts(hosts, pg_dsn, tmp_path, "a", shared_store=True, admin=port_a)
    start_hosts(hosts, pg_dsn, tmp_path, "b", shared_store=True, admin=port_b)
    wait_for(lambda: answers(port_a) and answers(port_b), timeout=30, what="both Admin Centers")

    ada = HttpSession("127.0.0.1", port_a)
    ada.login("ada", ADMIN_PASSWORD)
    otto_a, otto_b = HttpSession("127.0.0.1", port_a), HttpSession("127.0.0.1", port_b)
    otto_a.login("otto", OTTO_PASSWORD)
    otto_b.login("otto", OTTO_PASSWORD)
    assert logged_in(otto_a) and logged_in(otto_b)

    # 1. An admin resets otto's password on host a's users page: b's session ends too.
    status, _ = post_form(ada, "/users/password", "/users", name="otto", back="/users")
    assert status == 303
    one_time = one_time_password(ada.request("GET", "/users")[2])
    assert "Your password was changed" in sent_to_login_saying(otto_b)
    sent_to_login_saying(otto_a)

    # 2. Otto changes their own password on host b: the session on a ends, b's goes on.
    otto_a.login("otto", one_time)
    assert otto_a.request("GET", "/")[1].get("Location") == "/account/password"
    otto_b.first_login("otto", one_time, "otto's own long password")
    assert logged_in(otto_b)
    sent_to_login_saying(otto_a)
    assert logged_in(otto_b)

    # 3. A password set from the shell on the shared store ends it on both hosts.
    otto_a.login("otto", "otto's own long password")
    assert logged_in(otto_a)
    shell(
        "users", "passwd", "otto", "--password-stdin", "--store", store, password="from the shell"
    )
    sent_to_login_saying(otto_a)
    sent_to_login_saying(otto_b)
    assert logged_in(ada)

    # Each end is in the shared audit trail, whichever host refused the session.
    ended = db.execute(
        "SELECT actor, detail FROM sst_audit WHERE action = 'session ended' ORDER BY id"
    ).fetchall()
    assert [actor for actor, _ in ended] == ["otto"] * 5, ended
    assert all(detail.endswith("from 127.0.0.1") for _, detail in ended)
