"""What a test needs from the machine, and what a test does when it is not there.

A test that needs a program the Python packages do not bring (PostgreSQL's server
binaries, Chromium, axe-core, systemd) calls ``skip_or_fail(need, missing)`` with the
reason that program is missing (or None). On a developer's machine the test skips with
that reason. Where ``SCHED_SUPERVISOR_TESTS_REQUIRE`` names the need (a comma-separated
list; ``.ci/run`` sets it for what it installed), the test fails instead, naming what is
missing and how to install it: in CI a skip would hide a broken install.

A test module that imports a Python package a need brings (``MODULES``: psycopg) needs no
guard of its own: where that import finds no such package, ``RequiredModule`` (the
collector tests/conftest.py makes for every test module) passes the module's import
through ``skip_or_fail`` the same way, so the whole module skips, or fails where required.

Imports pytest and the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType

import pytest

VARIABLE = "SCHED_SUPERVISOR_TESTS_REQUIRE"

#: Each need, and how to install it on Debian 12.
INSTALL: Mapping[str, str] = {
    "postgresql": "apt-get install postgresql-15 (initdb and pg_ctl in "
    "/usr/lib/postgresql/15/bin; as root also a 'postgres' OS user) and "
    "pip install 'sched-supervisor[postgresql]'",
    "browser": "apt-get install chromium (/usr/bin/chromium) and pip install -e '.[browser]' "
    "(never `playwright install`)",
    "axe": "npm ci --prefix tests (axe-core, pinned by tests/package-lock.json)",
    "systemd": "apt-get install systemd util-linux mount, and run the tests as root "
    "(a systemd booted in a private namespace needs unshare)",
    "systemd-analyze": "apt-get install systemd",
    "pgbouncer": "apt-get install pgbouncer (/usr/sbin/pgbouncer; the tests start their own)",
    "debian-python": "apt-get install python3-setuptools (Debian 12's /usr/bin/python3 builds "
    "the package)",
}

#: Python packages a test module may import at its top, and the need that brings each.
MODULES: Mapping[str, str] = {"psycopg": "postgresql"}


def required(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The needs ``SCHED_SUPERVISOR_TESTS_REQUIRE`` names (none when it is unset or empty).

    Raises ValueError naming a need it does not know (a typo would make it a skip again).
    """
    names = frozenset(part.strip() for part in environ.get(VARIABLE, "").split(",")) - {""}
    unknown = sorted(names - INSTALL.keys())
    if unknown:
        raise ValueError(
            f"{VARIABLE} names unknown needs: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(INSTALL))})"
        )
    return names


def failure_message(need: str, missing: str, environ: Mapping[str, str] = os.environ) -> str:
    """What a required but missing need's test says: what is missing, how to install it."""
    return (
        f"{need} is required here ({VARIABLE}={environ.get(VARIABLE, '')}) but missing: "
        f"{missing}; install it: {INSTALL[need]}"
    )


def skip_or_fail(
    need: str,
    missing: str | None,
    *,
    environ: Mapping[str, str] = os.environ,
    module_level: bool = False,
) -> None:
    """Return when ``missing`` is None; else skip the test with ``missing`` as the reason,
    or fail it (``pytest.fail``) when ``need`` is required. ``module_level``: called while
    a test module is imported, so the skip is the whole module's.

    Raises KeyError for a need that is not in ``INSTALL``.
    """
    hint = INSTALL[need]  # a need without an install hint is a mistake at the call site
    if missing is None:
        return
    if need in required(environ):
        pytest.fail(failure_message(need, missing, environ), pytrace=False)
    pytest.skip(f"{missing} (to run it: {hint})", allow_module_level=module_level)


def missing_module(error: BaseException | None) -> str | None:
    """The ``MODULES`` package whose absence ``error`` (what a test module's import raised,
    or what caused it) reports, or None for any other error."""
    while error is not None and not isinstance(error, ModuleNotFoundError):
        error = error.__cause__
    if error is None or error.name is None:
        return None
    top = error.name.partition(".")[0]
    return top if top in MODULES else None


class RequiredModule(pytest.Module):
    """A test module whose import, where it meets a missing ``MODULES`` package, goes
    through ``skip_or_fail`` with that package's need: skipped, or failed where required.
    Every other import error stays the collection error it is."""

    def _getobj(self) -> ModuleType:
        try:
            module: ModuleType = super()._getobj()
        except pytest.Collector.CollectError as error:
            package = missing_module(error)
            if package is None:
                raise
        else:
            return module
        # (Outside the except clause: the skip or failure says only what is missing.)
        skip_or_fail(
            MODULES[package],
            f"{self.path.name} imports {package}, which is not installed",
            module_level=True,
        )
        raise AssertionError("skip_or_fail returned for a missing package")
