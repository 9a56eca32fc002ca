"""The ``supervisor`` command: run the manager, and the operator commands (see the README).

Read commands print a table, or the ``--json`` shapes of ``serialize``. Errors print one
line on stderr and exit with the error type's code. The top layer: may import anything.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from supervisor import __version__
from supervisor.cli import terminal
from supervisor.cli.options import json_option, proxy_header_option, state_dir_option
from supervisor.cli.systemd import (
    SystemdClient,
    backend_choice,
    open_systemd_mode,
    register,
    select_client,
)
from supervisor.core.access import ROLES, os_user_name, su
from supervisor.core.durations import format_duration, parse_duration
from supervisor.core.errors import DefinitionError, StoreError, SupervisorError
from supervisor.core.sizes import parse_size
from supervisor.service.control import ControlClient
from supervisor.service.paths import resolve_state_dir

F = TypeVar("F", bound=Callable[..., Any])
FOLLOW_POLL_SECONDS = 0.25


class Cli(click.Group):
    """A group that turns our errors into one line on stderr and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as error:
            # Usage errors too stay one line (click would add usage and a hint).
            click.echo(f"error: {error.format_message()}", err=True)
            ctx.exit(error.exit_code)
        except SupervisorError as error:
            # One line: details such as a traceback stay in the run or audit record.
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            click.echo(f"error: {first_line}", err=True)
            ctx.exit(error.exit_code)


def client(state_dir: str | None) -> ControlClient | SystemdClient:
    """The manager's control socket, or systemd when the state directory says so."""
    return select_client(resolve_state_dir(state_dir))


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def local_time(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="supervisor")
def main() -> None:
    """sched-supervisor: run background processes defined in Python, and control them.

    Start the manager with `supervisor run --app MODULE:ATTR` (for example
    `--app examples.jobs:cfg`); the other commands talk to it through the state directory.
    """


# -- the manager ---------------------------------------------------------------------------


def parse_admin(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DefinitionError("--admin", f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


@main.command()
@click.option("--app", "app_spec", required=True, help="The application, as MODULE:ATTR.")
@state_dir_option
@click.option("--admin", default="127.0.0.1:8080", show_default=True, help="Admin Center address.")
@click.option("--no-admin", is_flag=True, help="Do not serve the Admin Center.")
@click.option("--no-fork-server", is_flag=True, help="Start each run in a fresh interpreter.")
@click.option("--no-catch-up", is_flag=True, help="Do not run CRON runs missed while down.")
@click.option(
    "--grace", default="5s", show_default=True, help="Grace period before SIGTERM/SIGKILL."
)
@click.option(
    "--keep-runs",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="Runs kept per scheduler.",
)
@click.option(
    "--max-log-per-run",
    default="1MiB",
    show_default=True,
    help="Log kept per run; the rest is cut with a visible marker.",
)
@proxy_header_option
def run(
    app_spec: str,
    state_dir: str | None,
    admin: str,
    no_admin: bool,
    no_fork_server: bool,
    no_catch_up: bool,
    grace: str,
    keep_runs: int,
    max_log_per_run: str,
    proxy_user_header: str | None,
) -> None:
    """Run every scheduler of the application until SIGTERM or SIGINT."""
    from supervisor.service.manager_mode import RunOptions, Service

    options = RunOptions(
        app_spec=app_spec,
        state_dir=resolve_state_dir(state_dir),
        admin=None if no_admin else parse_admin(admin),
        fork_server=not no_fork_server,
        grace_seconds=parse_duration(grace, field="--grace").total_seconds(),
        catch_up_missed_cron=not no_catch_up,
        max_runs_per_scheduler=keep_runs,
        max_log_bytes_per_run=parse_size(max_log_per_run, field="--max-log-per-run"),
    )
    service = Service(options, admin_factory=_admin_factory(proxy_user_header))
    try:
        service.start()
        service.serve_until_signalled()
    finally:
        service.close()


def _admin_factory(proxy_user_header: str | None) -> Any:
    """``start_admin``, told to trust a reverse proxy's user header when one is named."""
    from supervisor.web.server import start_admin

    if proxy_user_header is None:
        return start_admin

    def start(use_cases: Any, store: Any, options: Any) -> Any:
        from supervisor.web.app import AdminConfig

        config = AdminConfig(
            app_name=use_cases.registry.app_name,
            proxy_user_header=proxy_user_header,
            behind_proxy=True,
        )
        return start_admin(use_cases, store, options, config=config)

    return start


@main.command()
@state_dir_option
@click.option(
    "--app", "app_spec", default=None, help="The application (default: the installed one)."
)
@click.option("--admin", default="127.0.0.1:8080", show_default=True, help="Admin Center address.")
@proxy_header_option
def admin(
    state_dir: str | None, app_spec: str | None, admin: str, proxy_user_header: str | None
) -> None:
    """Serve the Admin Center for schedulers installed as systemd units."""
    import signal
    import threading

    from supervisor.service.manager_mode import RunOptions

    directory = resolve_state_dir(state_dir)
    mode = open_systemd_mode(directory, app_spec=app_spec)
    try:
        options = RunOptions(app_spec=mode.app_spec, state_dir=directory, admin=parse_admin(admin))
        server = _admin_factory(proxy_user_header)(mode.use_cases, mode.store, options)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            stop.wait()
        finally:
            server.close()
    finally:
        mode.close()


# -- reading -------------------------------------------------------------------------------


@main.command(name="list")
@state_dir_option
@json_option
def list_(state_dir: str | None, as_json: bool) -> None:
    """List every scheduler with its state."""
    statuses = client(state_dir).call("list")
    if as_json:
        echo_json(statuses)
        return
    table(
        ["ID", "KIND", "STATE", "LAST OUTCOME", "LAST STARTED", "NEXT PLANNED"],
        [
            [
                s["id"],
                s["kind"],
                s["state"],
                s["last_outcome"] or "-",
                local_time(s["last_started_at"]),
                local_time(s["next_planned_at"]),
            ]
            for s in statuses
        ],
    )


@main.command()
@click.argument("scheduler_id")
@state_dir_option
@json_option
def status(scheduler_id: str, state_dir: str | None, as_json: bool) -> None:
    """Show one scheduler's state, timing and last outcome."""
    s = client(state_dir).call("status", id=scheduler_id)
    if as_json:
        echo_json(s)
        return
    rows = [
        ("id", s["id"]),
        ("name", s["name"]),
        ("description", s["description"]),
        ("kind", s["kind"]),
        ("state", s["state"] + (f" (run {s['current_run_id']})" if s["current_run_id"] else "")),
        ("last started", local_time(s["last_started_at"])),
        ("last completed", local_time(s["last_completed_at"])),
        ("next planned", local_time(s["next_planned_at"])),
        ("last outcome", s["last_outcome"] or "-"),
        ("last error", (s["last_error"] or "-").splitlines()[0] if s["last_error"] else "-"),
        ("last acted by", s["last_actor"] or "-"),
    ]
    units = s.get("units")
    if units:  # systemd mode: say where the units live (runtime ones vanish at reboot)
        rows.append(("units", f"{units.get('service')} ({units.get('kind')})"))
    for name, value in rows:
        click.echo(f"{name + ':':<16}{value}")


@main.command()
@click.argument("scheduler_id")
@state_dir_option
@click.option("--limit", default=20, show_default=True)
@json_option
def runs(scheduler_id: str, state_dir: str | None, limit: int, as_json: bool) -> None:
    """Show a scheduler's run history, newest first."""
    found = client(state_dir).call("runs", id=scheduler_id, limit=limit)
    if as_json:
        echo_json(found)
        return
    table(
        ["RUN", "TRIGGER", "BY", "STARTED", "ENDED", "OUTCOME", "ERROR"],
        [
            [
                r["run_id"],
                r["trigger"],
                r["triggered_by"] or "-",
                local_time(r["started_at"]),
                local_time(r["ended_at"]),
                r["outcome"] or "running",
                (r["error"] or "").splitlines()[0][:60] if r["error"] else "",
            ]
            for r in found
        ],
    )


def _print_log(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        record = {k: v for k, v in record.items() if k != "cursor"}
        click.echo(json.dumps(record, ensure_ascii=False))
        return
    click.echo(terminal.log_line(record, when=local_time(record["time"])))


@main.command()
@click.argument("scheduler_id")
@state_dir_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records.")
@click.option("--level", default=None, help="Lowest level to show (debug, info, warning, error).")
@click.option("--run", "run_id", default=None, help="Only this run's records.")
@click.option("--limit", default=200, show_default=True, help="How many recent records.")
@json_option
def logs(
    scheduler_id: str,
    state_dir: str | None,
    follow: bool,
    level: str | None,
    run_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Print a scheduler's log records (one JSON object per line with --json)."""
    control = client(state_dir)
    query = {"id": scheduler_id, "level": level, "run_id": run_id}
    records = control.call("logs", limit=limit, **query)
    cursor = None
    for record in records:
        _print_log(record, as_json)
        cursor = record["cursor"]
    while follow:
        sys.stdout.flush()
        time.sleep(FOLLOW_POLL_SECONDS)  # polling a live source, not waiting in a test
        if cursor is None:
            records = control.call("logs", limit=1000, **query)
        else:
            records = control.call("logs", after=cursor, limit=1000, **query)
        for record in records:
            _print_log(record, as_json)
            cursor = record["cursor"]


# -- controls ------------------------------------------------------------------------------


@main.command()
@click.argument("scheduler_id")
@state_dir_option
def start(scheduler_id: str, state_dir: str | None) -> None:
    """Start a stopped scheduler (its start delay applies again)."""
    client(state_dir).call("start", id=scheduler_id)
    click.echo(f"started {scheduler_id}")


@main.command()
@click.argument("scheduler_id")
@state_dir_option
def stop(scheduler_id: str, state_dir: str | None) -> None:
    """Cancel the current run and plan nothing more until started."""
    client(state_dir).call("stop", id=scheduler_id)
    click.echo(f"stopped {scheduler_id}")


@main.command(name="execute")
@click.argument("scheduler_id")
@state_dir_option
@json_option
def execute(scheduler_id: str, state_dir: str | None, as_json: bool) -> None:
    """Start a run now (refused while a run is in progress)."""
    result = client(state_dir).call("execute", id=scheduler_id)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"started run {result['run_id']} of {scheduler_id}")


@main.command()
@click.argument("scheduler_id")
@click.argument("action_id")
@state_dir_option
def action(scheduler_id: str, action_id: str, state_dir: str | None) -> None:
    """Run a scheduler's custom action and print its result."""
    result = client(state_dir).call("action", id=scheduler_id, action=action_id)
    click.echo(result["result"])


def _duration_seconds(text: str | None, field: str) -> float | None:
    return None if text is None else parse_duration(text, field=field).total_seconds()


@main.command()
@click.argument("scheduler_id")
@state_dir_option
@click.option("--start-delay", default=None, help="Delay after start, e.g. 30s.")
@click.option("--pause-time", default=None, help="Pause between runs, e.g. 5m.")
@click.option("--cron", default=None, help="Cron expression (5 fields, or 6 with seconds first).")
@click.option("--timezone", default=None, help="IANA time zone for --cron.")
@click.option("--timeout", default=None, help="Longest allowed run, e.g. 1h; 'none' for no limit.")
@click.option("--disable/--enable", "disabled", default=None, help="Disable or enable.")
@click.option("--reset", is_flag=True, help="Delete every override (back to the code defaults).")
@json_option
def settings(
    scheduler_id: str,
    state_dir: str | None,
    start_delay: str | None,
    pause_time: str | None,
    cron: str | None,
    timezone: str | None,
    timeout: str | None,
    disabled: bool | None,
    reset: bool,
    as_json: bool,
) -> None:
    """Show or change a scheduler's timing settings (changes apply at once)."""
    changes: dict[str, Any] = {}
    if start_delay is not None:
        changes["start_delay"] = _duration_seconds(start_delay, "start_delay")
    if pause_time is not None:
        changes["pause_time"] = _duration_seconds(pause_time, "pause_time")
    if cron is not None:
        changes["cron"] = cron
    if timezone is not None:
        changes["timezone"] = timezone
    if timeout is not None:
        changes["timeout"] = (
            None if timeout.lower() == "none" else _duration_seconds(timeout, "timeout")
        )
    if disabled is not None:
        changes["disabled"] = disabled
    if reset and changes:
        raise DefinitionError("--reset", "cannot be combined with changes")
    view = client(state_dir).call("settings", id=scheduler_id, changes=changes, reset=reset)
    if as_json:
        echo_json(view)
        return
    for name, value in view["effective"].items():
        if value is None:
            shown = "none"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        elif name in ("start_delay", "pause_time", "timeout"):
            shown = format_duration(_seconds(value))
        else:
            shown = str(value)
        mark = "  (overridden)" if name in view["overridden"] else ""
        click.echo(f"{name + ':':<14}{shown}{mark}")


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


# -- planning without a manager ------------------------------------------------------------


@main.command(name="next-runs")
@click.argument("scheduler_id", required=False)
@click.option("--app", "app_spec", default=None, help="The application (for a scheduler ID).")
@click.option("--cron", default=None, help="A cron expression to check instead of a scheduler.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone for --cron.")
@click.option("--from", "from_", default=None, help="ISO 8601 start (default: now).")
@click.option("--count", default=10, show_default=True, type=click.IntRange(1, 10000))
@state_dir_option
@json_option
def next_runs(
    scheduler_id: str | None,
    app_spec: str | None,
    cron: str | None,
    timezone: str,
    from_: str | None,
    count: int,
    state_dir: str | None,
    as_json: bool,
) -> None:
    """The next planned starts of a scheduler or a cron expression, DST included.

    A scheduler is looked up in the app its state directory last ran (or installed) with,
    unless --app says otherwise; under systemd, cron times follow systemd's DST rules.
    """
    from supervisor.core.nextruns import upcoming, upcoming_for_cron

    start = _parse_from(from_)
    if (scheduler_id is None) == (cron is None):
        raise DefinitionError("next-runs", "give a scheduler ID or --cron EXPR (one of them)")
    if cron is not None:
        times = upcoming_for_cron(cron, timezone, start=start, count=count)
        zone = timezone
    else:
        assert scheduler_id is not None
        directory = resolve_state_dir(state_dir)
        options, settings, systemd = _scheduler_settings(app_spec, scheduler_id, directory)
        times = upcoming(options, settings, start=start, count=count, systemd=systemd)
        zone = settings.timezone
    from zoneinfo import ZoneInfo

    local = [t.astimezone(ZoneInfo(zone)) for t in times]
    if as_json:
        click.echo(json.dumps([t.isoformat() for t in local]))
    else:
        for t in local:
            click.echo(t.isoformat())


def _scheduler_settings(
    app_spec: str | None, scheduler_id: str, state_dir: Path
) -> tuple[Any, Any, bool]:
    """A scheduler's definition, its effective settings, and whether systemd runs it."""
    from supervisor.core.app import load_app
    from supervisor.core.registry import registry_of
    from supervisor.core.settings import from_store
    from supervisor.service.paths import (
        APP_CWD_META,
        APP_SPEC_META,
        DATABASE_NAME,
        check_app_from_state,
        check_state_dir,
    )
    from supervisor.store.sqlite import SqliteStore

    if backend_choice(state_dir) == "systemd":
        mode = open_systemd_mode(state_dir, app_spec=app_spec)
        try:
            installed = mode.schedulers.registry.get(scheduler_id)
            stored = mode.store.overrides(scheduler_id)
        finally:
            mode.close()
        return installed, from_store(installed, stored).effective, True
    overrides: dict[str, Any] = {}
    database = state_dir / DATABASE_NAME
    if database.exists():
        state = check_state_dir(state_dir)
        with SqliteStore.open(database) as store:
            overrides = store.overrides(scheduler_id)
            if app_spec is None:
                app_spec, cwd = store.get_meta(APP_SPEC_META), store.get_meta(APP_CWD_META)
                search_path = [cwd, *sys.path] if cwd else list(sys.path)
                if app_spec is not None:
                    check_app_from_state(
                        state, app_spec=app_spec, source=database, search_path=search_path
                    )
                if cwd and cwd not in sys.path:
                    sys.path.insert(0, cwd)
    if app_spec is None:
        raise DefinitionError("--app", f"needed: nothing has run with state directory {state_dir}")
    options = registry_of(load_app(app_spec)).get(scheduler_id)
    return options, from_store(options, overrides).effective, False


def _parse_from(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise DefinitionError("--from", f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise DefinitionError("--from", f"needs a UTC offset, e.g. {text}+00:00")
    return value


# -- users ---------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Manage Admin Center users (stored in the state directory)."""


def _accounts(state_dir: str | None, *, create: bool) -> tuple[Any, Any]:
    """The account use cases over the state database, and the store to close after.

    Without ``create``, a missing database is an error rather than a new empty file.
    """
    from supervisor.service.paths import DATABASE_NAME, ensure_state_dir
    from supervisor.store.sqlite import SqliteStore
    from supervisor.usecases.accounts import Accounts

    directory = resolve_state_dir(state_dir)
    if not create and not (directory / DATABASE_NAME).exists():
        raise StoreError(f"no state database in {directory.absolute()} (wrong --state-dir?)")
    store = SqliteStore.open(ensure_state_dir(directory) / DATABASE_NAME)
    return Accounts(store), store


@users.command(name="add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@state_dir_option
def users_add(name: str, role: str, password_stdin: bool, state_dir: str | None) -> None:
    """Add a user; prints a generated password unless --password-stdin."""
    from supervisor.core.passwords import generate_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    accounts, store = _accounts(state_dir, create=True)
    try:
        accounts.add(su(os_user_name()), name, role=role, password=password)
    finally:
        store.close()
    click.echo(f"added user {name} ({role})")
    if not password_stdin:
        click.echo(f"password: {password}")


@users.command(name="remove")
@click.argument("name")
@state_dir_option
def users_remove(name: str, state_dir: str | None) -> None:
    """Remove a user."""
    accounts, store = _accounts(state_dir, create=False)
    try:
        accounts.remove(su(os_user_name()), name)
    finally:
        store.close()
    click.echo(f"removed user {name}")


@users.command(name="list")
@state_dir_option
@json_option
def users_list(state_dir: str | None, as_json: bool) -> None:
    """List users and their roles."""
    accounts, store = _accounts(state_dir, create=False)
    try:
        found = accounts.list(su(os_user_name()))
    finally:
        store.close()
    if as_json:
        echo_json([{"name": u.name, "role": u.role} for u in found])
    else:
        table(["NAME", "ROLE"], [[u.name, u.role] for u in found])


register(main)  # exec, generate-units, install-units, uninstall-units
