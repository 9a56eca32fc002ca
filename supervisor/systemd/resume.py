"""The end of a timed pause in systemd mode, and the removal of a pause's units.

A pause (``backend.SystemdBackend.pause``) disables and stops the scheduler's timers and
writes a timer and a service next to its units, ``<stem>:resume.timer`` and
``<stem>:resume.service`` (``units.render_resume_units``), enabled: unlike a transient
``systemd-run`` timer they outlive a reboot, and the disabled timers do not start at
boot. The timer fires at the pause's end and at once whenever it starts (the pause,
every boot, a ``daemon-reload``); each time, ``main`` here:

1. does nothing while the end has not come (the timer waits on for it);
2. else enables the timers again (``--runtime`` for units in ``/run``) and starts them
   (``--no-block``), as Start would: the start delay applies. So a pause whose end passed
   while the machine was down resumes at boot, without the timer stamps of
   ``Persistent=true``;
3. and removes the pause's units (``remove_pause_units``): disables and stops the timer,
   deletes both files, reloads.

It reads the wall clock at boot: a clock that is wrong then moves the resume with it.

May import ``systemctl`` (the systemd seam), ``errors`` and the standard library (it
runs as a fresh interpreter; no jinja2, store or registry).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from supervisor.core.errors import BackendError
from supervisor.systemd.systemctl import RESUME_ROLE, Systemd, transient_unit

_ENABLED: Final = frozenset({"enabled", "enabled-runtime"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseUnits:
    """The names of the units that end a pause of the scheduler with ``service``."""

    service: str

    @property
    def timer(self) -> str:
        return transient_unit(self.service, RESUME_ROLE) + ".timer"

    @property
    def resume_service(self) -> str:
        return transient_unit(self.service, RESUME_ROLE) + ".service"


def remove_pause_units(
    systemd: Systemd,
    service: str,
    *,
    stop_service: bool = True,
) -> list[Path]:
    """Disable and stop the pause's timer (and its service, unless ``stop_service`` is
    False: the resume step itself), delete the unit files systemd loaded them from
    (only files under their own names, never a transient unit's) and reload;
    a transient one (``systemd-run``, from before pauses were written as files) is
    stopped. Returns the files removed. ``BackendError`` if systemd refuses."""
    names = PauseUnits(service=service)
    units = [names.timer, names.resume_service]
    shown = systemd.show(units, ("Id", "LoadState", "ActiveState", "FragmentPath", "UnitFileState"))
    timer, own = shown
    if timer.get("UnitFileState") in _ENABLED:
        scope = ["--runtime"] if timer.get("UnitFileState") == "enabled-runtime" else []
        systemd.systemctl("disable", *scope, names.timer)
    active = [names.timer] if timer.get("ActiveState") not in ("inactive", "", None) else []
    if stop_service and own.get("ActiveState") not in ("inactive", "", None):
        active.append(names.resume_service)
    if active:
        systemd.systemctl("stop", *active)
    removed: list[Path] = []
    for name, props in zip(units, shown, strict=True):
        fragment = props.get("FragmentPath")
        if not fragment:
            continue
        path = Path(fragment)
        if path.is_absolute() and path.name == name and path.parent.name != "transient":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        systemd.daemon_reload()
    return removed


def resume(
    *,
    service: str,
    timers: Sequence[str],
    until: datetime,
    runtime: bool,
    systemd: Systemd,
    now: datetime,
) -> bool:
    """Steps 1 to 3 of the module docstring; True when the pause has ended now."""
    if now < until:
        return False
    scope = ["--runtime"] if runtime else []
    systemd.systemctl("enable", *scope, *timers)
    systemd.systemctl("start", "--no-block", *timers)
    remove_pause_units(systemd, service, stop_service=False)
    return True


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="supervisor.systemd.resume")
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--until-us", type=int, required=True)
    parser.add_argument("--runtime", action="store_true")
    parser.add_argument("timers", nargs="+")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """The resume service's entry point; 0, or 1 with the reason on stderr (journald
    keeps it with the unit) when systemd could not be asked."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    until = datetime.fromtimestamp(args.until_us / 1_000_000, UTC)
    try:
        ended = resume(
            service=args.service,
            timers=args.timers,
            until=until,
            runtime=args.runtime,
            systemd=Systemd(),
            now=datetime.now(UTC),
        )
    except BackendError as error:
        print(f"end of the pause of {args.scheduler}: {error}", file=sys.stderr)
        return 1
    if ended:
        print(f"the pause of {args.scheduler} has ended: its timers are started again")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
