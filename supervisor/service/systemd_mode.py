"""The composition root of systemd mode: the app's use cases bound to systemd, the units
rendered and installed, and the Admin Center served over them.

- ``open_systemd_mode(state_dir)``: the ``Schedulers``, the ``UseCases`` built over a
  ``SystemdBackend``, the store and the manifest, for the CLI and ``supervisor admin``.
- ``render_units``/``generate_units``/``install_units``/``uninstall_units``: the unit files
  of an app as values, written to a directory, or installed with a manifest.
- ``serve_admin``: ``supervisor admin`` (blocks until SIGTERM/SIGINT).
- Units run as the scheduler's ``Options.user``, else ``--user``, else the Debian
  package's service user for the packaged command (``default_unit_user``), else root
  (with a warning).

The heavy parts (jinja2, the systemd backend, the store) are imported where used, so
importing this costs little (the mode itself is picked by ``service.mode``). May import
everything except ``cli``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.core.errors import AppLoadError
from supervisor.service.paths import (
    DATABASE_NAME,
    SERVICE_USER,
    check_app_from_state,
    ensure_state_dir,
    open_state_dir,
)

if TYPE_CHECKING:
    from supervisor.core.app import Configurator
    from supervisor.core.definitions import Settings
    from supervisor.store.sqlite import SqliteStore
    from supervisor.systemd.backend import DropIn, Systemd, SystemdBackend, TemplateLayout
    from supervisor.systemd.install import InstallReport, Manifest, RenderedUnit
    from supervisor.usecases.schedulers import Schedulers, UseCases


# -- the use cases over systemd ------------------------------------------------------------


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
    and bind its use cases to a ``SystemdBackend``. Raises ``AppLoadError`` when no app is
    known or it cannot be imported, ``UntrustedPath`` when the manifest or the code it names
    could be changed by someone else, ``StoreError`` for an unusable state database."""
    from supervisor.core.app import load_app
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
    store = SqliteStore.open(state.path / DATABASE_NAME)
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


def serve_admin(
    state_dir: Path,
    *,
    app_spec: str | None,
    admin: tuple[str, int],
    proxy_user_header: str | None = None,
    allow_remote: bool = False,
    secure_cookies: bool = False,
    forwarded_from: frozenset[str] = frozenset(),
    metrics_token: str | None = None,
) -> None:
    """``supervisor admin``: the Admin Center over systemd until SIGTERM or SIGINT."""
    import signal
    import threading

    from supervisor.service.manager_mode import RunOptions, admin_factory

    mode = open_systemd_mode(state_dir, app_spec=app_spec)
    try:
        options = RunOptions(app_spec=mode.app_spec, state_dir=state_dir, admin=admin)
        factory = admin_factory(
            proxy_user_header,
            allow_remote=allow_remote,
            secure_cookies=secure_cookies,
            forwarded_from=forwarded_from,
            metrics_token=metrics_token,
        )
        server = factory(mode.use_cases, mode.store, options)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            stop.wait()
        finally:
            server.close()
    finally:
        mode.close()


# -- rendering and installing units --------------------------------------------------------


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
    interpreter_paths: tuple[str, ...] = ()
    supervisor_command: str | None = None


def unit_layout(app: Configurator, *, manifest: Manifest | None) -> TemplateLayout:
    """How the units of ``app`` are named (the install's prefix, else the default one)."""
    from supervisor.systemd.backend import TemplateLayout
    from supervisor.systemd.units import RetryHandler, default_prefix

    prefix = manifest.prefix if manifest is not None and manifest.prefix else None
    python = manifest.python if manifest is not None and manifest.python else sys.executable
    handler = RetryHandler(python=python, package_dir=str(package_dir()))
    return TemplateLayout(prefix or default_prefix(app.name), retry_handler=handler)


PACKAGED_DIR = Path("/usr/share/sched-supervisor")  # the Debian package's private modules


def package_dir() -> Path:
    """The directory holding the ``supervisor`` package that runs now."""
    return Path(__file__).resolve().parents[2]


def default_unit_user(*, packaged: bool | None = None) -> str | None:
    """Who runs the services when neither ``--user`` nor ``Options.user`` says: the Debian
    package's service user for the packaged command (when that user exists), else None
    (root)."""
    import pwd

    if packaged is None:
        packaged = package_dir() == PACKAGED_DIR
    if not packaged:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return SERVICE_USER


def interpreter_paths() -> tuple[str, ...]:
    """What the interpreter reads besides the paths it is given: its real executable and
    prefixes (a virtualenv's python links to one elsewhere, e.g. under /root)."""
    found: list[str] = []
    for path in (os.path.realpath(sys.executable), sys.prefix, sys.base_prefix):
        for candidate in (os.path.abspath(path), os.path.realpath(path)):
            if candidate not in found:
                found.append(candidate)
    return tuple(found)


def venv_command(python_path: tuple[str, ...]) -> str | None:
    """The virtualenv's ``bin/supervisor`` when it runs this very package: installed
    into the virtualenv (not editable) and not shadowed by a ``supervisor`` package on
    ``python_path``. None otherwise (the units then run ``python -c ...``)."""
    if sys.prefix == sys.base_prefix:
        return None
    script = Path(sys.prefix) / "bin" / "supervisor"
    here = package_dir()
    if not script.is_file() or not here.is_relative_to(Path(sys.prefix).resolve()):
        return None
    for entry in python_path:
        if Path(entry).resolve() != here and (Path(entry) / "supervisor").is_dir():
            return None
    return str(script)


def command_python_path(cwd: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The working directory and the usable ``$PYTHONPATH`` entries (absolute, no ``:``)."""
    out: list[str] = []
    for entry in [cwd, *environ.get("PYTHONPATH", "").split(":")]:
        path = os.path.abspath(entry) if entry else ""
        if path and path not in out:
            out.append(path)
    return tuple(out)


def render_options(
    app: Configurator, app_spec: str, *, state_dir: Path, user: str | None, prefix: str | None
) -> RenderOptions:
    """Units that run ``app`` with this interpreter, from this directory and import path.
    Raises ``DefinitionError`` for a bad ``prefix``."""
    from supervisor.systemd.units import check_prefix, default_prefix

    cwd = os.getcwd()
    python_path = command_python_path(cwd, os.environ)
    return RenderOptions(
        app_spec=app_spec,
        state_dir=state_dir.absolute(),
        python=sys.executable,
        cwd=cwd,
        python_path=python_path,
        prefix=check_prefix(prefix) if prefix else default_prefix(app.name),
        user=user or default_unit_user(),
        interpreter_paths=interpreter_paths(),
        supervisor_command=venv_command(python_path),
    )


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
        package_dir=str(package_dir()),
        interpreter_paths=options.interpreter_paths,
        supervisor_command=options.supervisor_command,
    )
    warnings = units.dst_warnings(definitions, start=datetime.now(UTC), settings=settings)
    as_root = [d.id for d in definitions if (d.user or options.user) in (None, "root", "0")]
    if as_root:
        more = " ..." if len(as_root) > 3 else ""
        warnings.append(
            f"runs as root (sandboxed, but with root's files): {', '.join(as_root[:3])}{more}; "
            "give --user USER (or Options(user=...)) to run them as a user"
        )
    return Rendering(
        units=[RenderedUnit(name=unit.name, text=unit.text) for unit in rendered],
        warnings=warnings,
    )


def generate_units(
    app_spec: str, *, state_dir: Path, output_dir: Path, user: str | None, prefix: str | None
) -> tuple[list[Path], list[str]]:
    """Write the app's units into ``output_dir``; the files written and the warnings."""
    from supervisor.core.app import load_app

    app = load_app(app_spec)
    options = render_options(app, app_spec, state_dir=state_dir, user=user, prefix=prefix)
    rendering = render_units(app, options)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in rendering.units:
        (output_dir / unit.name).write_text(unit.text)
        written.append(output_dir / unit.name)
    for dropin in default_retry_dropins(app, options):
        path = output_dir / f"{dropin.unit}.d" / dropin.name
        path.parent.mkdir(exist_ok=True)
        path.write_text(dropin.text)
        written.append(path)
    return written, rendering.warnings


def default_retry_dropins(app: Configurator, options: RenderOptions) -> list[DropIn]:
    """The retries drop-ins (``<service>.d/``) of the schedulers whose code sets retries."""
    from supervisor.systemd.backend import TemplateLayout
    from supervisor.systemd.units import RETRY_DROPIN_NAME, RetryHandler
    from supervisor.usecases.schedulers import enable

    layout = TemplateLayout(
        options.prefix,
        retry_handler=RetryHandler(python=options.python, package_dir=str(package_dir())),
    )
    return [
        dropin
        for definition in enable(app).registry
        for dropin in layout.settings_dropins(definition, definition.defaults)
        if dropin.name == RETRY_DROPIN_NAME
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    """What ``install_units`` did: where, the report, the timers left stopped, warnings."""

    unit_dir: Path
    runtime: bool
    report: InstallReport
    disabled_timers: frozenset[str]
    warnings: list[str]


def install_units(
    app_spec: str,
    *,
    state_dir: Path,
    user: str | None,
    prefix: str | None,
    runtime: bool,
    unit_dir: Path | None,
) -> Installed:
    """Install the app's units (stored overrides as drop-ins), reload systemd, enable and
    start the timers of schedulers that are not disabled, and write the manifest.
    Raises ``BackendError`` when systemd refuses, ``StoreError`` for the state database."""
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
    from supervisor.systemd.units import RETRY_DROPIN_NAME, RetryHandler
    from supervisor.usecases.schedulers import enable

    app = load_app(app_spec)
    options = render_options(app, app_spec, state_dir=state_dir, user=user, prefix=prefix)
    ensure_state_dir(options.state_dir)
    with SqliteStore.open(options.state_dir / DATABASE_NAME) as store:
        overrides = store.all_overrides()
    schedulers = enable(app)

    def effective(scheduler_id: str) -> Settings:
        options = schedulers.registry.get(scheduler_id)
        return from_store(options, overrides.get(scheduler_id, {})).effective

    rendering = render_units(app, options, settings=effective)
    target = unit_dir or (RUNTIME_UNIT_DIR if runtime else PERSISTENT_UNIT_DIR)
    layout = TemplateLayout(
        options.prefix,
        retry_handler=RetryHandler(python=options.python, package_dir=str(package_dir())),
    )
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
            *(
                (dropin.unit, dropin.name)
                for definition in schedulers.registry
                for dropin in layout.settings_dropins(definition, definition.defaults)
            ),
            *(
                (layout.service_name(definition), RETRY_DROPIN_NAME)
                for definition in schedulers.registry
            ),
        ],
    )
    others = [d for d in (PERSISTENT_UNIT_DIR, RUNTIME_UNIT_DIR) if d != target]
    report = install(plan, state_dir=options.state_dir, systemd=Systemd(), other_unit_dirs=others)
    return Installed(
        unit_dir=target,
        runtime=runtime,
        report=report,
        disabled_timers=disabled,
        warnings=[*rendering.warnings, *report.warnings],
    )


def uninstall_units(state_dir: Path) -> tuple[list[str], int]:
    """Stop, disable and remove exactly what ``install_units`` wrote; the paths removed and
    the number of units."""
    from supervisor.systemd.backend import Systemd
    from supervisor.systemd.install import uninstall

    # The manifest says what root stops and deletes: only from a directory nobody else
    # could have written it in (refused: symlinked, foreign, writable by others).
    checked = ensure_state_dir(state_dir)
    report = uninstall(state_dir=checked, systemd=Systemd())
    return [str(path) for path in report.removed], len(report.units)
