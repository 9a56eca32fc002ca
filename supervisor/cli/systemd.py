"""The systemd mode's commands, and the client the operator commands use in that mode.

- ``register(main)`` adds ``exec``, ``generate-units``, ``install-units`` and
  ``uninstall-units`` to the ``supervisor`` command group.
- ``SystemdClient(state_dir)`` answers ``call(op, **args)`` like ``control.ControlClient``
  (same ops, same JSON answers: it is ``control.Dispatcher`` over use cases bound to a
  ``SystemdBackend``), so ``list``, ``status``, ``logs``, ... work unchanged. ``status``
  adds ``units``: ``{"kind": "persistent"|"runtime"|..., "service": path, "timer": path,
  "start_timer": path}`` (``start_timer``: SCHEDULE's, else null)
  (the unit files systemd uses: /etc wins over /run, and /run is gone after a reboot).
- ``select_client(state_dir)`` picks the mode: ``$SUPERVISOR_BACKEND`` (``systemd`` or
  ``manager``) if set, else systemd when the state directory holds an install manifest
  (written by ``install-units``), else the manager.
- ``open_systemd_mode(state_dir)`` gives the ``Schedulers``, the ``UseCases`` built over a
  ``SystemdBackend``, and the store, for ``supervisor admin`` to serve the Admin Center with.

The top layer (with ``cli``): may import anything but ``cli`` at module level.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from supervisor.cli.options import state_dir_option
from supervisor.core.access import os_user_name
from supervisor.core.records import Trigger
from supervisor.service.paths import DATABASE_NAME, ensure_state_dir, resolve_state_dir

if TYPE_CHECKING:  # imported where used: `supervisor list` in manager mode stays quick
    from supervisor.core.app import Configurator
    from supervisor.core.definitions import Settings
    from supervisor.service.control import ControlClient
    from supervisor.store.sqlite import SqliteStore
    from supervisor.systemd.backend import Systemd, SystemdBackend, TemplateLayout
    from supervisor.systemd.install import Manifest, RenderedUnit
    from supervisor.usecases.schedulers import Schedulers, UseCases

MANIFEST_NAME = "systemd-units.json"  # unitinstall.MANIFEST_NAME, without importing it
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


# -- the operator commands in systemd mode ---------------------------------------------------


@dataclass(slots=True)
class SystemdMode:
    """The app's schedulers with their use cases bound to systemd, and the store they use.

    ``close()`` closes the store.
    """

    schedulers: Schedulers
    use_cases: UseCases
    store: SqliteStore
    backend: SystemdBackend
    manifest: Manifest | None
    app_spec: str

    def close(self) -> None:
        self.store.close()


def _import_paths(manifest: Manifest | None) -> None:
    """Make the app importable as it was at install time."""
    if manifest is None:
        return
    for path in reversed([*([manifest.cwd] if manifest.cwd else []), *manifest.sys_path]):
        if path and path not in sys.path:
            sys.path.insert(0, path)


def open_systemd_mode(
    state_dir: Path,
    *,
    app_spec: str | None = None,
    systemd: Systemd | None = None,
    environ: Mapping[str, str] | None = None,
) -> SystemdMode:
    """Load the app (``app_spec``, else ``$SUPERVISOR_APP``, else the install manifest's)
    and build its use cases over a ``SystemdBackend``; for the CLI and ``supervisor admin``."""
    from supervisor.core.app import load_app
    from supervisor.core.errors import AppLoadError
    from supervisor.service.paths import check_app_from_state, open_state_dir
    from supervisor.store.sqlite import SqliteStore
    from supervisor.systemd.backend import SystemdBackend
    from supervisor.systemd.install import manifest_path, read_manifest
    from supervisor.usecases.schedulers import UseCases, enable

    env = os.environ if environ is None else environ
    manifest = read_manifest(state_dir)
    spec = app_spec or env.get("SUPERVISOR_APP") or (manifest.app_spec if manifest else None)
    if not spec:
        raise AppLoadError(
            f"systemd mode needs the app: no units are installed from {state_dir} "
            "(run `supervisor install-units --app MODULE:ATTR`) and no --app was given"
        )
    state = open_state_dir(state_dir)
    if manifest is not None:
        # The manifest chooses import paths (and maybe the app): trust it only as far as
        # nobody but the caller or root could have written it or the code it points at.
        check_app_from_state(
            state,
            app_spec=spec,
            source=manifest_path(state_dir),
            search_path=[*([manifest.cwd] if manifest.cwd else []), *manifest.sys_path, *sys.path],
        )
    _import_paths(manifest)
    app = load_app(spec)
    schedulers = enable(app)
    directory = state.path
    store = SqliteStore.open(directory / DATABASE_NAME)
    try:
        backend = SystemdBackend(
            schedulers.registry,
            store=store,
            layout=unit_layout(app, manifest=manifest),
            systemd=systemd,
            app_spec=spec,
            action_cwd=None if manifest is None else manifest.cwd,
            action_sys_path=() if manifest is None else manifest.sys_path,
        )
        use_cases = UseCases(schedulers.registry, backend=backend, audit=store)
    except BaseException:
        store.close()
        raise
    return SystemdMode(
        schedulers=schedulers,
        use_cases=use_cases,
        store=store,
        backend=backend,
        manifest=manifest,
        app_spec=spec,
    )


class SystemdClient:
    """``call(op, **args)`` like ``control.ControlClient``, answered by the systemd backend.

    Errors raise ``control.RemoteError`` carrying the exit code, as the manager's do.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        app_spec: str | None = None,
        systemd: Systemd | None = None,
        user_name: str | None = None,
    ) -> None:
        from supervisor.core.access import su
        from supervisor.service.control import Dispatcher

        self.mode = open_systemd_mode(state_dir, app_spec=app_spec, systemd=systemd)
        manifest = self.mode.manifest
        info = {
            "pid": os.getpid(),
            "app": self.mode.app_spec,
            "backend": "systemd",
            "unit_dir": None if manifest is None else manifest.unit_dir,
            "runtime": None if manifest is None else manifest.runtime,
        }
        self._dispatcher = Dispatcher(self.mode.use_cases, info)
        self._subject = su(user_name or os_user_name())

    def call(self, op: str, **args: Any) -> Any:
        from supervisor.service.control import RemoteError

        answer = self._dispatcher.handle(self._subject, {"op": op, "args": args})
        if not answer.get("ok"):
            raise RemoteError(str(answer.get("error")), int(answer.get("exit_code", 1)))
        result = answer.get("result")
        if op == "status" and isinstance(result, dict):
            # Units in /etc win over /run; runtime ones are gone after a reboot: say which.
            location = self.mode.backend.location(str(result["id"]))
            result["units"] = {
                "kind": location.kind,
                "service": location.service_path,
                "timer": location.timer_path,
                "start_timer": location.start_timer_path,
            }
        return result

    def close(self) -> None:
        self.mode.close()


def backend_choice(state_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``systemd`` or ``manager``: ``$SUPERVISOR_BACKEND`` if set, else ``systemd`` when
    ``state_dir`` holds an install manifest, else ``manager``."""
    from supervisor.core.errors import DefinitionError

    env = os.environ if environ is None else environ
    chosen = env.get("SUPERVISOR_BACKEND", "").strip().lower()
    if chosen in ("systemd", "manager"):
        return chosen
    if chosen not in ("", "auto"):
        raise DefinitionError(
            "SUPERVISOR_BACKEND", f"must be systemd, manager or auto, not {chosen!r}"
        )
    return "systemd" if (Path(state_dir) / MANIFEST_NAME).exists() else "manager"


def select_client(
    state_dir: Path, environ: Mapping[str, str] | None = None
) -> ControlClient | SystemdClient:
    """The client for the operator commands: the manager's or systemd's (``backend_choice``)."""
    from supervisor.service.control import ControlClient

    if backend_choice(state_dir, environ) == "systemd":
        return SystemdClient(state_dir)
    return ControlClient(state_dir)


# -- rendering (the units module) ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendering:
    """An app's units, and warnings for the user (DST differences)."""

    units: list[RenderedUnit]
    warnings: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderOptions:
    """How the units run ``supervisor exec``: the app, interpreter and import path.

    ``python_path``: the working directory, then the entries of ``$PYTHONPATH``, as
    the command was given them.
    """

    app_spec: str
    state_dir: Path
    python: str
    cwd: str
    python_path: tuple[str, ...]
    prefix: str
    user: str | None = None


def unit_layout(app: Configurator, *, manifest: Manifest | None) -> TemplateLayout:
    """How the units of ``app`` are named (the install's prefix, else the default one)."""
    from supervisor.systemd.backend import TemplateLayout
    from supervisor.systemd.units import default_prefix

    prefix = manifest.prefix if manifest is not None and manifest.prefix else None
    return TemplateLayout(prefix or default_prefix(app.name))


def render_units(
    app: Configurator,
    options: RenderOptions,
    *,
    settings: Callable[[str], Settings] | None = None,
) -> Rendering:
    """Every unit of ``app`` (``systemd.units``; code defaults: overrides go in drop-ins),
    and the DST warnings for the effective ``settings``. Touches no disk."""
    from supervisor.systemd import units
    from supervisor.systemd.install import RenderedUnit
    from supervisor.usecases.schedulers import enable

    definitions = list(enable(app).registry)
    rendered = units.render_units(
        definitions,
        app_spec=options.app_spec,
        python=options.python,
        working_dir=options.cwd,
        prefix=options.prefix,
        state_dir=str(options.state_dir),
        user=options.user,
        python_path=list(options.python_path),
        # Run this very package, wherever it lives (a venv, the Debian package's
        # private directory): ``-m supervisor`` could find another one, or none.
        package_dir=str(Path(units.__file__).resolve().parents[2]),
    )
    warnings = units.dst_warnings(definitions, start=datetime.now(UTC), settings=settings)
    return Rendering(
        units=[RenderedUnit(name=unit.name, text=unit.text) for unit in rendered],
        warnings=warnings,
    )


def command_python_path(cwd: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The working directory and the usable ``$PYTHONPATH`` entries (absolute, no ``:``)."""
    out: list[str] = []
    for entry in [cwd, *environ.get("PYTHONPATH", "").split(":")]:
        path = os.path.abspath(entry) if entry else ""
        if path and path not in out:
            out.append(path)
    return tuple(out)


def _render_options(
    app: Configurator,
    app_spec: str,
    state_dir: str | None,
    user: str | None,
    prefix: str | None,
) -> RenderOptions:
    from supervisor.systemd.units import check_prefix, default_prefix

    cwd = os.getcwd()
    return RenderOptions(
        app_spec=app_spec,
        state_dir=resolve_state_dir(state_dir).absolute(),
        python=sys.executable,
        cwd=cwd,
        python_path=command_python_path(cwd, os.environ),
        prefix=check_prefix(prefix) if prefix else default_prefix(app.name),
        user=user,
    )


def _unit_options(func: Any) -> Any:
    func = click.option("--prefix", default=None, help="Unit name prefix (default: the app's).")(
        func
    )
    func = click.option("--user", default=None, help="Run the services as this user (User=).")(func)
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
@state_dir_option
def generate_units(
    app_spec: str, user: str | None, prefix: str | None, output_dir: str, state_dir: str | None
) -> None:
    """Write the app's schedulers as systemd units (a .service each, a .timer where timed;
    SCHEDULE also gets a -start.timer for its start delay).

    Prints the files written; warns where systemd's DST rules differ from the manager's.
    """
    from supervisor.core.app import load_app

    app = load_app(app_spec)
    rendering = render_units(app, _render_options(app, app_spec, state_dir, user, prefix))
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for unit in rendering.units:
        (directory / unit.name).write_text(unit.text)
        click.echo(str(directory / unit.name))
    for warning in rendering.warnings:
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
@state_dir_option
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
    from supervisor.core.app import load_app
    from supervisor.core.settings import from_store
    from supervisor.store.sqlite import SqliteStore
    from supervisor.systemd.backend import Systemd, TemplateLayout
    from supervisor.systemd.install import (
        PERSISTENT_UNIT_DIR,
        RUNTIME_UNIT_DIR,
        InstallPlan,
        install,
        settings_dropins,
    )
    from supervisor.usecases.schedulers import enable

    app = load_app(app_spec)
    options = _render_options(app, app_spec, state_dir, user, prefix)
    ensure_state_dir(options.state_dir)
    with SqliteStore.open(options.state_dir / DATABASE_NAME) as store:
        overrides = store.all_overrides()
    schedulers = enable(app)

    def effective(scheduler_id: str) -> Settings:
        options = schedulers.registry.get(scheduler_id)
        return from_store(options, overrides.get(scheduler_id, {})).effective

    rendering = render_units(app, options, settings=effective)
    target = Path(unit_dir) if unit_dir else (RUNTIME_UNIT_DIR if runtime else PERSISTENT_UNIT_DIR)
    layout = TemplateLayout(options.prefix)
    disabled = frozenset(
        name
        for definition in schedulers.registry
        if effective(definition.id).disabled
        for name in (layout.timer_name(definition), layout.start_timer_name(definition))
        if name is not None
    )
    plan = InstallPlan(
        app_spec=app_spec,
        unit_dir=target,
        runtime=runtime,
        units=rendering.units,
        dropins=settings_dropins(layout, list(schedulers.registry), overrides),
        disabled_timers=disabled,
        start_timers=frozenset(
            name
            for definition in schedulers.registry
            if (name := layout.start_timer_name(definition)) is not None
        ),
        cwd=options.cwd,
        sys_path=options.python_path,
        python=options.python,
        prefix=options.prefix,
        dropin_names=[
            (dropin.unit, dropin.name)
            for definition in schedulers.registry
            for dropin in layout.settings_dropins(definition, definition.defaults)
        ],
    )
    others = [d for d in (PERSISTENT_UNIT_DIR, RUNTIME_UNIT_DIR) if d != target]
    report = install(plan, state_dir=options.state_dir, systemd=Systemd(), other_unit_dirs=others)
    kind = "runtime: gone after a reboot" if runtime else "persistent"
    click.echo(f"installed {len(report.manifest.units)} units into {target} ({kind})")
    for name in report.started:
        click.echo(f"started {name}")
    for name in sorted(disabled):
        click.echo(f"left {name} stopped (disabled)")
    for path in report.removed:
        click.echo(f"removed {path} (no longer generated)")
    for warning in [*rendering.warnings, *report.warnings]:
        click.echo(f"warning: {warning}", err=True)


@click.command(name="uninstall-units")
@state_dir_option
def uninstall_units(state_dir: str | None) -> None:
    """Stop, disable and remove exactly the units `install-units` wrote."""
    from supervisor.systemd.backend import Systemd
    from supervisor.systemd.install import uninstall

    directory = resolve_state_dir(state_dir)
    report = uninstall(state_dir=directory, systemd=Systemd())
    for path in report.removed:
        click.echo(f"removed {path}")
    click.echo(f"uninstalled {len(report.units)} units")


def register(main: click.Group) -> None:
    """Add the systemd mode's commands to the ``supervisor`` group."""
    for command in (exec_command, generate_units, install_units, uninstall_units):
        main.add_command(command)
