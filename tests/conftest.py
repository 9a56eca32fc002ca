"""Fixtures shared across test modules, and a check of ``SCHED_SUPERVISOR_TESTS_REQUIRE``
(tests/required.py) before any test runs."""

from __future__ import annotations

import shutil

import pytest

from tests.launching import launcher
from tests.required import required, skip_or_fail
from tests.systemd_ns import systemd_namespace

__all__ = ["launcher", "systemd_analyze", "systemd_namespace"]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to start with a need the variable misspells: it would skip again, silently."""
    try:
        required()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from error


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The path of ``systemd-analyze`` (skipped, or failed where required, without it)."""
    found = shutil.which("systemd-analyze")
    skip_or_fail("systemd-analyze", None if found else "systemd-analyze is not installed")
    assert found is not None
    return found
