"""``store.dsn`` and the descriptions built on it: a connection string's password never
reaches a message, also one with an unencoded ``@`` (which libpq takes for the host), in a
query, or in a key=value string."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.store.dsn import passwords, redacted
from supervisor.store.postgres.opening import describe
from tests.postgres import free_port

ROOT = Path(__file__).resolve().parent.parent

CASES = [  # (dsn, without its password, the secret part of it)
    ("postgresql://u:p@ss9word@127.0.0.1:1/db", "postgresql://u@127.0.0.1:1/db", "ss9word"),
    ("postgres://u:a@b@c@h/db?x=@y", "postgres://u@h/db?x=@y", "a@b@c"),
    ("postgresql://u:p%zzsecret@host/db", "postgresql://u@host/db", "zzsecret"),
    ("postgresql://u:s3cret@h", "postgresql://u@h", "s3cret"),
    ("postgresql://h/db?password=s3cret&x=1", "postgresql://h/db?password=***&x=1", "s3cret"),
    ("host=h user=u password=s3cret dbname=d", "host=h user=u password=*** dbname=d", "s3cret"),
    ("host=h password='a\\' s3cret' dbname=d", "host=h password=*** dbname=d", "s3cret"),
]


@pytest.mark.parametrize(("dsn", "clean", "secret"), CASES)
def test_the_password_is_taken_out(dsn: str, clean: str, secret: str) -> None:
    assert redacted(dsn) == clean
    assert any(secret in found for found in passwords(dsn))
    assert secret not in describe(dsn)


def test_a_url_with_an_at_sign_in_its_password_is_described_by_its_host() -> None:
    assert describe("postgresql://u:p@ss9word@127.0.0.1:1/db") == (
        "PostgreSQL database u@127.0.0.1:1/db"
    )
    assert describe("postgresql://u:p%zzsecret@host/db") == "PostgreSQL database u@host/db"


def test_strings_without_passwords_stay() -> None:
    for dsn in ("postgresql://u@h/db", "postgresql://h", "host=h dbname=d"):
        assert redacted(dsn) == dsn
        assert passwords(dsn) == []


def run_cluster(tmp_path: Path, dsn: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``supervisor run --cluster DSN`` of an empty app; the process and its output."""
    (tmp_path / "demoapp.py").write_text(
        "from supervisor import Configurator\napp = Configurator('d')\n"
    )
    argv = [sys.executable, "-m", "supervisor", "run", "--app", "demoapp:app"]
    argv += ["--state-dir", str(tmp_path / "state"), "--cluster", dsn]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done, done.stdout + done.stderr


def test_run_cluster_with_a_bad_percent_encoding_is_a_clear_error(tmp_path: Path) -> None:
    """Regression: a traceback quoting the password (psycopg's "invalid percent-encoded
    token")."""
    done, output = run_cluster(tmp_path, f"postgresql://u:p%zzsecret@127.0.0.1:{free_port()}/db")
    assert done.returncode == 7, output
    assert "Traceback" not in output and "zzsecret" not in output
    assert "as the cluster database: invalid connection string" in output


@pytest.mark.parametrize(
    "query", ["?call_timeout=30s", "?sslmode=disable&call_timeout=2m&connect_timeout=3"]
)
def test_regression_run_cluster_with_a_call_timeout_names_it(tmp_path: Path, query: str) -> None:
    """Regression: ``--cluster`` with the store's ``?call_timeout=`` said "invalid
    connection string (check its quoting and %-encoding)": libpq knows no such parameter.
    The error names it and says what bounds the cluster's calls instead."""
    dsn = f"postgresql://u:secretword@127.0.0.1:{free_port()}/db{query}"
    done, output = run_cluster(tmp_path, dsn)
    assert done.returncode == 7, output
    assert "Traceback" not in output and "secretword" not in output
    assert "invalid connection string" not in output
    assert "call_timeout is a parameter of --store URLs only" in output
    assert "leave call_timeout out of --cluster" in output
