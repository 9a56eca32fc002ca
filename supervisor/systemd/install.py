"""Installing and uninstalling an app's systemd units, with a manifest of what was written.

``install`` writes the rendered units into ``/etc/systemd/system`` (persistent) or
``/run/systemd/system`` (runtime: gone after a reboot), plus the settings drop-ins of
schedulers whose settings were overridden (and the retries drop-in of those whose code
sets ``retries``), and records every file in the manifest
``systemd-units.json`` in the state directory before it touches systemd. Then it reloads
systemd and, for each timer: enables it (when the unit has an ``[Install]`` section;
``--runtime`` for runtime units) and (re)starts it, unless the scheduler is disabled.
SCHEDULE's start timers (``start_timers``) are started after the others and never
restarted: an active one has fired already (or waits), and restarting it would run its
scheduler once more; the reload has given the running timers their new triggers.
A file that exists but was not written by an earlier install is never overwritten.
Units an earlier install wrote and this one does not are stopped and removed.

A scheduler paused at the time (its pause's ``<stem>:resume.timer`` is in the unit
directory: ``resume``) keeps its timers disabled and stopped: the pause's end starts them.

``uninstall`` stops and disables what the manifest lists (and the transient timer of a
planned retry: ``backend.transient_unit``; and a pause's units, which it removes with
``resume.remove_pause_units``), removes exactly its files
(and the settings drop-ins the systemd backend wrote, and their ``<unit>.d`` directories
when that leaves them empty), reloads systemd, clears failed states, and removes the
manifest. Nothing else is touched.

The manifest also tells the CLI that this state directory is in systemd mode, and how
to import the app (``app_spec``, working directory, ``sys.path``).

May import ``systemd_backend``, ``resume``, ``definitions``, ``registry``, ``store``, ``errors`` and
the standard library.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from supervisor.core.definitions import Options, Settings
from supervisor.core.errors import BackendError, StoreError
from supervisor.core.settings import from_store
from supervisor.systemd.backend import DropIn, Systemd, UnitLayout, write_atomic
from supervisor.systemd.resume import PauseUnits, remove_pause_units
from supervisor.systemd.systemctl import RESUME_ROLE, RETRY_ROLE, transient_unit
from supervisor.systemd.units import RETRY_DROPIN_NAME, START_TIMER_SUFFIX

MANIFEST_NAME: Final = "systemd-units.json"
MANIFEST_VERSION: Final = 1
PERSISTENT_UNIT_DIR: Final = Path("/etc/systemd/system")
RUNTIME_UNIT_DIR: Final = Path("/run/systemd/system")


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedUnit:
    """A unit file to install: ``name`` (``x.service``) and its text."""

    name: str
    text: str
    scheduler_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What ``install`` wrote, kept in the state directory."""

    app_spec: str
    unit_dir: str
    runtime: bool
    units: tuple[str, ...]  # unit names, in install order
    files: tuple[str, ...]  # every file written (absolute paths)
    enabled: tuple[str, ...] = ()  # timers ``systemctl enable``d
    cwd: str | None = None
    sys_path: tuple[str, ...] = ()
    python: str | None = None
    prefix: str | None = None
    installed_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "app_spec": self.app_spec,
            "unit_dir": self.unit_dir,
            "runtime": self.runtime,
            "units": list(self.units),
            "files": list(self.files),
            "enabled": list(self.enabled),
            "cwd": self.cwd,
            "sys_path": list(self.sys_path),
            "python": self.python,
            "prefix": self.prefix,
            "installed_at": self.installed_at,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        if obj.get("version") != MANIFEST_VERSION:
            raise StoreError(f"unsupported systemd manifest version {obj.get('version')!r}")
        return cls(
            app_spec=str(obj["app_spec"]),
            unit_dir=str(obj["unit_dir"]),
            runtime=bool(obj["runtime"]),
            units=tuple(str(u) for u in obj["units"]),
            files=tuple(str(f) for f in obj["files"]),
            enabled=tuple(str(u) for u in obj.get("enabled", ())),
            cwd=obj.get("cwd"),
            sys_path=tuple(str(p) for p in obj.get("sys_path", ())),
            python=obj.get("python"),
            prefix=obj.get("prefix"),
            installed_at=str(obj.get("installed_at", "")),
            extra=dict(obj.get("extra") or {}),
        )

    @property
    def timers(self) -> list[str]:
        return [unit for unit in self.units if unit.endswith(".timer")]


def manifest_path(state_dir: Path) -> Path:
    return Path(state_dir) / MANIFEST_NAME


def read_manifest(state_dir: Path) -> Manifest | None:
    """The manifest of the last install into ``state_dir``, or None."""
    path = manifest_path(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StoreError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        return Manifest.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"{path} is damaged: {error}") from error


def write_manifest(state_dir: Path, manifest: Manifest) -> None:
    path = manifest_path(state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(manifest.to_json(), indent=2) + "\n", mode=0o600)


def _remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallPlan:
    """Everything ``install`` needs, computed without touching anything."""

    app_spec: str
    unit_dir: Path
    runtime: bool
    units: Sequence[RenderedUnit]
    dropins: Sequence[DropIn] = ()
    disabled_timers: frozenset[str] = frozenset()
    cwd: str | None = None
    sys_path: Sequence[str] = ()
    python: str | None = None
    prefix: str | None = None
    dropin_names: Sequence[tuple[str, str]] = ()  # (unit, file) the backend may write
    start_timers: frozenset[str] = frozenset()  # started if inactive, never restarted


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallReport:
    manifest: Manifest
    started: tuple[str, ...]
    removed: tuple[str, ...]
    warnings: tuple[str, ...]


def settings_dropins(
    layout: UnitLayout, options: Sequence[Options], overrides: dict[str, dict[str, Any]]
) -> list[DropIn]:
    """The settings drop-ins of every scheduler that has stored overrides."""
    out: list[DropIn] = []
    for option in options:
        stored = overrides.get(option.id)
        if stored:
            settings: Settings = from_store(option, stored).effective
            out.extend(layout.settings_dropins(option, settings))
        elif option.defaults.retries:  # the code's retries need their drop-in too
            dropins = layout.settings_dropins(option, option.defaults)
            out.extend(d for d in dropins if d.name == RETRY_DROPIN_NAME)
    return out


def install(
    plan: InstallPlan,
    *,
    state_dir: Path,
    systemd: Systemd,
    other_unit_dirs: Sequence[Path] = (),
    now: datetime | None = None,
) -> InstallReport:
    """Write the units, record them, reload systemd and start the timers (see module doc)."""
    previous = read_manifest(state_dir)
    ours_before = set(previous.files) if previous is not None else set()
    unit_dir = plan.unit_dir
    targets: dict[Path, str] = {unit_dir / unit.name: unit.text for unit in plan.units}
    for dropin in plan.dropins:
        targets[unit_dir / f"{dropin.unit}.d" / dropin.name] = dropin.text
    foreign = [
        str(path)
        for path in targets
        if (path.exists() or path.is_symlink()) and str(path) not in ours_before
    ]
    if foreign:
        raise BackendError(
            f"refusing to overwrite {foreign[0]}: it was not installed by sched-supervisor "
            f"(remove it, or uninstall the app that owns it)"
        )
    warnings: list[str] = []
    for other in other_unit_dirs:
        shadowing = [other / unit.name for unit in plan.units if (other / unit.name).exists()]
        if shadowing and other == PERSISTENT_UNIT_DIR:
            warnings.append(
                f"{shadowing[0]} exists and wins over {unit_dir}: systemd uses the /etc one"
            )
        elif shadowing:
            warnings.append(f"{shadowing[0]} also exists ({unit_dir} wins over it)")
    names = [unit.name for unit in plan.units]
    stale_units = [] if previous is None else [u for u in previous.units if u not in names]
    if stale_units:
        with contextlib.suppress(BackendError):
            systemd.systemctl("stop", *stale_units)
        stale_enabled = [u for u in previous.enabled if u in stale_units] if previous else []
        if stale_enabled:
            scope = ["--runtime"] if previous is not None and previous.runtime else []
            with contextlib.suppress(BackendError):
                systemd.systemctl("disable", *scope, *stale_enabled)
    removed: list[str] = []
    if previous is not None:
        for path_text in previous.files:
            path = Path(path_text)
            if path not in targets:
                _remove_file(path)
                if path.parent.name.endswith(".d"):
                    _remove_empty_dir(path.parent)
                removed.append(path_text)
    timers = [unit for unit in plan.units if unit.name.endswith(".timer")]
    paused = _paused_timers(plan, unit_dir)
    enable = [
        unit.name
        for unit in timers
        if unit.name not in plan.disabled_timers
        and unit.name not in paused
        and "\n[Install]" in "\n" + unit.text
    ]
    manifest = Manifest(
        app_spec=plan.app_spec,
        unit_dir=str(unit_dir),
        runtime=plan.runtime,
        units=tuple(names),
        files=tuple(str(path) for path in targets),
        enabled=tuple(enable),
        cwd=plan.cwd,
        sys_path=tuple(plan.sys_path),
        python=plan.python,
        prefix=plan.prefix,
        installed_at=(now or datetime.now(UTC)).isoformat(),
        extra={"dropins": [list(pair) for pair in plan.dropin_names]} if plan.dropin_names else {},
    )
    write_manifest(state_dir, manifest)  # first: an interrupted install can be uninstalled
    for path, text in targets.items():
        write_atomic(path, text)
    systemd.daemon_reload()
    scope = ["--runtime"] if plan.runtime else []
    disabled = [unit.name for unit in timers if unit.name in plan.disabled_timers]
    if disabled:
        with contextlib.suppress(BackendError):
            systemd.systemctl("disable", *scope, *disabled)
        systemd.systemctl("stop", *disabled)
    if enable:
        systemd.systemctl("enable", *scope, *enable)
    started = [
        unit.name
        for unit in timers
        if unit.name not in plan.disabled_timers and unit.name not in paused
    ]
    restarted = [name for name in started if name not in plan.start_timers]
    if restarted:
        systemd.systemctl("restart", *restarted)
    first_runs = [name for name in started if name in plan.start_timers]
    if first_runs:
        systemd.systemctl("start", *first_runs)
    return InstallReport(
        manifest=manifest,
        started=tuple(started),
        removed=tuple(removed),
        warnings=tuple(warnings),
    )


def _paused_timers(plan: InstallPlan, unit_dir: Path) -> set[str]:
    """The timers of schedulers paused now (their pause's timer is in ``unit_dir``): the
    pause disabled and stopped them, and its end starts them; an install leaves them so.
    A scheduler's timers are ``<stem>.timer`` and ``<stem>-start.timer`` (``units``)."""
    names = {unit.name for unit in plan.units}
    paused: set[str] = set()
    for name in names:
        if name.endswith(".service") and (unit_dir / PauseUnits(service=name).timer).exists():
            stem = name.removesuffix(".service")
            paused |= {f"{stem}.timer", f"{stem}{START_TIMER_SUFFIX}"} & names
    return paused


@dataclass(frozen=True, slots=True, kw_only=True)
class UninstallReport:
    removed: tuple[str, ...]
    units: tuple[str, ...]


def _is_unit_file(
    path: Path, unit_dir: Path, units: Sequence[str], unit_dirs: Sequence[Path]
) -> bool:
    """``unit_dir/UNIT`` or ``unit_dir/UNIT.d/NAME.conf`` for a unit the manifest names,
    in one of systemd's unit directories: nothing else is ever removed."""
    if unit_dir not in unit_dirs or ".." in path.parts:
        return False
    if path.parent == unit_dir:
        return path.name in units
    return (
        path.parent.parent == unit_dir
        and path.parent.name.removesuffix(".d") in units
        and path.name.endswith(".conf")
        and "/" not in path.name
    )


def uninstall(
    *,
    state_dir: Path,
    systemd: Systemd,
    dropin_names: Sequence[tuple[str, str]] = (),
    unit_dirs: Sequence[Path] = (PERSISTENT_UNIT_DIR, RUNTIME_UNIT_DIR),
) -> UninstallReport:
    """Stop, disable and remove exactly what the manifest lists (see the module docstring).

    The manifest is checked first: its units must carry its prefix, its files must be
    those units' files (or drop-ins) in one of ``unit_dirs``; else nothing is touched.

    ``dropin_names``: (unit, file name) of the settings drop-ins the backend may have
    written next to the units (besides those the manifest lists); they are removed too.
    """
    manifest = read_manifest(state_dir)
    if manifest is None:
        raise BackendError(
            f"no units are installed from state directory {state_dir} (no {MANIFEST_NAME} there)"
        )
    unit_dir = Path(manifest.unit_dir)
    names = [*dropin_names, *((str(u), str(n)) for u, n in manifest.extra.get("dropins", ()))]
    files = [Path(f) for f in manifest.files]
    files += [unit_dir / f"{unit}.d" / name for unit, name in names if unit in manifest.units]
    prefix = manifest.prefix or ""
    foreign = [unit for unit in manifest.units if not unit.startswith(prefix)]
    foreign += [
        str(path) for path in files if not _is_unit_file(path, unit_dir, manifest.units, unit_dirs)
    ]
    if foreign:
        raise BackendError(
            f"refusing to uninstall: the manifest in {state_dir} lists {foreign[0]}, which "
            f"is not one of its units ({prefix}...) or their files in {unit_dir}"
        )
    units = list(manifest.units)
    timers = manifest.timers
    services = [unit for unit in units if unit not in timers]
    scope = ["--runtime"] if manifest.runtime else []
    if timers:
        with contextlib.suppress(BackendError):
            systemd.systemctl("stop", *timers)
    transient = [
        f"{transient_unit(service, role)}.{suffix}"
        for service in units
        if service.endswith(".service")
        for role in (RESUME_ROLE, RETRY_ROLE)
        for suffix in ("timer", "service")
    ]
    if transient:  # a planned retry (systemd-run) and an older transient resume
        with contextlib.suppress(BackendError):
            shown = systemd.show(transient, ("Id", "LoadState"))
            loaded = [
                n for n, p in zip(transient, shown, strict=True) if p.get("LoadState") == "loaded"
            ]
            if loaded:
                systemd.systemctl("stop", *loaded)
    removed: list[str] = []
    for service in services:  # a pause's units (written next to the units, enabled)
        with contextlib.suppress(BackendError):
            removed += [str(path) for path in remove_pause_units(systemd, service)]
    if services:
        with contextlib.suppress(BackendError):
            systemd.systemctl("stop", *services)
    if manifest.enabled:
        with contextlib.suppress(BackendError):
            systemd.systemctl("disable", *scope, *manifest.enabled)
    for path in files:
        if path.exists() or path.is_symlink():
            _remove_file(path)
            removed.append(str(path))
        if path.parent.name.endswith(".d"):
            _remove_empty_dir(path.parent)
    systemd.daemon_reload()
    with contextlib.suppress(BackendError):
        systemd.systemctl("reset-failed", *units)
    _remove_file(manifest_path(state_dir))
    return UninstallReport(removed=tuple(removed), units=tuple(units))
