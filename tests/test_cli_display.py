"""The CLI's display rules as pure functions: zones on every time, spans, colours only
where wanted, and tables that fit a width; and the man page's exit statuses."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest

from supervisor.cli.display import Display, ago, fit, span, wants_color
from supervisor.core import errors

ROOT = Path(__file__).resolve().parent.parent


def load_manpage() -> ModuleType:
    """packaging/manpage.py (``packaging`` is also a PyPI package's name: load the file)."""
    spec = importlib.util.spec_from_file_location("manpage", ROOT / "packaging" / "manpage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WHEN = datetime(2026, 12, 3, 13, 0, 5, tzinfo=UTC)


def test_times_always_carry_a_zone() -> None:
    assert Display(utc=True).time(WHEN) == "2026-12-03 13:00:05 UTC"
    ahead = WHEN.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert Display(utc=True).time(ahead) == "2026-12-03 13:00:05 UTC"
    local = Display().time(WHEN)
    assert local == WHEN.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    assert local.rsplit(" ", 1)[1]  # the local zone's name or offset, never nothing
    assert Display().time(None) == "-"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (12.9, "12 s"),
        (60, "1 min"),
        (184, "3 min 4 s"),
        (7500, "2 h 5 min"),
        (86400, "1 day"),
        (3 * 86400 + 4 * 3600 + 59, "3 days 4 h"),
        (-5, "0 s"),
    ],
)
def test_span_reads_like_a_person_says_it(seconds: float, shown: str) -> None:
    assert span(timedelta(seconds=seconds)) == shown


def test_ago_and_in() -> None:
    assert ago(WHEN - timedelta(minutes=5), WHEN) == "5 min ago"
    assert ago(WHEN + timedelta(hours=2), WHEN) == "in 2 h"


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert wants_color(is_tty=True, environ={"TERM": "xterm"}, no_color=False)
    assert not wants_color(is_tty=False, environ={"TERM": "xterm"}, no_color=False)
    assert not wants_color(is_tty=True, environ={"TERM": "xterm", "NO_COLOR": "1"}, no_color=False)
    assert wants_color(is_tty=True, environ={"TERM": "xterm", "NO_COLOR": ""}, no_color=False)
    assert not wants_color(is_tty=True, environ={"TERM": "xterm"}, no_color=True)
    assert not wants_color(is_tty=True, environ={"TERM": "dumb"}, no_color=False)


def test_tables_fit_the_terminal_and_colour_states() -> None:
    rows = [["a.b", "failed", "x" * 100], ["c.d", "succeeded", "short"]]
    wide = Display(color=False, width=None).table(["ID", "OUTCOME", "ERROR"], rows)
    assert wide[1].endswith("x" * 100)
    narrow = Display(color=False, width=40).table(["ID", "OUTCOME", "ERROR"], rows)
    assert all(len(line) <= 40 for line in narrow)
    assert narrow[1].endswith("…") and narrow[2].endswith("short")
    coloured = Display(color=True, width=None).table(["ID", "OUTCOME"], [rows[0][:2]])
    assert "\x1b[1;31mfailed\x1b[0m" in coloured[1]
    # A cell holding control characters is shown, never obeyed, and stays one line.
    tricky = Display().table(["ID"], [["evil\x1b[2J\nnext"]])
    assert tricky[1] == "evil\\x1b[2J next"


def test_fit_never_cuts_a_column_below_its_header() -> None:
    assert fit([10, 50], [10, 5], 30) == [10, 18]
    assert fit([12, 12], [12, 12], 10) == [12, 12]  # cannot fit: left as narrow as allowed


def test_the_man_page_lists_every_exit_status() -> None:
    from supervisor.cli.main import main

    manpage = load_manpage()
    page = manpage.render(main, version="0", date="2026-12-03")
    section = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    codes = {errors.SupervisorError.exit_code} | {
        kind.exit_code
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, errors.SupervisorError)
    }
    for code in codes | {0}:
        assert f".TP\n.B {code}\n" in section
    assert codes <= set(manpage.exit_codes())
    assert len(manpage.EXIT_MEANINGS) == len(codes | {0})


def test_the_man_page_refuses_an_unexplained_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    manpage = load_manpage()
    monkeypatch.delitem(manpage.EXIT_MEANINGS, 8)
    with pytest.raises(ValueError, match="exit status 8"):
        manpage.exit_codes()


def test_terminal_columns_from_the_environment_or_the_terminal() -> None:
    import io

    from supervisor.cli.display import terminal_columns

    assert terminal_columns(io.StringIO(), {"COLUMNS": "132"}) == 132
    assert terminal_columns(io.StringIO(), {}) == 80  # no terminal behind it
    assert terminal_columns(io.StringIO(), {"COLUMNS": "wide"}) == 80
