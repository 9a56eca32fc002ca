"""``supervisor logs`` against a real manager process: search filters, line counts, short
run IDs, run separators, and Ctrl-C ending ``--follow`` (a real SIGINT)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli.client import ControlClient
from supervisor.cli.main import main
from supervisor.core.errors import DefinitionError
from tests.commands import supervisor
from tests.manager_process import running_manager
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.manager_jobs:cfg"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_manager(tmp_path_factory.mktemp("cli-logs") / "state", APP) as state:
        wait_for(
            lambda: "hello" in run_cli(state, "logs", "m.oneshot").output,
            timeout=20,
            what="the one-shot's records",
        )
        yield state


def run_cli(state: Path, *args: str) -> Any:
    return CliRunner().invoke(main, [*args, "--state-dir", str(state)])


def records(state: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli(state, "logs", *args, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_lines_counts_the_newest_records(state_dir: Path) -> None:
    wait_for(lambda: len(records(state_dir, "m.repeat", "-n", "5")) == 5, what="five ticks")
    newest = records(state_dir, "m.repeat", "--lines", "3")
    assert len(newest) == 3
    assert {r["scheduler_id"] for r in newest} == {"m.repeat"}
    refused = run_cli(state_dir, "logs", "m.repeat", "-n", "0")
    assert refused.exit_code == 2
    assert "0 shows nothing without --follow" in refused.output


def test_grep_and_field_search_every_scheduler(state_dir: Path) -> None:
    found = records(state_dir, "--grep", "HELLO")
    assert [(r["scheduler_id"], r["message"]) for r in found][:1] == [("m.oneshot", "hello")]
    by_field = records(state_dir, "--field", "who=world", "--field", "n=1")
    assert by_field and all(r["fields"] == {"n": 1, "who": "world"} for r in by_field)
    assert records(state_dir, "--field", "who=nobody") == []
    bad = run_cli(state_dir, "logs", "--field", "who")
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output


def test_since_and_until_take_iso_times_and_durations_ago(state_dir: Path) -> None:
    assert records(state_dir, "m.oneshot", "--since", "1h")
    assert records(state_dir, "m.oneshot", "--until", "1h") == []
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert records(state_dir, "m.oneshot", "--since", later) == []
    local = (datetime.now(UTC).astimezone() - timedelta(hours=1)).replace(tzinfo=None)
    assert records(state_dir, "m.oneshot", "--since", local.isoformat(timespec="seconds"))
    bad = run_cli(state_dir, "logs", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_errors_of_every_scheduler_in_the_last_hour(state_dir: Path) -> None:
    run_id = json.loads(run_cli(state_dir, "execute", "m.fail", "--json").output)["run_id"]
    errors = wait_for(
        lambda: records(state_dir, "--level", "error", "--since", "1h"), what="the failure"
    )
    assert {r["scheduler_id"] for r in errors} == {"m.fail"}
    assert any(r["run_id"] == run_id and "nothing to do today" in r["message"] for r in errors)


def test_run_takes_a_short_id_and_refuses_an_ambiguous_one(state_dir: Path) -> None:
    def runs() -> list[dict[str, Any]]:
        return json.loads(run_cli(state_dir, "runs", "m.repeat", "--json").output)

    # 17 runs: two of them share a first hex digit
    wait_for(lambda: len(runs()) >= 17, timeout=30, what="17 runs of m.repeat")
    listed = [r["run_id"] for r in runs()]
    run_id = listed[1]
    mine = records(state_dir, "m.repeat", "--run", run_id[:8])
    assert mine and {r["run_id"] for r in mine} == {run_id}
    across = records(state_dir, "--run", run_id[:8])  # no scheduler named
    assert {r["run_id"] for r in across} == {run_id}
    first, _ = collections.Counter(r[0] for r in listed).most_common(1)[0]
    ambiguous = run_cli(state_dir, "logs", "m.repeat", "--run", first)
    assert ambiguous.exit_code == 2
    assert (
        f"'{first}' is the start of" in ambiguous.output and "give more of it" in ambiguous.output
    )
    unknown = run_cli(state_dir, "logs", "m.repeat", "--run", "zzzz")
    assert unknown.exit_code == 3 and "zzzz" in unknown.output


def test_a_line_marks_where_each_run_begins(state_dir: Path) -> None:
    wait_for(lambda: len(records(state_dir, "m.repeat", "-n", "4")) == 4, what="four ticks")
    found = records(state_dir, "m.repeat", "-n", "4")
    text = run_cli(state_dir, "logs", "m.repeat", "-n", "4").output.splitlines()
    separators = [line for line in text if line.startswith("── run ")]
    assert len(separators) == len({r["run_id"] for r in found}) >= 2
    assert all("· m.repeat · schedule, started " in line for line in separators)
    assert text[0].startswith("── run ")
    assert len(text) == 4 + len(separators)


def test_ctrl_c_ends_follow_quietly(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            supervisor("logs", "m.repeat", "--follow", "-n", "0", "--state-dir", str(state_dir)),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.PIPE,
        )
    try:
        # only new records: m.repeat ticks every 200 ms
        wait_for(lambda: "tick" in out.read_text(), timeout=20, what="a followed record")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
        assert process.stderr is not None
        assert process.stderr.read() == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert out.read_text().splitlines()[0].startswith("── run ")


def test_the_search_op_refuses_arguments_that_do_not_read(state_dir: Path) -> None:
    control = ControlClient(state_dir)
    try:
        for args, name in (
            ({"since": "2026-03-01T12:00"}, "since"),  # no offset: ambiguous on the wire
            ({"until": 5}, "until"),
            ({"fields": [["n"]]}, "fields"),
            ({"fields": [["", "1"]]}, "fields"),
            ({"text": 7}, "text"),
        ):
            with pytest.raises(DefinitionError, match=name):
                control.call("search", **args)
        answer = control.call("search", text="hello", fields=[["who", "world"]], limit=5)
        assert [r["message"] for r in answer["records"]] == ["hello"] * len(answer["records"])
        assert {r["scheduler_id"] for r in answer["records"]} == {"m.oneshot"}
        assert set(answer["runs"]) == {r["run_id"] for r in answer["records"]}
    finally:
        control.close()
