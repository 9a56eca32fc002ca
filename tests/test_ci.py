"""Tests for .ci/run: a failing check never hides the ones after it, and fails the run."""

from __future__ import annotations

import subprocess
from pathlib import Path

CI_RUN = Path(__file__).resolve().parent.parent / ".ci" / "run"


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
