"""Admin Center sessions end when their account changes, wherever the change is made.

Real programs throughout: a manager (``supervisor run --admin``) serving the Admin
Center over HTTP, the ``supervisor users`` CLI as a separate process on the same state
directory (no manager needed, its own store connection), . A password or a disable
set from the shell ends the user's sessions at their next request, which lands on the
login page saying why; a role change
keeps them and holds from the next request; every end is in the audit trail. (The
cluster's two Admin Centers: tests/test_cluster_sessions.py.)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.commands import ROOT, supervisor
from tests.http_session import HttpSession, bootstrap_password
from tests.postgres import free_port
from tests.waiting import end_process, wait_for

ENDED = "Your session ended because your account changed"
ADMIN_PASSWORD = "the admin's long password"
OTTO_PASSWORD = "otto's first long password"


def shell(*args: str, password: str | None = None) -> str:
    """``supervisor ARGS`` as its own process (a password on standard input); it must
    succeed. Its output."""
    done = subprocess.run(
        supervisor(*args),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@contextmanager
def admin_center(state: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A manager serving the Admin Center on ``port`` until the block ends."""
    log = state.parent / f"{state.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            supervisor(
                "run",
                "--app",
                "tests.apps.manager_jobs:cfg",
                "--state-dir",
                str(state),
                "--admin",
                f"127.0.0.1:{port}",
                "--grace",
                "500ms",
            ),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: (state / "admin-password").exists() or process.poll() is not None,
            timeout=60,
            what="the Admin Center's first start",
        )
        assert process.poll() is None, log.read_text(errors="replace")
        wait_for(lambda: answers(port), timeout=30, what="the Admin Center answering")
        yield process
    finally:
        end_process(process)
    assert "Traceback" not in log.read_text(errors="replace")


def answers(port: int) -> bool:
    try:
        HttpSession("127.0.0.1", port, timeout=2).request("GET", "/login")
    except OSError:
        return False
    return True


def sent_to_login_saying(client: HttpSession, path: str = "/") -> str:
    """The request with the client's cookie goes to the login page; that page's text."""
    status, headers, body = client.request("GET", path)
    assert status == 303, (status, body[:300])
    location = headers.get("Location", "")
    assert location.startswith("/login?next="), location
    status, _, page = client.request("GET", location)
    assert status == 200 and 'action="/login"' in page
    assert ENDED in page, page
    return page


def logged_in(client: HttpSession, path: str = "/") -> bool:
    return client.request("GET", path)[0] == 200


def post_form(client: HttpSession, path: str, page: str, **form: str) -> tuple[int, str]:
    status, _, body = client.request("POST", path, {"csrf": client.csrf(page), **form})
    return status, body


def test_regression_a_password_set_with_the_cli_ends_the_running_admin_centers_sessions(
    tmp_path: Path,
) -> None:
    """Regression: ``supervisor users passwd`` changed the stored hash only; the session
    made with the old password went on in the manager's memory."""
    state, port = tmp_path / "state", free_port()
    with admin_center(state, port):
        admin = HttpSession("127.0.0.1", port)
        admin.first_login("admin", bootstrap_password(state), ADMIN_PASSWORD)
        where = ("--state-dir", str(state))
        shell("users", "add", "otto", "--role", "operator", "--password-stdin", *where,
              password=OTTO_PASSWORD)  # fmt: skip
        otto = HttpSession("127.0.0.1", port)
        otto.login("otto", OTTO_PASSWORD)
        assert logged_in(otto)

        shell("users", "passwd", "otto", "--password-stdin", *where, password="otto's new one")
        page = sent_to_login_saying(otto, "/schedulers/m.hang")
        assert "Your password was changed" in page
        assert not logged_in(otto)  # ended for good, not once
        assert logged_in(admin)  # other users' sessions go on

        # A role change keeps the session and holds from the next request on.
        otto.login("otto", "otto's new one")
        assert logged_in(otto, "/audit")
        assert "otto is now viewer" in shell("users", "role", "otto", "viewer", *where)
        assert otto.request("GET", "/audit")[0] == 403
        assert logged_in(otto)

        # A disable from the shell ends it too, saying so.
        shell("users", "disable", "otto", *where)
        assert "Your account was disabled" in sent_to_login_saying(otto)

        _, _, audit = admin.request("GET", "/audit?action=session+ended")
        assert audit.count("session ended") >= 2, audit
        assert "the password was changed or the user disabled since the login" in audit
        assert "user disabled, from 127.0.0.1" in audit
