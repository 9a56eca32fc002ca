"""Fixtures shared across test modules, a check of ``SCHED_SUPERVISOR_TESTS_REQUIRE``
(tests/required.py) before any test runs, and the collector that skips (or fails, where
required) a test module importing a package a need brings, psycopg, where it is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.launching import launcher
from tests.required import RequiredModule, required, skip_or_fail
from tests.systemd_ns import systemd_namespace

__all__ = ["launcher", "systemd_analyze", "systemd_namespace"]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to start with a need the variable misspells: it would skip again, silently."""
    try:
        required()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from error


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module:
    """Every test module as a ``RequiredModule`` (pytest's own ``Module`` otherwise)."""
    module: pytest.Module = RequiredModule.from_parent(parent, path=module_path)
    return module


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The path of ``systemd-analyze`` (skipped, or failed where required, without it)."""
    found = shutil.which("systemd-analyze")
    skip_or_fail("systemd-analyze", None if found else "systemd-analyze is not installed")
    assert found is not None
    return found
