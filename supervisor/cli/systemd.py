"""The systemd mode's commands: ``exec``, ``generate-units``, ``install-units`` and
``uninstall-units`` (added to the ``supervisor`` group by ``register(main)``).

Each parses, calls ``service.systemd_mode`` (the mode's composition root) or
``systemd.execone``, and prints. The operator commands (``list``, ``status``, ...) reach
systemd through ``cli.client`` like they reach a manager. The unit commands keep their
own default state directory (``service.mode.units_state_dir``), never the manager's.
The top layer (with ``cli``): may import anything but ``cli.main``; heavy parts where used.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from supervisor.core.records import Trigger
from supervisor.service.mode import units_state_dir

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def _trigger(value: str | None) -> Trigger | None:
    return None if value is None else Trigger(value)


def _timeout(value: str | None) -> timedelta | None:
    from supervisor.core.durations import parse_duration

    if value is None or value.lower() == "none":
        return None
    return parse_duration(value, field="--timeout")


@click.command(name="exec")
@click.argument("scheduler_id")
@click.option("--app", "app_spec", required=True, help="The application, as MODULE:ATTR.")
@click.option("--run-id", default=None, help="Run ID (default: $INVOCATION_ID, else a new one).")
@click.option(
    "--trigger",
    type=click.Choice([t.value for t in Trigger]),
    default=None,
    help="What started the run (default: found out from systemd's environment).",
)
@click.option("--timeout", default=None, help="Cancel the run after this long, e.g. 10m.")
@click.option(
    "--log-to",
    type=click.Choice(["auto", "journal", "stderr"]),
    default="auto",
    show_default=True,
    help="Where records go: journald (under systemd) or JSON lines on stderr.",
)
@click.option("--journal-socket", default=None, hidden=True)
@click.option("--journal-stream-socket", default=None, hidden=True)
def exec_command(
    scheduler_id: str,
    app_spec: str,
    run_id: str | None,
    trigger: str | None,
    timeout: str | None,
    log_to: str,
    journal_socket: str | None,
    journal_stream_socket: str | None,
) -> None:
    """Run one execution of SCHEDULER_ID in the foreground (what a systemd unit runs).

    Exit status: 0 succeeded, 1 failed, 70 crashed, 124 timed out, 143 cancelled
    (a command runner's own status otherwise).
    """
    from supervisor.runs.child import MAX_RUN_ID
    from supervisor.systemd.execone import ExecRequest, execute_one
    from supervisor.systemd.journal import JOURNAL_SOCKET

    if run_id is not None and not (_RUN_ID.fullmatch(run_id) and len(run_id) <= MAX_RUN_ID):
        raise click.BadParameter(
            f"{run_id!r}: letters, digits, '.', '_', ':' and '-', at most {MAX_RUN_ID}",
            param_hint="--run-id",
        )
    request = ExecRequest(
        app_spec=app_spec,
        scheduler_id=scheduler_id,
        run_id=run_id,
        trigger=_trigger(trigger),
        timeout=_timeout(timeout),
        log_to=log_to,  # type: ignore[arg-type]
        journal_socket=journal_socket or JOURNAL_SOCKET,
        **({"journal_stream_socket": journal_stream_socket} if journal_stream_socket else {}),
    )
    code = execute_one(request)
    sys.stdout.flush()
    raise SystemExit(code)


def _units_state_dir_option(func: Any) -> Any:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="State directory of the install (default: $SUPERVISOR_STATE_DIR, "
        "/var/lib/sched-supervisor-units for root, ~/.local/state/sched-supervisor-units "
        "otherwise: never the manager's).",
    )(func)


def _unit_options(func: Any) -> Any:
    func = click.option("--prefix", default=None, help="Unit name prefix (default: the app's).")(
        func
    )
    func = click.option(
        "--user",
        default=None,
        help="Run the services of schedulers that name no user of their own as this user "
        "(User=; default: root, or sched-supervisor for the Debian package's command).",
    )(func)
    return click.option(
        "--app", "app_spec", required=True, help="The application, as MODULE:ATTR."
    )(func)


@click.command(name="generate-units")
@_unit_options
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Where to write the unit files.",
)
@_units_state_dir_option
def generate_units(
    app_spec: str, user: str | None, prefix: str | None, output_dir: str, state_dir: str | None
) -> None:
    """Write the app's schedulers as systemd units (a .service each, a .timer where timed;
    SCHEDULE also gets a -start.timer for its start delay).

    Prints the files written; warns where systemd's DST rules differ from the manager's.
    """
    from supervisor.service import systemd_mode

    written, warnings = systemd_mode.generate_units(
        app_spec,
        state_dir=units_state_dir(state_dir),
        output_dir=Path(output_dir),
        user=user,
        prefix=prefix,
    )
    for path in written:
        click.echo(str(path))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command(name="install-units")
@_unit_options
@click.option(
    "--runtime",
    is_flag=True,
    help="Install into /run/systemd/system (gone after a reboot) instead of /etc.",
)
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Install into this directory instead (for tests and unusual layouts).",
)
@_units_state_dir_option
def install_units(
    app_spec: str,
    user: str | None,
    prefix: str | None,
    runtime: bool,
    unit_dir: str | None,
    state_dir: str | None,
) -> None:
    """Install the app's units, reload systemd, enable and start the timers.

    Schedulers whose settings say `disabled` keep their timers stopped. What was written
    is recorded in the state directory, for `uninstall-units` and for the other commands
    (which then control systemd instead of a manager).
    """
    from supervisor.service import systemd_mode

    installed = systemd_mode.install_units(
        app_spec,
        state_dir=units_state_dir(state_dir),
        user=user,
        prefix=prefix,
        runtime=runtime,
        unit_dir=Path(unit_dir) if unit_dir else None,
    )
    report = installed.report
    kind = "runtime: gone after a reboot" if runtime else "persistent"
    click.echo(f"installed {len(report.manifest.units)} units into {installed.unit_dir} ({kind})")
    for name in report.started:
        click.echo(f"started {name}")
    for name in sorted(installed.disabled_timers):
        click.echo(f"left {name} stopped (disabled)")
    for path in report.removed:
        click.echo(f"removed {path} (no longer generated)")
    for warning in installed.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command(name="uninstall-units")
@_units_state_dir_option
def uninstall_units(state_dir: str | None) -> None:
    """Stop, disable and remove exactly the units `install-units` wrote."""
    from supervisor.service import systemd_mode

    removed, count = systemd_mode.uninstall_units(units_state_dir(state_dir))
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"uninstalled {count} units")


def register(main: click.Group) -> None:
    """Add the systemd mode's commands to the ``supervisor`` group."""
    for command in (exec_command, generate_units, install_units, uninstall_units):
        main.add_command(command)
