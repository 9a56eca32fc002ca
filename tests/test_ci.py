"""Tests for .ci/run: a failing check never hides the ones after it, and fails the run; what
CI installed is required (tests/required.py), so a test that would skip without it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.required import INSTALL, VARIABLE, required, skip_or_fail

REPO = Path(__file__).resolve().parent.parent
CI_RUN = REPO / ".ci" / "run"


def steps_script() -> str:
    text = CI_RUN.read_text()
    begin = text.index("# -- steps: begin")
    end = text.index("# -- steps: end")
    return text[begin:end]


def test_every_step_runs_after_a_failure_and_the_failures_are_named() -> None:
    script = f"""set -euo pipefail
{steps_script()}
step first false
step second sh -c 'echo second ran'
step third sh -c 'exit 3'
echo "failed:$failed"
"""
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "second ran" in result.stdout
    assert "== third: FAILED (exit 3)" in result.stdout
    assert result.stdout.rstrip().endswith("failed: first third")


def test_the_debian_run_and_the_deb_tests_are_steps_and_the_end_fails_on_any() -> None:
    text = CI_RUN.read_text()
    assert "step pytest .venv/bin/pytest\n" in text
    assert "step debian-deps bash packaging/test-debian-deps.sh\n" in text
    assert "step deb .venv/bin/pytest -m deb\n" in text
    tail = text[text.index("# -- steps: end") :]
    assert 'if [ -n "$failed" ]; then' in tail and "exit 1" in tail


# -- what the tests skip without fails them in CI (tests/required.py) ----------------------


def require_script() -> str:
    text = CI_RUN.read_text()
    return text[text.index("# -- require: begin") : text.index("# -- require: end")]


def ci_requires(*, root: bool, tmp_path: Path) -> str:
    """What the require part of .ci/run exports, as root with apt-get or as another user."""
    fake_bin = tmp_path / ("root" if root else "user")
    fake_bin.mkdir()
    (fake_bin / "id").write_text(f"#!/bin/sh\necho {0 if root else 1000}\n")
    (fake_bin / "apt-get").write_text("#!/bin/sh\nexit 0\n")
    for program in fake_bin.iterdir():
        program.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    env["PATH"] = f"{fake_bin}:/usr/bin:/bin"
    script = f'set -euo pipefail\n{require_script()}\necho "${VARIABLE}"\n'
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def test_ci_requires_what_it_installed_and_systemd_only_as_root(tmp_path: Path) -> None:
    as_root = ci_requires(root=True, tmp_path=tmp_path)
    assert required({VARIABLE: as_root}) == set(INSTALL)  # every need, each one known
    assert required({VARIABLE: ci_requires(root=False, tmp_path=tmp_path)}) == {"axe"}
    text = CI_RUN.read_text()
    assert text.index("# -- require: end") < text.index("step pytest .venv/bin/pytest\n")


def test_a_variable_set_before_ci_is_kept_even_empty(tmp_path: Path) -> None:
    for preset in ("", "postgresql"):
        env = {**os.environ, VARIABLE: preset}
        script = f'set -euo pipefail\n{require_script()}\necho "[${VARIABLE}]"\n'
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=env, check=False
        )
        assert done.stdout.strip() == f"[{preset}]"


def test_without_the_variable_a_missing_program_skips_with_its_reason() -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        skip_or_fail("postgresql", "initdb is missing", environ={})
    assert "initdb is missing" in str(skipped.value)
    assert "apt-get install postgresql-15" in str(skipped.value)
    skip_or_fail("postgresql", None, environ={VARIABLE: "postgresql"})  # present: runs


def test_with_the_variable_a_missing_program_fails_naming_it_and_its_install() -> None:
    environ = {VARIABLE: "browser, axe"}
    with pytest.raises(pytest.fail.Exception) as failed:
        skip_or_fail("axe", "tests/node_modules/axe-core/axe.min.js is missing", environ=environ)
    message = str(failed.value)
    assert message.startswith(f"axe is required here ({VARIABLE}=browser, axe) but missing: ")
    assert "axe.min.js is missing" in message and "npm ci --prefix tests" in message
    with pytest.raises(pytest.skip.Exception):  # not named: still a skip
        skip_or_fail("systemd", "unshare is not permitted here", environ=environ)


def test_an_unknown_need_is_refused_rather_than_skipped() -> None:
    with pytest.raises(ValueError, match=r"unknown needs: chromium \(known: axe, browser, "):
        required({VARIABLE: "chromium,postgresql"})
    with pytest.raises(KeyError):
        skip_or_fail("chromium", None)
    assert required({VARIABLE: " , "}) == frozenset()


def run_pytest(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != VARIABLE}
    environ.update(env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )


def test_a_skip_site_fails_the_run_only_where_required(tmp_path: Path) -> None:
    (tmp_path / "test_site.py").write_text(
        "from tests.required import skip_or_fail\n\n\n"
        "def test_needs_a_cluster() -> None:\n"
        '    skip_or_fail("postgresql", "no initdb in /nowhere")\n'
    )
    skipped = run_pytest(tmp_path)
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout and "no initdb in /nowhere" in skipped.stdout
    failed = run_pytest(tmp_path, **{VARIABLE: "postgresql"})
    assert failed.returncode == 1, failed.stdout
    assert "1 failed" in failed.stdout
    assert "postgresql is required here" in failed.stdout
    assert "apt-get install postgresql-15" in failed.stdout


def test_the_suite_refuses_to_start_on_a_misspelt_need() -> None:
    done = run_pytest(REPO, "--collect-only", "-q", "tests/test_ci.py", **{VARIABLE: "postgres"})
    assert done.returncode == 4, done.stdout + done.stderr  # a usage error
    assert "unknown needs: postgres" in done.stderr
