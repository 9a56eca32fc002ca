"""The fork server's command line (``forkserver.parse_args``): what the launcher passes,
and a clear exit for anything else."""

from __future__ import annotations

import pytest

from supervisor.runs.forkserver import Arguments, parse_args


def test_the_launchers_arguments_are_read() -> None:
    argv = ["--socket-fd", "7", "--app", "m:cfg", "--parent", "42"]
    assert parse_args(argv) == Arguments(socket_fd=7, app="m:cfg", parent=42)
    more = [*argv, "--path", "/a", "--probe-cgroup", "/sys/fs/cgroup/x", "--path", "/b"]
    assert parse_args(more) == Arguments(
        socket_fd=7, app="m:cfg", parent=42, path=("/a", "/b"), probe_cgroup="/sys/fs/cgroup/x"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--app", "m:cfg", "--parent", "1"], "missing --socket-fd"),
        (["--socket-fd", "x", "--app", "m", "--parent", "1"], "--socket-fd: not an integer: 'x'"),
        (["--socket-fd", "3", "--app", "m", "--parent", "1", "--bogus", "1"], "'--bogus'"),
        (["--socket-fd", "3", "--app", "m", "--parent"], "--parent needs a value"),
        (["--socket-fd", "3", "--app", "m", "--app", "n", "--parent", "1"], "--app given twice"),
    ],
)
def test_a_bad_command_line_exits_2_naming_the_problem(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        parse_args(argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("supervisor fork server: ") and said in err
