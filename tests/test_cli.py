"""The operator CLI against a real manager process, with the documented ``--json`` shapes."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from supervisor.cli.main import main
from supervisor.store.sqlite import SqliteStore
from tests.commands import supervisor
from tests.manager_process import running_manager
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.manager_jobs:cfg"
STATUS_FIELDS = {
    "id",
    "name",
    "description",
    "kind",
    "state",
    "last_started_at",
    "last_completed_at",
    "next_planned_at",
    "last_outcome",
    "last_error",
    "settings",
}
RUN_FIELDS = {
    "run_id",
    "scheduler_id",
    "trigger",
    "triggered_by",
    "started_at",
    "ended_at",
    "outcome",
    "exit_code",
    "signal",
    "error",
}
LOG_FIELDS = {"time", "level", "message", "fields", "run_id", "source"}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_manager(tmp_path_factory.mktemp("cli") / "state", APP) as state:
        yield state


def cli(state: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, [*args, "--state-dir", str(state)])
    assert result.exit_code == code, result.output
    return result.output


def cli_json(state: Path, *args: str) -> Any:
    return json.loads(cli(state, *args, "--json"))


def test_list_and_status_have_the_documented_fields(state_dir: Path) -> None:
    listed = cli_json(state_dir, "list")
    assert [s["id"] for s in listed][:3] == ["m.oneshot", "m.repeat", "m.waiting"]
    for status in listed:
        assert set(status) >= STATUS_FIELDS
    one = cli_json(state_dir, "status", "m.cron")
    assert one["kind"] == "cron"
    assert one["state"] == "paused"
    # Issue 8: status says which containment holds a run's processes together.
    assert one["containment"].startswith(("cgroup v2", "cgroup v1", "process group + marker sweep"))
    assert one["failed_starts"] == 0
    assert one["settings"]["cron"] == "0 3 * * *"
    assert one["next_planned_at"].endswith("+00:00")
    human = cli(state_dir, "status", "m.cron")
    assert "next planned:" in human and "paused" in human
    assert f"containment:    {one['containment']}" in human


def pause_in_zone(state: Path, tz: str, until: str) -> subprocess.CompletedProcess[str]:
    """``supervisor pause m.waiting --until UNTIL`` run with ``TZ=tz``."""
    return subprocess.run(
        supervisor("pause", "m.waiting", "--until", until, "--state-dir", str(state)),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TZ": tz},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_pause_until_a_date_across_a_dst_change_uses_that_dates_offset(
    state_dir: Path,
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    year = datetime.now(UTC).year + 1
    try:
        # One of a winter and a summer date is across a DST change from today.
        for month, offset in ((1, "+01:00"), (7, "+02:00")):
            local = datetime(year, month, 15, 9, 0)
            done = pause_in_zone(state_dir, "Europe/Berlin", local.isoformat(timespec="minutes"))
            assert done.stderr == ""
            assert f"until {year}-{month:02d}-15 09:00 CE" in done.stdout
            decision = cli_json(state_dir, "status", "m.waiting")["decision"]
            until = datetime.fromisoformat(decision["until"])
            assert until == local.replace(tzinfo=berlin), offset
            assert until.astimezone(berlin).isoformat().endswith(offset)
        # A TZ that names no zone: today's offset, and the command says so.
        done = pause_in_zone(state_dir, "CET-1CEST,M3.5.0,M10.5.0/3", "2h")
        assert "local time zone has no name" in done.stderr and "DST" in done.stderr
    finally:
        cli(state_dir, "resume", "m.waiting")


def test_pause_of_a_stopped_scheduler_is_refused_naming_the_stop(state_dir: Path) -> None:
    cli(state_dir, "stop", "m.waiting", "--reason", "ERP")
    try:
        refused = cli(state_dir, "pause", "m.waiting", "--until", "2h", code=9)
        assert "m.waiting is stopped by " in refused
        assert ": ERP — start it first, or the stop stays" in refused
        decision = cli_json(state_dir, "status", "m.waiting")["decision"]
        assert decision["kind"] == "stopped" and decision["reason"] == "ERP"
    finally:
        cli(state_dir, "start", "m.waiting")


def test_execute_runs_and_logs_round_trip(state_dir: Path) -> None:
    # Let the start-up run of the ONE_SHOT finish first.
    wait_for(
        lambda: cli_json(state_dir, "status", "m.oneshot")["state"] == "stopped",
        timeout=20,
        what="the start-up run",
    )
    started = cli_json(state_dir, "execute", "m.oneshot")
    run_id = started["run_id"]

    def finished() -> Any:
        runs = cli_json(state_dir, "runs", "m.oneshot")
        return next((r for r in runs if r["run_id"] == run_id and r["outcome"]), None)

    run = wait_for(finished, timeout=20, what="the executed run")
    assert set(run) >= RUN_FIELDS
    assert run["outcome"] == "succeeded"
    assert run["trigger"] == "manual"
    assert run["triggered_by"] == pwd.getpwuid(os.getuid()).pw_name
    lines = cli(state_dir, "logs", "m.oneshot", "--run", run_id, "--json").splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) == LOG_FIELDS | {"scheduler_id"} for r in records)
    hello = next(r for r in records if r["message"] == "hello")
    assert hello["fields"] == {"n": 1, "who": "world"}
    assert hello["source"] == "logger"
    assert hello["level"] == "info"
    assert any(r["source"] == "stdout" and r["message"] == "plain output" for r in records)
    only_errors = cli(state_dir, "logs", "m.oneshot", "--level", "error", "--json")
    assert only_errors.strip() == ""


def test_execute_during_a_run_is_refused_naming_the_run(state_dir: Path) -> None:
    run_id = cli_json(state_dir, "execute", "m.hang")["run_id"]
    result = CliRunner().invoke(main, ["execute", "m.hang", "--state-dir", str(state_dir)])
    assert result.exit_code == 4
    assert run_id in result.output
    assert "already running" in result.output
    cli(state_dir, "stop", "m.hang")
    wait_for(
        lambda: cli_json(state_dir, "status", "m.hang")["state"] == "stopped",
        timeout=20,
        what="m.hang to stop",
    )
    assert cli_json(state_dir, "runs", "m.hang")[0]["outcome"] == "cancelled"


def test_settings_change_show_and_reset(state_dir: Path) -> None:
    shown = cli_json(
        state_dir, "settings", "m.waiting", "--pause-time", "90s", "--timeout", "1h30m"
    )
    assert shown["effective"]["pause_time"] == 90.0
    assert shown["effective"]["timeout"] == 5400.0
    assert set(shown["overridden"]) == {"pause_time", "timeout"}
    human = cli(state_dir, "settings", "m.waiting")
    assert "1m30s  (overridden)" in human
    reset = cli_json(state_dir, "settings", "m.waiting", "--reset")
    assert reset["overridden"] == []
    assert reset["effective"]["pause_time"] == 3600.0


def test_bad_input_gives_one_line_errors_and_exit_codes(state_dir: Path) -> None:
    bad_duration = CliRunner().invoke(
        main, ["settings", "m.waiting", "--pause-time", "soon", "--state-dir", str(state_dir)]
    )
    assert bad_duration.exit_code == 2
    assert "pause_time" in bad_duration.output
    bad_cron = CliRunner().invoke(
        main, ["settings", "m.cron", "--cron", "99 * * * *", "--state-dir", str(state_dir)]
    )
    assert bad_cron.exit_code == 2
    assert bad_cron.output.startswith("error: cron")
    unknown = CliRunner().invoke(main, ["status", "nope", "--state-dir", str(state_dir)])
    assert unknown.exit_code == 3
    assert unknown.output == "error: no scheduler with id 'nope'\n"
    # A change mixing a valid and an invalid field applies nothing.
    mixed = CliRunner().invoke(
        main,
        [
            "settings",
            "m.cron",
            "--timeout",
            "5m",
            "--cron",
            "99 * * * *",
            "--state-dir",
            str(state_dir),
        ],
    )
    assert mixed.exit_code == 2
    assert mixed.output.startswith("error: cron")
    assert cli_json(state_dir, "settings", "m.cron")["overridden"] == []


def test_no_manager_running_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        supervisor("list", "--state-dir", str(tmp_path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 8
    assert result.stderr.count("\n") == 1
    assert "no manager is running" in result.stderr


def test_next_runs_needs_no_manager_and_prints_offsets() -> None:
    result = CliRunner().invoke(
        main,
        [
            "next-runs",
            "--cron",
            "30 2 * * *",
            "--timezone",
            "America/New_York",
            "--from",
            "2026-03-07T12:00:00+00:00",
            "--count",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    # The 02:30 of the spring-forward day does not exist: it runs once, right after the jump.
    assert json.loads(result.output) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_next_runs_of_a_scheduler_uses_its_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "next-runs",
            "m.cron",
            "--app",
            APP,
            "--from",
            "2026-07-01T00:00:00+00:00",
            "--count",
            "2",
            "--json",
            "--state-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == ["2026-07-01T03:00:00+02:00", "2026-07-02T03:00:00+02:00"]


def test_users_add_list_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "users",
            "add",
            "olga",
            "--role",
            "operator",
            "--password-stdin",
            "--state-dir",
            str(tmp_path),
        ],
        input="s3cret-passphrase\n",
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["users", "list", "--json", "--state-dir", str(tmp_path)])
    assert json.loads(listed.output) == [{"name": "olga", "role": "operator", "disabled": False}]
    assert (
        runner.invoke(main, ["users", "remove", "olga", "--state-dir", str(tmp_path)]).exit_code
        == 0
    )
    missing = runner.invoke(main, ["users", "remove", "olga", "--state-dir", str(tmp_path)])
    assert missing.exit_code == 2
    assert "no user 'olga'" in missing.output
    with SqliteStore.open(tmp_path / "state.db") as store:
        actions = [(e.action, e.detail) for _, e in store.audit()]
    assert actions == [("remove user", "olga"), ("add user", "olga (operator)")]


def test_app_errors_are_clear(tmp_path: Path) -> None:
    result = subprocess.run(
        supervisor(
            "run",
            "--app",
            "tests.apps.no_such_module:cfg",
            "--state-dir",
            str(tmp_path),
            "--no-admin",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 6
    assert "cannot import module" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_corrupt_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    database = state / "state.db"
    garbage = b"this is not a database, but it was somebody's file\n" * 100
    database.write_bytes(garbage)
    result = subprocess.run(
        supervisor("run", "--app", APP, "--state-dir", str(state), "--no-admin"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 7
    assert result.stderr.count("\n") == 1
    assert str(database) in result.stderr
    assert database.read_bytes() == garbage


def test_retention_flags_are_checked(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--app",
            APP,
            "--state-dir",
            str(tmp_path),
            "--no-admin",
            "--max-log-per-run",
            "lots",
        ],
    )
    assert result.exit_code == 2
    assert "--max-log-per-run" in result.output


def test_custom_actions_run_in_a_child_and_report_errors(state_dir: Path) -> None:
    output = cli(state_dir, "action", "m.fail", "count")
    assert output.startswith("42 rows in process ")
    assert int(output.split()[-1]) != os.getpid()
    failed = CliRunner().invoke(main, ["action", "m.fail", "broken", "--state-dir", str(state_dir)])
    assert failed.exit_code == 10
    assert failed.output == "error: RuntimeError: the cache server is down\n"
    missing = CliRunner().invoke(main, ["action", "m.fail", "nope", "--state-dir", str(state_dir)])
    assert missing.exit_code == 3


def test_next_runs_of_a_scheduler_finds_the_app_the_state_directory_ran(state_dir: Path) -> None:
    output = cli(
        state_dir,
        "next-runs",
        "m.cron",
        "--from",
        "2026-07-01T00:00:00+00:00",
        "--count",
        "1",
        "--json",
    )
    assert json.loads(output) == ["2026-07-01T03:00:00+02:00"]


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        supervisor("next-runs", "--cron", "* * * * *", "--count", "0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: Invalid value for '--count'")


def test_users_need_an_existing_database_unless_adding(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["users", "list", "--state-dir", str(tmp_path / "typo")])
    assert missing.exit_code == 7
    assert "no state database" in missing.output
    assert not (tmp_path / "typo").exists()
    bad_name = CliRunner().invoke(
        main, ["users", "add", "bad name!", "--role", "viewer", "--state-dir", str(tmp_path)]
    )
    assert bad_name.exit_code == 2
    assert bad_name.output.startswith("error: name:")


def test_logs_of_a_run_of_another_scheduler_are_refused(state_dir: Path) -> None:
    other = cli_json(state_dir, "runs", "m.oneshot")[0]["run_id"]
    result = CliRunner().invoke(
        main, ["logs", "m.repeat", "--run", other, "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 3
    assert f"run {other} is not a run of m.repeat" in result.output


def test_run_can_trust_a_reverse_proxys_user_header(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    state = tmp_path / "state"
    added = CliRunner().invoke(
        main,
        ["users", "add", "olga", "--role", "viewer", "--password-stdin", "--state-dir", str(state)],
        input="pw-pw-pw-pw-pw\n",
    )
    assert added.exit_code == 0, added.output
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        supervisor(
            "run",
            "--app",
            APP,
            "--state-dir",
            str(state),
            "--admin",
            f"127.0.0.1:{port}",
            "--proxy-user-header",
            "X-Remote-User",
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)

    def get(headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""
        except OSError:
            return 0, ""

    try:
        _, page = wait_for(
            lambda: (answer := get({"X-Remote-User": "olga"}))[0] == 200 and answer,
            timeout=30,
            what="the Admin Center",
        )
        assert "olga" in page
        assert get({})[0] == 303  # no header: the login page
        assert get({"X-Remote-User": "mallory"})[0] == 303  # not a user
    finally:
        process.terminate()
        process.wait(30)


HEAVY_LIBRARIES = ("croniter", "dateutil", "jinja2", "bottle")


def test_socket_only_commands_import_no_heavy_libraries(state_dir: Path) -> None:
    # croniter and dateutil alone were ~45 ms of a 150 ms `supervisor list`.
    script = "\n".join(
        [
            "import sys",
            "from supervisor.cli.main import main",
            f"state = {str(state_dir)!r}",
            "for args in (['list'], ['status', 'm.cron'], ['runs', 'm.cron'],",
            "             ['logs', 'm.cron'], ['settings', 'm.cron'], ['start', 'm.cron'],",
            "             ['stop', 'no.such'], ['action', 'no.such', 'x'], ['list', '--json']):",
            "    try:",
            "        main([*args, '--state-dir', state], standalone_mode=False)",
            "    except SystemExit:",
            "        pass",
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_LIBRARIES!r})))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "m.cron" in result.stdout  # the commands did talk to the manager
    assert result.stdout.splitlines()[-1] == "[]"
