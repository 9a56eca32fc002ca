"""Options shared by every group of CLI commands (manager mode and systemd mode).

May import click only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="State directory (default: $SUPERVISOR_STATE_DIR, /var/lib/sched-supervisor "
        "for root, ~/.local/state/sched-supervisor otherwise).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def proxy_header_option(func: F) -> F:
    return click.option(
        "--proxy-user-header",
        default=None,
        metavar="HEADER",
        help="Trust this header (e.g. X-Remote-User) from a reverse proxy on loopback as the "
        "logged-in user (who must exist). Any local process that can reach the Admin Center "
        "can then send it too: use only where the proxy alone can connect.",
    )(func)


# Where the display flags are kept: the root context's ``meta`` (one command line).
UTC_KEY = "supervisor.utc"
NO_COLOR_KEY = "supervisor.no_color"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def store(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_root().meta[key] = True

    return store


def display_options(func: F) -> F:
    """``--utc`` and ``--no-color``, on the group (``supervisor --utc logs ID``) and on
    each read command (``supervisor list --utc``); either place counts."""
    func = click.option(
        "--no-color",
        is_flag=True,
        expose_value=False,
        callback=_remember(NO_COLOR_KEY),
        help="No colours (they are shown only on a terminal, and never with NO_COLOR set).",
    )(func)
    return click.option(
        "--utc",
        is_flag=True,
        expose_value=False,
        callback=_remember(UTC_KEY),
        help="Print times in UTC instead of the local time zone.",
    )(func)


def offline_app_option(func: F) -> F:
    """``--app`` of a read command: the app that names the schedulers when no manager
    runs and the state database is read instead (default: the one it last ran)."""
    return click.option(
        "--app",
        "app_spec",
        default=None,
        metavar="MODULE:ATTR",
        help="With no manager running: the application whose schedulers to read from the "
        "state database (default: the one it last ran).",
    )(func)
