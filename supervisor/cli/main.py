"""The ``supervisor`` command: run the manager, and the operator commands (see the README).

Each command parses its arguments, calls a composition root (``service.manager_mode``,
``service.systemd_mode``, ``service.offline``) or the typed client (``cli.client``), and
prints: a table (``cli.display``: zoned times, colours on a terminal, its width), or the
``--json`` shapes of ``cli.views``. The read commands (``READ_COMMANDS``) read the state
database when no manager runs (``client``). Errors print one line on stderr and exit
with the error type's code (an unknown ID with a did-you-mean). The top layer: may import
anything, but the socket-only commands must not import croniter, jinja2, dateutil or
bottle (imported where used, see ``bench/bench_cli_start.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from supervisor import __version__
from supervisor.cli import logsearch, terminal, views
from supervisor.cli.client import (
    Client,
    UnknownSchedulerHint,
    close_ids,
    open_client,
    open_reader,
    suggesting,
)
from supervisor.cli.display import WORD_STYLES, Display, Style, ago, span, terminal_columns
from supervisor.cli.options import (
    NO_COLOR_KEY,
    UTC_KEY,
    display_options,
    json_option,
    offline_app_option,
    proxy_header_option,
    state_dir_option,
)
from supervisor.cli.systemd import register
from supervisor.cli.users import STORE_ENVVAR, users
from supervisor.core.access import Subject, os_user_name, su
from supervisor.core.definitions import Kind
from supervisor.core.durations import format_duration, parse_duration
from supervisor.core.errors import DefinitionError, SupervisorError, UnknownScheduler
from supervisor.core.records import Level, LogQuery, LogRecord, Outcome, State
from supervisor.core.settings import SettingsChange
from supervisor.core.sizes import parse_size
from supervisor.core.until import parse_until, zone_named
from supervisor.service.mode import operator_state_dir
from supervisor.service.paths import resolve_state_dir

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from click.shell_completion import CompletionItem

FOLLOW_POLL_SECONDS = 0.25
DEFAULT_LOG_LINES = 200
# The commands that only read: without a manager they read the state database instead.
READ_COMMANDS = frozenset({"list", "status", "runs", "logs"})
STATUS_LOG_LINES = 10
FAILED_OUTCOMES = frozenset({Outcome.FAILED, Outcome.CRASHED, Outcome.TIMED_OUT})


class Cli(click.Group):
    """A group that turns our errors into one line on stderr and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as error:
            # Usage errors too stay one line (click would add usage and a hint).
            click.echo(f"error: {terminal.printable(error.format_message())}", err=True)
            ctx.exit(error.exit_code)
        except SupervisorError as error:
            # One line: details such as a traceback stay in the run or audit record.
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            if isinstance(error, UnknownSchedulerHint) and error.suggestions:
                first_line += f" ({error.hint()})"
            click.echo(f"error: {terminal.printable(first_line)}", err=True)
            ctx.exit(error.exit_code)


def client(state_dir: str | None, *, app_spec: str | None = None) -> Client:
    """The manager's control socket, or systemd when the state directory says so; closed
    when the command ends. For a read command (``READ_COMMANDS``) with no manager
    running: the state database, read-only, said on stderr. Unknown scheduler IDs come
    back with the IDs that look like them."""
    ctx = click.get_current_context()
    if ctx.command.name in READ_COMMANDS:
        reader = open_reader(operator_state_dir(state_dir), app_spec=app_spec)
        made = reader.client
        if reader.notice is not None:
            click.echo(reader.notice, err=True)
    else:
        made = open_client(operator_state_dir(state_dir))
    ctx.call_on_close(made.close)
    return suggesting(made)


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def display() -> Display:
    """How this command shows times and colours (``--utc``, ``--no-color``, NO_COLOR,
    whether standard output is a terminal, its width)."""
    meta = click.get_current_context().find_root().meta
    is_tty = sys.stdout.isatty()
    return Display.choose(
        utc=bool(meta.get(UTC_KEY)),
        no_color=bool(meta.get(NO_COLOR_KEY)),
        is_tty=is_tty,
        environ=os.environ,
        columns=terminal_columns(sys.stdout, os.environ) if is_tty else 0,
    )


def local_time(value: datetime | None) -> str:
    """A time as this command shows it: local (or ``--utc``), always with its zone."""
    return display().time(value)


def first_line(text: str | None) -> str:
    return (text.splitlines() or [""])[0] if text else ""


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Aligned columns, cut to a terminal's width; what a run or a user wrote is shown
    with control characters made visible (``terminal.printable``), never obeyed."""
    for line in display().table(headers, [list(r) for r in rows]):
        click.echo(line)


def complete_scheduler_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of a SCHEDULER_ID: the IDs the manager (or, with none running,
    the state database) knows, with their names; nothing when neither answers."""
    import contextlib
    import io

    from click.shell_completion import CompletionItem

    state_dir = ctx.params.get("state_dir")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # an app must not print into it
            reader = open_reader(operator_state_dir(state_dir))
            try:
                known = [(s.id, s.name) for s in reader.client.statuses()]
            finally:
                reader.client.close()
    except (SupervisorError, OSError):
        return []
    return [CompletionItem(i, help=name) for i, name in known if i.startswith(incomplete)]


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="supervisor")
@display_options
def main() -> None:
    """sched-supervisor: run background processes defined in Python, and control them.

    Start the manager with `supervisor run --app MODULE:ATTR` (for example
    `--app examples.jobs:cfg`); the other commands talk to it through the state directory.
    Without a manager, `list`, `status`, `runs` and `logs` read its state database.
    Shell completion of commands and scheduler IDs: see the README.
    """


# -- the manager ---------------------------------------------------------------------------


def parse_admin(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DefinitionError("--admin", f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def fork_server_count(text: str | None, *, fork_server: bool) -> int | None:
    """``--fork-servers N``: a whole number from 1 to ``MAX_FORK_SERVERS``, and only with
    the fork server; None when not given. ``DefinitionError("--fork-servers")`` else."""
    from supervisor.service.manager_mode import MAX_FORK_SERVERS

    if text is None:
        return None
    if not fork_server:
        raise DefinitionError("--fork-servers", "cannot be used with --no-fork-server")
    stripped = text.strip()
    if (
        not (stripped.isascii() and stripped.isdigit())
        or not 1 <= int(stripped) <= MAX_FORK_SERVERS
    ):
        raise DefinitionError(
            "--fork-servers", f"expected a whole number from 1 to {MAX_FORK_SERVERS}, got {text!r}"
        )
    return int(stripped)


def remote_options(func: Any) -> Any:
    func = click.option(
        "--allow-remote",
        is_flag=True,
        help="Allow an --admin address other than loopback (plain HTTP: no TLS).",
    )(func)
    func = click.option(
        "--forwarded-from",
        multiple=True,
        metavar="ADDR",
        help="A reverse proxy's address whose X-Forwarded-For/-Proto name the client"
        " (for the login throttle); none is trusted otherwise. Repeatable.",
    )(func)
    func = click.option(
        "--metrics-token-file",
        default=None,
        metavar="FILE",
        help="A file holding the bearer token that lets a Prometheus scraper read /metrics"
        " (without it, /metrics needs a logged-in user).",
    )(func)
    return click.option(
        "--secure-cookies",
        is_flag=True,
        help="Mark the session cookie Secure (when an HTTPS proxy serves the Admin Center).",
    )(func)


def read_token(path: str | None, *, field: str) -> str | None:
    """The secret in ``path`` (stripped), or None without a path; errors name ``field``."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionError(field, f"cannot read {path}: {error}") from error
    if not token or not token.isascii() or not token.isprintable():
        raise DefinitionError(field, f"{path} must hold one line of printable ASCII")
    return token


def notify_options(func: Any) -> Any:
    """Who is told when a scheduler fails, recovers, or does not run when expected."""
    options: list[tuple[str, dict[str, Any]]] = [
        (
            "--notify-webhook",
            {"multiple": True, "metavar": "URL", "help": "POST signed JSON here (repeatable)."},
        ),
        (
            "--notify-webhook-secret-file",
            {"metavar": "FILE", "help": "The HMAC-SHA256 key webhooks are signed with."},
        ),
        (
            "--notify-email",
            {"multiple": True, "metavar": "ADDR", "help": "Mail this address (repeatable)."},
        ),
        ("--smtp", {"metavar": "HOST:PORT", "help": "The mail server (default localhost:25)."}),
        ("--notify-from", {"metavar": "ADDR", "help": "The mails' sender address."}),
    ]
    for name, kwargs in reversed(options):
        func = click.option(name, default=None, **kwargs)(func)
    return func


@main.command()
@click.option("--app", "app_spec", required=True, help="The application, as MODULE:ATTR.")
@state_dir_option
@click.option("--admin", default="127.0.0.1:8080", show_default=True, help="Admin Center address.")
@click.option("--no-admin", is_flag=True, help="Do not serve the Admin Center.")
@click.option("--no-fork-server", is_flag=True, help="Start each run in a fresh interpreter.")
@click.option(
    "--fork-servers",
    default=None,
    metavar="N",
    help="How many fork servers start the runs (default: one per usable core, at most 4).",
)
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
@click.option(
    "--replace-app",
    is_flag=True,
    help="Take over a state directory another app has used (its history stays).",
)
@click.option(
    "--store",
    default=None,
    metavar="URL",
    envvar=STORE_ENVVAR,
    show_envvar=True,
    help="Keep runs, logs, settings and users in PostgreSQL (postgresql://USER@HOST/DB;"
    " password best in ~/.pgpass) instead of SQLite in the state directory.",
)
@click.option(
    "--cluster",
    default=None,
    metavar="DSN",
    help="Run with other hosts on this PostgreSQL database: one run per slot (README).",
)
@click.option("--host-name", default=None, help="This host's name in the cluster.")
@click.option(
    "--lease-ttl",
    default=None,
    metavar="SECONDS",
    help="With --cluster: how long a lease lives unrenewed (default 2; polls every tenth).",
)
@proxy_header_option
@remote_options
@notify_options
def run(
    app_spec: str,
    state_dir: str | None,
    admin: str,
    no_admin: bool,
    no_fork_server: bool,
    fork_servers: str | None,
    no_catch_up: bool,
    grace: str,
    keep_runs: int,
    max_log_per_run: str,
    replace_app: bool,
    store: str | None,
    cluster: str | None,
    host_name: str | None,
    lease_ttl: str | None,
    proxy_user_header: str | None,
    allow_remote: bool,
    forwarded_from: tuple[str, ...],
    metrics_token_file: str | None,
    secure_cookies: bool,
    notify_webhook: tuple[str, ...],
    notify_webhook_secret_file: str | None,
    notify_email: tuple[str, ...],
    smtp: str | None,
    notify_from: str | None,
) -> None:
    """Run every scheduler of the application until SIGTERM or SIGINT.

    A failed, crashed or timed-out run is logged on one line; with --notify-webhook or
    --notify-email, failures, recoveries and missed starts are also sent there.
    """
    from supervisor.cluster.timing import lease_timing
    from supervisor.notify.config import targets_from_options
    from supervisor.service.manager_mode import RunOptions, run_manager

    if lease_ttl is not None and cluster is None:
        raise DefinitionError("--lease-ttl", "sets the leases of --cluster; give --cluster too")

    targets = targets_from_options(
        webhooks=notify_webhook or (),
        webhook_secret_file=notify_webhook_secret_file,
        emails=notify_email or (),
        smtp=smtp,
        sender=notify_from,
    )

    run_manager(
        RunOptions(
            app_spec=app_spec,
            state_dir=resolve_state_dir(state_dir),
            admin=None if no_admin else parse_admin(admin),
            fork_server=not no_fork_server,
            fork_servers=fork_server_count(fork_servers, fork_server=not no_fork_server),
            grace_seconds=parse_duration(grace, field="--grace").total_seconds(),
            catch_up_missed_cron=not no_catch_up,
            max_runs_per_scheduler=keep_runs,
            max_log_bytes_per_run=parse_size(max_log_per_run, field="--max-log-per-run"),
            replace_app=replace_app,
            store=store,
            proxy_user_header=proxy_user_header,
            allow_remote=allow_remote,
            secure_cookies=secure_cookies,
            forwarded_from=frozenset(forwarded_from),
            metrics_token=read_token(metrics_token_file, field="--metrics-token-file"),
            notify_targets=tuple(targets),
            cluster=cluster,
            host_name=host_name,
            lease_timing=lease_timing(lease_ttl),
        )
    )


@main.command()
@state_dir_option
@click.option(
    "--app", "app_spec", default=None, help="The application (default: the installed one)."
)
@click.option("--admin", default="127.0.0.1:8080", show_default=True, help="Admin Center address.")
@proxy_header_option
@remote_options
def admin(
    state_dir: str | None,
    app_spec: str | None,
    admin: str,
    proxy_user_header: str | None,
    allow_remote: bool,
    forwarded_from: tuple[str, ...],
    metrics_token_file: str | None,
    secure_cookies: bool,
) -> None:
    """Serve the Admin Center for schedulers installed as systemd units."""
    from supervisor.service.systemd_mode import serve_admin

    serve_admin(
        operator_state_dir(state_dir),
        app_spec=app_spec,
        admin=parse_admin(admin),
        proxy_user_header=proxy_user_header,
        allow_remote=allow_remote,
        secure_cookies=secure_cookies,
        forwarded_from=frozenset(forwarded_from),
        metrics_token=read_token(metrics_token_file, field="--metrics-token-file"),
    )


# -- reading -------------------------------------------------------------------------------


@main.command(name="list")
@state_dir_option
@click.option(
    "--failed", is_flag=True, help="Only schedulers whose last run failed, crashed or timed out."
)
@offline_app_option
@display_options
@json_option
def list_(state_dir: str | None, failed: bool, app_spec: str | None, as_json: bool) -> None:
    """List every scheduler with its state and last error."""
    statuses = client(state_dir, app_spec=app_spec).statuses()
    # A manager whose store does not answer tells it with every status (``store``).
    store = next((s.store for s in statuses if s.store is not None), None)
    if failed:
        statuses = [s for s in statuses if is_failing(s)]
    if as_json:
        echo_json([views.status_json(s) for s in statuses])
        return
    table(
        ["ID", "KIND", "STATE", "LAST OUTCOME", "LAST STARTED", "NEXT PLANNED", "ERROR"],
        [
            [
                s.id,
                s.kind.value,
                s.state.value,
                s.last_outcome.value if s.last_outcome else "-",
                local_time(s.last_started_at),
                local_time(s.next_planned_at),
                first_line(s.last_error) or "-",
            ]
            for s in statuses
        ],
    )
    if store is not None:
        shown = display()
        click.echo(shown.paint(terminal.printable(f"store: {store.text}"), Style.BAD))


def is_failing(status: views.StatusView) -> bool:
    """Its last run failed, crashed or timed out, or its runs cannot start."""
    return (
        status.last_outcome in FAILED_OUTCOMES
        or status.state is State.FAILING
        or status.failed_starts > 0
    )


def schedule_text(s: views.StatusView) -> str:
    """When a scheduler runs, as its kind and settings say."""
    settings = s.settings
    delay = format_duration(settings.start_delay) if settings.start_delay else None
    match s.kind:
        case Kind.CRON:
            text = f"cron {settings.cron or '-'} ({settings.timezone})"
        case Kind.SCHEDULE:
            text = f"repeats, {format_duration(settings.pause_time)} after each run ends"
            if delay:
                text += f"; first {delay} after start"
        case Kind.ONE_SHOT:
            text = f"once, {delay} after start" if delay else "once, at start"
        case _:
            text = "manual: only when triggered"
    if settings.timeout is not None:
        text += f"; timeout {format_duration(settings.timeout)}"
    if settings.retries:
        first = format_duration(settings.retry_delay)
        text += f"; a failure retried up to {settings.retries}x, first after {first}"
    return text


def in_own_zone(value: datetime, timezone: str, shown: Display) -> str | None:
    """A CRON scheduler's time in its own zone, when that differs from the one shown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        own = value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return None if own == shown.time(value) else f"{own} in {timezone}"


def state_text(s: views.StatusView, now: datetime) -> str:
    """``running for 12 s (pid 4711, run …)``, or the state's name."""
    text = s.state.value
    if s.state is State.RUNNING:
        if s.run_phase in ("starting", "stopping"):
            text += f" ({s.run_phase})"
        if s.last_started_at is not None:
            text += f" for {span(now - s.last_started_at)}"
        details = [f"pid {s.current_pid}"] if s.current_pid else []
        if s.current_run_id:
            details.append(f"run {s.current_run_id}")
        if details:
            text += f" ({', '.join(details)})"
    return text


def status_rows(s: views.StatusView, shown: Display, now: datetime) -> list[tuple[str, str]]:
    """The lines of ``status`` as (name, text); texts are not yet made printable."""
    since = s.state_since or (s.last_started_at if s.state is State.RUNNING else None)
    next_planned = shown.time(s.next_planned_at)
    if s.next_planned_at is not None:
        notes = [ago(s.next_planned_at, now)]
        if s.kind is Kind.CRON:
            notes.append(in_own_zone(s.next_planned_at, s.settings.timezone, shown) or "")
        next_planned += f" ({', '.join(n for n in notes if n)})"
    rows = [
        ("id", s.id),
        ("name", s.name),
        ("description", s.description),
        ("kind", s.kind.value),
        ("schedule", schedule_text(s)),
        ("state", state_text(s, now)),
    ]
    if since is not None:
        rows.append(("since", f"{shown.time(since)} ({ago(since, now)})"))
    rows += [
        ("last started", shown.time(s.last_started_at)),
        ("last completed", shown.time(s.last_completed_at)),
        ("next planned", next_planned),
        ("last outcome", s.last_outcome.value if s.last_outcome else "-"),
        ("last error", s.last_error or "-"),
        ("last acted by", s.last_actor or "-"),
    ]
    if s.failed_starts:
        rows.append(("failed starts", f"{s.failed_starts} in a row"))
    rows += decision_rows(s)
    if s.host is not None:  # --cluster: the host that owns the scheduler
        rows.append(("host", s.host))
    if s.containment is not None:  # what Stop can rely on to end every process of a run
        rows.append(("containment", s.containment))
    if s.units is not None:  # systemd mode: say where the units live (runtime ones vanish)
        rows.append(("units", f"{s.units.service} ({s.units.kind})"))
    if s.store is not None:  # what is shown may be stale; what is done may not be stored
        rows.append(("store", s.store.text))
    return rows


@main.command()
@click.argument("scheduler_id", shell_complete=complete_scheduler_ids)
@state_dir_option
@offline_app_option
@display_options
@json_option
def status(scheduler_id: str, state_dir: str | None, app_spec: str | None, as_json: bool) -> None:
    """Show one scheduler: schedule, state and since when, last outcome with its full
    error (every line), and its last 10 log lines."""
    control = client(state_dir, app_spec=app_spec)
    s = control.status(scheduler_id)
    if as_json:
        echo_json(views.status_json(s))
        return
    shown = display()
    styles = {
        "state": WORD_STYLES.get(s.state.value),
        "last outcome": WORD_STYLES.get(s.last_outcome.value) if s.last_outcome else None,
        "last error": Style.BAD if s.last_error else None,
        "store": Style.BAD,
    }
    for name, value in status_rows(s, shown, datetime.now(UTC)):
        # Every line of a value (a traceback) stays, indented under the value.
        text = terminal.printable(value, continuation="\n" + " " * 16)
        click.echo(f"{name + ':':<16}{shown.paint(text, styles.get(name))}")
    try:
        tail = control.logs(LogQuery(scheduler_id=s.id, limit=STATUS_LOG_LINES))
    except SupervisorError:
        return  # the status stands without its log (e.g. the journal cannot be read)
    if tail:
        click.echo()
        for _, record in tail:
            line = terminal.log_line(views.log_json(record), when=shown.time(record.time))
            level = record.level
            style = (
                Style.BAD
                if level >= Level.ERROR
                else Style.WARN
                if level >= Level.WARNING
                else None
            )
            click.echo(shown.paint(line, style))


@main.command()
@click.argument("scheduler_id", shell_complete=complete_scheduler_ids)
@state_dir_option
@click.option("--limit", default=20, show_default=True)
@offline_app_option
@display_options
@json_option
def runs(
    scheduler_id: str, state_dir: str | None, limit: int, app_spec: str | None, as_json: bool
) -> None:
    """Show a scheduler's run history, newest first."""
    found = client(state_dir, app_spec=app_spec).runs(scheduler_id, limit=limit)
    if as_json:
        echo_json([views.run_json(r) for r in found])
        return
    hosted = any(r.host for r in found)  # --cluster: the host each run ran on
    table(
        [
            "RUN",
            *(["HOST"] if hosted else []),
            "TRIGGER",
            "BY",
            "STARTED",
            "ENDED",
            "OUTCOME",
            "ERROR",
        ],
        [
            [
                r.run_id,
                *([r.host or "-"] if hosted else []),
                r.trigger.value,
                r.triggered_by or "-",
                local_time(r.started_at),
                local_time(r.ended_at),
                r.outcome.value if r.outcome else "running",
                first_line(r.error) or "-",
            ]
            for r in found
        ],
    )


def _print_log(record: LogRecord, as_json: bool, *, scheduler_id: str | None = None) -> None:
    if as_json:
        shape = views.log_json(record)
        if scheduler_id is not None:
            shape["scheduler_id"] = scheduler_id
        click.echo(json.dumps(shape, ensure_ascii=False))
        return
    click.echo(terminal.log_line(views.log_json(record), when=local_time(record.time)))


def _level(text: str | None) -> Level | None:
    if text is None:
        return None
    try:
        return Level.parse(text)
    except ValueError as error:
        raise DefinitionError("--level", str(error)) from None


@main.command()
@click.argument("scheduler_id", required=False, shell_complete=complete_scheduler_ids)
@state_dir_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records (Ctrl-C ends).")
@click.option("--level", default=None, help="Lowest level to show (debug, info, warning, error).")
@click.option("--run", "run_id", default=None, help="Only this run's records: its ID or its start.")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=None,
    help="How many recent records [default: 200]; 0 with --follow: only new ones.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, hidden=True)
@click.option("--since", default=None, help="From this time: ISO 8601, or ago (1h, 30m, 2d).")
@click.option("--until", default=None, help="Before this time: ISO 8601, or ago (10m).")
@click.option("--grep", "text", default=None, help="Only records holding TEXT (any case).")
@click.option(
    "--field", "field_filters", multiple=True, metavar="NAME=VALUE", help="Field equals value."
)
@offline_app_option
@display_options
@json_option
def logs(
    scheduler_id: str | None,
    state_dir: str | None,
    follow: bool,
    level: str | None,
    run_id: str | None,
    lines: int | None,
    limit: int | None,
    since: str | None,
    until: str | None,
    text: str | None,
    field_filters: tuple[str, ...],
    app_spec: str | None,
    as_json: bool,
) -> None:
    """Print log records: of SCHEDULER_ID, or of every scheduler without it (one JSON
    object per line with --json). A line marks where each run's records begin."""
    count = lines if lines is not None else limit if limit is not None else DEFAULT_LOG_LINES
    if count == 0 and not follow:
        raise DefinitionError("--lines", "0 shows nothing without --follow")
    now = datetime.now(UTC)
    control = client(state_dir, app_spec=app_spec)
    query = LogQuery(
        scheduler_id=scheduler_id,
        run_id=None if run_id is None else logsearch.resolve_run(control, scheduler_id, run_id),
        min_level=_level(level),
        limit=max(count, 1),
        text=text,
        fields=logsearch.parse_fields(field_filters),
        since=None if since is None else logsearch.parse_when(since, now=now, option="--since"),
        until=None if until is None else logsearch.parse_when(until, now=now, option="--until"),
    )
    try:
        _print_logs(control, query, count=count, follow=follow, as_json=as_json)
    except KeyboardInterrupt:  # Ctrl-C ends --follow: no traceback, the shell's 130
        sys.stdout.flush()
        click.get_current_context().exit(130)
    except BrokenPipeError:  # the reader went away (| head)
        sys.stderr.close()
        click.get_current_context().exit(0)


def _print_logs(
    control: Client, query: LogQuery, *, count: int, follow: bool, as_json: bool
) -> None:
    found = control.search_logs(query)
    cursor = found[-1].cursor if found else 0
    if found.scanned_to is not None:  # a follow goes on after every record examined
        cursor = max(cursor, found.scanned_to)
    shown = found if count > 0 else []
    run_shown: str | None = None
    while True:
        for hit in shown:
            if not as_json and hit.record.run_id != run_shown:
                when = "-" if hit.run is None else local_time(hit.run.started_at)
                click.echo(logsearch.separator(hit, when=when))
                run_shown = hit.record.run_id
            _print_log(hit.record, as_json, scheduler_id=hit.scheduler_id)
        if not follow:
            return
        sys.stdout.flush()
        time.sleep(FOLLOW_POLL_SECONDS)  # polling a live source, not waiting in a test
        shown = found = control.search_logs(dataclasses.replace(query, after=cursor, limit=1000))
        if found:
            cursor = max(cursor, found[-1].cursor)
        if found.scanned_to is not None:
            cursor = max(cursor, found.scanned_to)


# -- controls ------------------------------------------------------------------------------


@main.command()
@click.argument("scheduler_id")
@state_dir_option
def start(scheduler_id: str, state_dir: str | None) -> None:
    """Start a stopped scheduler (its start delay applies again)."""
    client(state_dir).start(scheduler_id)
    click.echo(f"started {scheduler_id}")


# -- decisions: stop, disable, pause, resume (each with who and why) -----------------------

reason_option = click.option(
    "--reason",
    default=None,
    metavar="TEXT",
    help="Why (one line): shown with the status, in the audit and in the run's log.",
)


@main.command()
@click.argument("scheduler_id")
@reason_option
@state_dir_option
def stop(scheduler_id: str, reason: str | None, state_dir: str | None) -> None:
    """Cancel the current run and plan nothing more until started."""
    note = client(state_dir).stop(scheduler_id, reason=reason)
    click.echo(f"stopped {scheduler_id}" + (f": {reason}" if reason else ""))
    if note is not None:  # the store is down: the stop was done, its audit entry waits
        click.echo(f"warning: {note}", err=True)


def decision_rows(s: views.StatusView) -> list[tuple[str, str]]:
    """The status lines of an operator's decision and of a planned retry."""
    rows: list[tuple[str, str]] = []
    if s.decision is not None:
        rows.append(("decision", _decision_text(s.decision)))
    if s.retry is not None:
        attempt, of = s.retry
        rows.append(("retry", f"{attempt} of {of} at {local_time(s.next_planned_at)}"))
    return rows


def _decision_text(decision: Mapping[str, Any]) -> str:
    """``stopped by alice at 2026-12-03 02:14:00: ERP maintenance`` in the CLI's time
    format (the manager's own text when its fields cannot be read)."""
    try:
        kind, actor = str(decision["kind"]), str(decision["actor"])
        at = datetime.fromisoformat(str(decision["at"]))
        until = decision.get("until")
        if until:
            text = f"paused until {local_time(datetime.fromisoformat(str(until)))} by {actor}"
        else:
            text = f"{kind} by {actor} at {local_time(at)}"
    except (KeyError, ValueError):
        return str(decision.get("text", ""))
    reason = decision.get("reason")
    return text if not reason else f"{text}: {reason}"


@main.command()
@click.argument("scheduler_id")
@reason_option
@state_dir_option
def disable(scheduler_id: str, reason: str | None, state_dir: str | None) -> None:
    """Disable a scheduler: it plans no runs until enabled, across restarts."""
    client(state_dir).disable(scheduler_id, reason=reason)
    click.echo(f"disabled {scheduler_id}" + (f": {reason}" if reason else ""))


@main.command()
@click.argument("scheduler_id")
@state_dir_option
def enable(scheduler_id: str, state_dir: str | None) -> None:
    """Enable a disabled scheduler again."""
    client(state_dir).enable(scheduler_id)
    click.echo(f"enabled {scheduler_id}")


@main.command()
@click.argument("scheduler_id")
@click.option(
    "--until",
    "until_text",
    required=True,
    metavar="WHEN",
    help="18:00 (today, or tomorrow once passed), 2026-12-03T18:00 (local time) or 2h.",
)
@reason_option
@state_dir_option
def pause(scheduler_id: str, until_text: str, reason: str | None, state_dir: str | None) -> None:
    """Plan no runs until a time, then resume by itself (a run in progress finishes)."""
    zone = _local_zone()
    if zone is None:
        now = datetime.now().astimezone()
        click.echo(
            f"note: the local time zone has no name (TZ or /etc/localtime); --until is read"
            f" at today's offset {now:%z}, which a DST change before then does not follow",
            err=True,
        )
    else:
        now = datetime.now(zone)
    until = parse_until(until_text, now=now)
    client(state_dir).pause(scheduler_id, until=until, reason=reason)
    shown = until.astimezone(now.tzinfo).strftime("%Y-%m-%d %H:%M %Z")
    click.echo(f"paused {scheduler_id} until {shown}" + (f": {reason}" if reason else ""))


def _local_zone() -> ZoneInfo | None:
    """The local IANA zone: ``TZ`` if it names one, else the zone ``/etc/localtime`` links
    to; None if neither names a zone."""
    name = os.environ.get("TZ")
    if name is not None:
        name = name.removeprefix(":") or "UTC"  # POSIX: an empty TZ is UTC
    else:
        target = os.path.realpath("/etc/localtime")
        _, found, name = target.rpartition("/zoneinfo/")
        if not found:
            return None
    try:
        return zone_named(name)
    except DefinitionError:
        return None


@main.command()
@click.argument("scheduler_id")
@state_dir_option
def resume(scheduler_id: str, state_dir: str | None) -> None:
    """End a pause (or a stop) now; the start delay applies again."""
    client(state_dir).resume(scheduler_id)
    click.echo(f"resumed {scheduler_id}")


@main.command(name="execute")
@click.argument("scheduler_id")
@state_dir_option
@json_option
def execute(scheduler_id: str, state_dir: str | None, as_json: bool) -> None:
    """Start a run now (refused while a run is in progress)."""
    run_id = client(state_dir).execute(scheduler_id)
    if as_json:
        echo_json({"run_id": run_id})
    else:
        click.echo(f"started run {run_id} of {scheduler_id}")


@main.command()
@click.argument("scheduler_id")
@click.argument("action_id")
@state_dir_option
def action(scheduler_id: str, action_id: str, state_dir: str | None) -> None:
    """Run a scheduler's custom action and print its result."""
    click.echo(terminal.printable(client(state_dir).run_action(scheduler_id, action_id)))


def _duration(text: str, field: str) -> timedelta:
    return parse_duration(text, field=field)


@main.command()
@click.argument("scheduler_id")
@state_dir_option
@click.option("--start-delay", default=None, help="Delay after start, e.g. 30s.")
@click.option("--pause-time", default=None, help="Pause between runs, e.g. 5m.")
@click.option("--cron", default=None, help="Cron expression (5 fields, or 6 with seconds first).")
@click.option("--timezone", default=None, help="IANA time zone for --cron.")
@click.option("--timeout", default=None, help="Longest allowed run, e.g. 1h; 'none' for no limit.")
@click.option("--disable/--enable", "disabled", default=None, help="Disable or enable.")
@click.option("--retries", default=None, type=click.IntRange(0), help="Retries of a failed run.")
@click.option("--retry-delay", default=None, help="Wait before the first retry, e.g. 30s.")
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
    retries: int | None,
    retry_delay: str | None,
    reset: bool,
    as_json: bool,
) -> None:
    """Show or change a scheduler's timing settings (changes apply at once)."""
    changes: dict[str, Any] = {}  # the fields given, for a SettingsChange
    if start_delay is not None:
        changes["start_delay"] = _duration(start_delay, "start_delay")
    if pause_time is not None:
        changes["pause_time"] = _duration(pause_time, "pause_time")
    if cron is not None:
        changes["cron"] = cron
    if timezone is not None:
        changes["timezone"] = timezone
    if timeout is not None:
        changes["timeout"] = None if timeout.lower() == "none" else _duration(timeout, "timeout")
    if disabled is not None:
        changes["disabled"] = disabled
    if retries is not None:
        changes["retries"] = retries
    if retry_delay is not None:
        changes["retry_delay"] = _duration(retry_delay, "retry_delay")
    if reset and changes:
        raise DefinitionError("--reset", "cannot be combined with changes")
    control = client(state_dir)
    if reset:
        view = control.reset_settings(scheduler_id)
    elif changes:
        view = control.update_settings(scheduler_id, SettingsChange.of(changes))
    else:
        view = control.find_settings(scheduler_id)
    if as_json:
        echo_json(views.settings_view_json(view))
        return
    for field in fields(view.effective):
        value = getattr(view.effective, field.name)
        if value is None:
            shown = "none"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, timedelta):
            shown = format_duration(value)
        else:
            shown = str(value)
        mark = "  (overridden)" if field.name in view.overrides else ""
        click.echo(f"{field.name + ':':<14}{shown}{mark}")


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
    from supervisor.usecases.planning import cron_runs

    start = _parse_from(from_)
    if (scheduler_id is None) == (cron is None):
        raise DefinitionError("next-runs", "give a scheduler ID or --cron EXPR (one of them)")
    if cron is not None:
        times = cron_runs(cron, timezone, start=start, count=count)
    else:
        assert scheduler_id is not None
        from supervisor.service.offline import open_planning

        try:
            with open_planning(operator_state_dir(state_dir), app_spec=app_spec) as planning:
                times = planning.next_runs(_operator(), scheduler_id, start=start, count=count)
        except UnknownScheduler as error:
            known = _known_ids(state_dir)
            raise UnknownSchedulerHint(scheduler_id, close_ids(scheduler_id, known)) from error
    if as_json:
        click.echo(json.dumps([t.isoformat() for t in times]))
    else:
        for t in times:
            click.echo(t.isoformat())


def _known_ids(state_dir: str | None) -> list[str]:
    """The scheduler IDs the backend (or the state database) knows; none if it cannot say."""
    try:
        reader = open_reader(operator_state_dir(state_dir))
        try:
            return [s.id for s in reader.client.statuses()]
        finally:
            reader.client.close()
    except SupervisorError:
        return []


def _operator() -> Subject:
    """The person at the terminal: every permission, named after the OS user."""
    return su(os_user_name())


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


main.add_command(users)
register(main)  # exec, generate-units, install-units, uninstall-units


def _complete_every_scheduler_id(group: click.Group) -> None:
    """Every command's SCHEDULER_ID argument completes to the known IDs (also those of
    commands added elsewhere)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _complete_every_scheduler_id(command)
            continue
        for param in command.params:
            if param.name == "scheduler_id" and param._custom_shell_complete is None:
                param._custom_shell_complete = complete_scheduler_ids


_complete_every_scheduler_id(main)
