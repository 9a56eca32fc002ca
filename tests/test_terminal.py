"""What a run wrote reaches the operator's terminal shown, never obeyed: the pure
function, and ``supervisor logs`` against a real manager (``--json`` stays exact)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from supervisor.cli.terminal import log_line, printable
from tests.apps.misbehave import TERMINAL_TRICKS
from tests.manager_process import cli, running_manager
from tests.waiting import wait_for


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # OSC window title
        ("\x1b[2J\x1bc", "\\x1b[2J\\x1bc"),  # clear screen, reset
        ("fake\rreal", "fake\\x0dreal"),  # a bare CR would rewrite the line
        ("\x00\x08\x0b\x0c\x7f", "\\x00\\x08\\x0b\\x0c\\x7f"),
        ("\x9b31m \x85 \x9d", "\\x9b31m \\x85 \\x9d"),  # C1: CSI, NEL, OSC
        ("a\tb", "a\tb"),
        ("\u202eabc\u2066", "\\u202eabc\\u2066"),  # bidi override and isolate
        ("\ud800", "\\ud800"),  # a lone surrogate cannot even be encoded
        ("one\ntwo\r\nthree", "one\n    two\n    three"),
    ],
)
def test_printable_shows_every_control_character(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_leaves_no_control_character_at_all() -> None:
    everything = "".join(chr(c) for c in range(0x20000) if c != 0x0A)
    out = printable(everything)
    assert not [c for c in out if (ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) <= 0x9F]
    out.encode("utf-8")  # no lone surrogates left


def test_log_line_cleans_message_fields_level_and_source() -> None:
    record = {
        "time": "t",
        "level": "info\x1b",
        "source": "logger\r",
        "message": "hi\x1b]2;x\x07\nnext",
        "fields": {"k\x1b": "v\x9b", "n": 1},
    }
    assert log_line(record, when="12:00") == (
        '12:00 INFO\\x1b [logger\\x0d] hi\\x1b]2;x\\x07\n    next  k\\x1b="v\\x9b" n=1'
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("terminal") / "state"
    with running_manager(state, "tests.apps.misbehave:cfg", check_exit=False):
        yield state


def test_regression_logs_text_shows_terminal_escapes_and_json_keeps_them(
    state_dir: Path,
) -> None:
    # Before: the OSC title, ESC c, CR and CSI reached the operator's terminal as they were.
    run_id = json.loads(cli(state_dir, "execute", "terminal-tricks", "--json"))["run_id"]

    def ended() -> bool:
        runs = json.loads(cli(state_dir, "runs", "terminal-tricks", "--json"))
        return any(r["run_id"] == run_id and r["outcome"] == "succeeded" for r in runs)

    wait_for(ended, timeout=30, what="the run to end")
    text = cli(state_dir, "logs", "terminal-tricks", "--run", run_id)
    assert not [c for c in text if (ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) <= 0x9F]
    assert "\u202e" not in text
    shown = printable(TERMINAL_TRICKS)
    lines = text.splitlines()
    assert any(
        line.endswith(
            f"[logger] {shown}  trick={printable(json.dumps(TERMINAL_TRICKS, ensure_ascii=False))}"
        )
        for line in lines
    )
    assert any(line.endswith(f"[stdout] {shown}") for line in lines)
    exact = [
        json.loads(line)
        for line in cli(
            state_dir, "logs", "terminal-tricks", "--run", run_id, "--json"
        ).splitlines()
    ]
    assert [r["message"] for r in exact if r["source"] in ("logger", "stdout")] == [
        TERMINAL_TRICKS,
        TERMINAL_TRICKS,
    ]
    assert next(r for r in exact if r["source"] == "logger")["fields"] == {"trick": TERMINAL_TRICKS}


def no_control_characters(text: str) -> bool:
    return (
        not [c for c in text if (ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) <= 0x9F]
        and "\u202e" not in text
    )


def test_regression_status_runs_and_actions_show_terminal_escapes(state_dir: Path) -> None:
    """Before: a run's error in status and runs, and an action's result or error, reached
    the terminal as they were."""
    run_id = json.loads(cli(state_dir, "execute", "terminal-tricks-fail", "--json"))["run_id"]

    def ended() -> bool:
        runs = json.loads(cli(state_dir, "runs", "terminal-tricks-fail", "--json"))
        return any(r["run_id"] == run_id and r["outcome"] == "failed" for r in runs)

    wait_for(ended, timeout=30, what="the run to fail")
    status = cli(state_dir, "status", "terminal-tricks-fail")
    runs = cli(state_dir, "runs", "terminal-tricks-fail")
    result = cli(state_dir, "action", "terminal-tricks-fail", "tricks")
    failed = CliRunner().invoke(
        main, ["action", "terminal-tricks-fail", "tricks-fail", "--state-dir", str(state_dir)]
    )
    assert failed.exit_code != 0
    for text in (status, runs, result, failed.output):
        assert no_control_characters(text), repr(text)
    assert "\\x1b]0;owned\\x07title" in result
    assert "\\x1b]0;owned" in failed.output
