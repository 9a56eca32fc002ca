"""``supervisor users``: the Admin Center's users from the shell, in the state directory's
SQLite store or (``--store postgresql://…``, as ``supervisor run --store``) in a shared
PostgreSQL store, with no manager needed.

Each command calls the account use cases (``usecases.accounts``, those of the Admin
Center's Users page: the same checks, the same audit entries) as the OS user running it
(every permission, named after that user), through ``service.offline.open_accounts``.
A password is read from standard input or a terminal without echo; it is never printed,
logged or put in an error (a generated one-time password is printed once, by ``add``).
Messages name a PostgreSQL store as ``user@host:port/db``, never with its password.
A new password, a disable and a removal end the user's Admin Center sessions wherever
they are (the store's credentials stamp: ``usecases.accounts``), also while a manager runs.
Only ``add`` creates the store's tables in an empty PostgreSQL database (the first admin
before the first run); the others refuse one. ``--store`` may come from
``SCHED_SUPERVISOR_STORE`` instead.
The top layer (with ``cli``): may import anything but ``cli.main``; heavy parts where used.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from supervisor.cli.display import Display
from supervisor.cli.options import json_option, state_dir_option
from supervisor.core.access import ROLES, Subject, os_user_name, su
from supervisor.service.mode import operator_state_dir

if TYPE_CHECKING:
    from supervisor.usecases.accounts import Accounts

F = TypeVar("F", bound=Callable[..., Any])

# Where ``--store`` may come from instead of the command line (which others can read in
# /proc/PID/cmdline and the shell history), for ``users`` and ``run`` alike.
STORE_ENVVAR = "SCHED_SUPERVISOR_STORE"


def store_option(func: F) -> F:
    return click.option(
        "--store",
        default=None,
        metavar="URL",
        envvar=STORE_ENVVAR,
        show_envvar=True,
        help="The users of this PostgreSQL store (postgresql://USER@HOST/DB, as `supervisor"
        " run --store`; password best in ~/.pgpass) instead of the state directory's.",
    )(func)


def where(func: F) -> F:
    """``--state-dir`` and ``--store``: which store's users a command changes."""
    return state_dir_option(store_option(func))


@contextlib.contextmanager
def accounts_of(state_dir: str | None, store: str | None, *, create: bool) -> Iterator[Accounts]:
    """The account use cases over the store the options name; without ``create`` a state
    directory with no database is an error (a PostgreSQL store gets its tables)."""
    from supervisor.service.offline import open_accounts

    with open_accounts(operator_state_dir(state_dir), create=create, store=store) as accounts:
        yield accounts


def operator() -> Subject:
    """The person at the terminal: every permission, named after the OS user."""
    return su(os_user_name())


def read_password(prompt: str) -> str:
    """One line of standard input (its newline dropped); from a terminal, typed without
    echo."""
    if sys.stdin.isatty():
        typed: str = click.prompt(prompt, hide_input=True, err=True)
        return typed
    return sys.stdin.readline().rstrip("\n")


@click.group()
def users() -> None:
    """Manage Admin Center users (in the state directory, or a --store PostgreSQL store).

    Every change is written to the audit trail as the OS user running the command. A new
    password (passwd), disable and remove end the user's Admin Center sessions on every
    host using the store, at their next request (no manager needed); a role change keeps
    them and holds from their next request.
    """


@users.command(name="add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@where
def users_add(
    name: str, role: str, password_stdin: bool, state_dir: str | None, store: str | None
) -> None:
    """Add a user; prints a generated one-time password unless --password-stdin."""
    from supervisor.core.passwords import generate_password

    password = read_password(f"Password for {name}") if password_stdin else generate_password()
    with accounts_of(state_dir, store, create=True) as accounts:
        accounts.add(operator(), name, role=role, password=password, temporary=not password_stdin)
    click.echo(f"added user {name} ({role})")
    if not password_stdin:
        click.echo(f"password: {password} (one-time: to be changed at the first login)")


@users.command(name="passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@where
def users_passwd(name: str, password_stdin: bool, state_dir: str | None, store: str | None) -> None:
    """Set a user's password (asked for twice on the terminal unless --password-stdin);
    the user's open Admin Center sessions end."""
    if password_stdin:
        password = read_password(f"New password for {name}")
    else:
        password = click.prompt(
            f"New password for {name}", hide_input=True, confirmation_prompt=True
        )
    with accounts_of(state_dir, store, create=False) as accounts:
        accounts.set_password(operator(), name, password)
    click.echo(f"changed the password of {name}")


@users.command(name="remove")
@click.argument("name")
@where
def users_remove(name: str, state_dir: str | None, store: str | None) -> None:
    """Remove a user (not the last enabled admin); their open Admin Center sessions end."""
    with accounts_of(state_dir, store, create=False) as accounts:
        accounts.remove(operator(), name)
    click.echo(f"removed user {name}")


@users.command(name="role")
@click.argument("name")
@click.argument("role", type=click.Choice(list(ROLES)))
@where
def users_role(name: str, role: str, state_dir: str | None, store: str | None) -> None:
    """Give a user another role (the last enabled admin stays one); their sessions stay
    open and act with it from the user's next request on."""
    with accounts_of(state_dir, store, create=False) as accounts:
        changed = accounts.set_role(operator(), name, role)
    click.echo(f"{name} is now {role}" if changed else f"{name} is {role} already")


@users.command(name="disable")
@click.argument("name")
@where
def users_disable(name: str, state_dir: str | None, store: str | None) -> None:
    """Lock a user out: logins are refused and open Admin Center sessions end at their next
    request, on every host; the password stays for `enable` (not the last enabled admin)."""
    with accounts_of(state_dir, store, create=False) as accounts:
        changed = accounts.disable(operator(), name)
    click.echo(f"disabled user {name}" if changed else f"{name} is disabled already")


@users.command(name="enable")
@click.argument("name")
@where
def users_enable(name: str, state_dir: str | None, store: str | None) -> None:
    """Let a disabled user log in again with their password."""
    with accounts_of(state_dir, store, create=False) as accounts:
        changed = accounts.enable(operator(), name)
    click.echo(f"enabled user {name}" if changed else f"{name} is enabled already")


@users.command(name="list")
@where
@json_option
def users_list(state_dir: str | None, store: str | None, as_json: bool) -> None:
    """List users, their roles and whether they are disabled."""
    from supervisor.usecases.accounts import is_disabled

    with accounts_of(state_dir, store, create=False) as accounts:
        found = accounts.list(operator())
    if as_json:
        shown = [{"name": u.name, "role": u.role, "disabled": is_disabled(u)} for u in found]
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    rows = [[u.name, u.role, "disabled" if is_disabled(u) else "enabled"] for u in found]
    for line in Display().table(["NAME", "ROLE", "STATE"], rows):
        click.echo(line)
