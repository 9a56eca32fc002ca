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
