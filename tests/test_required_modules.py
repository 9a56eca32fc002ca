"""A test module importing psycopg where it is missing: the whole module skips, or fails
where ``SCHED_SUPERVISOR_TESTS_REQUIRE`` names postgresql (tests/required.py's
``RequiredModule``, the collector tests/conftest.py makes), and any other import error
stays a collection error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.required import VARIABLE, missing_module

REPO = Path(__file__).resolve().parent.parent

# psycopg made missing in the run (``import psycopg`` raises ModuleNotFoundError), and the
# suite's collector in use.
CONFTEST = (
    "import sys\n\n"
    'sys.modules["psycopg"] = None\n\n'
    "from tests.conftest import pytest_pycollect_makemodule  # noqa: E402, F401\n"
)
USES_PSYCOPG = "import psycopg.conninfo\n\n\ndef test_connects() -> None:\n    assert psycopg\n"


def run_pytest(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != VARIABLE}
    environ.update(env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", str(directory)],
        cwd=directory,
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )


def suite(tmp_path: Path, **modules: str) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name, text in modules.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def test_a_module_importing_a_missing_psycopg_skips_naming_it_and_its_install(
    tmp_path: Path,
) -> None:
    ran = run_pytest(
        suite(tmp_path, test_site=USES_PSYCOPG, test_other="def test_runs() -> None:\n    pass\n")
    )
    assert ran.returncode == 0, ran.stdout
    assert "1 passed, 1 skipped" in ran.stdout
    assert "test_site.py imports psycopg, which is not installed" in ran.stdout
    assert "pip install 'sched-supervisor[postgresql]'" in ran.stdout


def test_where_postgresql_is_required_a_missing_psycopg_fails_the_run(tmp_path: Path) -> None:
    ran = run_pytest(suite(tmp_path, test_site=USES_PSYCOPG), **{VARIABLE: "postgresql"})
    assert ran.returncode != 0, ran.stdout
    assert "1 error" in ran.stdout and "skipped" not in ran.stdout
    assert "postgresql is required here" in ran.stdout
    assert "test_site.py imports psycopg, which is not installed" in ran.stdout
    assert "During handling" not in ran.stdout  # what is missing, not a traceback chain


def test_another_missing_module_stays_a_collection_error(tmp_path: Path) -> None:
    ran = run_pytest(suite(tmp_path, test_site="import no_such_module_here\n"))
    assert ran.returncode != 0, ran.stdout
    assert "1 error" in ran.stdout and "skipped" not in ran.stdout
    assert "No module named 'no_such_module_here'" in ran.stdout


def test_only_a_missing_needed_package_is_named() -> None:
    missing = ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
    assert missing_module(missing) == "psycopg"
    wrapped = RuntimeError("import failed")
    wrapped.__cause__ = ModuleNotFoundError(name="psycopg.pq")
    assert missing_module(wrapped) == "psycopg"
    assert missing_module(ModuleNotFoundError(name="psycopgx")) is None
    assert missing_module(ImportError("no pq wrapper available", name="psycopg")) is None
    assert missing_module(None) is None
