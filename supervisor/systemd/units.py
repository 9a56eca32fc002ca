"""systemd units for schedulers: rendered from the jinja2 templates, returned as values.

Pure: nothing here touches the disk or systemd (``install-units`` writes what
``render_units`` returns). Per scheduler a ``<prefix>-<id>.service`` (``Type=oneshot``,
running one execution with ``<python> -m supervisor exec --app <app_spec> <id>``) and,
except for MANUAL, a ``<prefix>-<id>.timer``:

- SCHEDULE: two timers. ``<prefix>-<id>-start.timer`` (``OnActiveSec=`` start delay,
  fires once per start of the timer, then stays ``elapsed``) and ``<prefix>-<id>.timer``
  (``OnUnitInactiveSec=`` pause only: the pause runs from the end of each run, as in the
  manager). ``OnActiveSec=0`` fires at once (checked). The start timer wants and is
  ordered after the repeat timer, so starting it alone starts the scheduler properly.
  Why two: measured on systemd 252 (issue 31914), a timer that is *waiting* gets its
  ``OnActiveSec=`` re-armed by every ``daemon-reload`` (and ``daemon-reexec``): with both
  triggers on one timer, which waits for its pause all the time, every reload (ours, a
  package's) ran the scheduler once more, ``start_delay`` later. An elapsed
  ``OnActiveSec=``-only timer is left alone by a reload, and an ``OnUnitInactiveSec=``
  timer keeps its next elapse (last end + pause) across reloads. A reload while the start
  timer still waits re-arms it from the reload: the first run comes later, never twice.
  A repeat timer started after the service last ran does not fire for that old run (it
  stays ``elapsed`` until a run ends while it is active), so a start runs the scheduler
  ``start_delay`` after it and not at once.
- CRON: one ``OnCalendar=`` line per ``supervisor.systemd.oncalendar`` line, ``Persistent=true``.
- ONE_SHOT: ``OnActiveSec=`` start delay (``OnBootSec=`` would fire at once when the
  timer starts long after boot).

``AccuracySec=1ms``: measured on systemd 252 with a 3 s pause, 1 s accuracy gave 4.0 s
between runs, 100 ms gave 3.02-3.12 s, 1 ms 3.01 s; the default (1 min) delayed a 1 s
start delay to 32 s.

Values go through the filters below, per systemd.syntax(7): words that are not plainly
safe are double-quoted with C escapes, ``%`` is doubled everywhere (specifiers) and ``$``
doubled in ``ExecStart=`` arguments (variable expansion; not in the executable, which
may hold no quotes or backslashes at all). Unit names: every scheduler ID is a valid
unit name as it is, except that an ID ending in ``-`` gets it escaped as ``\\x2d``:
systemd applies the drop-ins of ``a-.timer.d/`` to every ``a-*.timer`` (prefix drop-ins),
so a settings drop-in for ``a-`` would change ``a-b`` too. The start timer of ``x`` has
the name the timer of an ID ``x-start`` would have: ``render_units`` refuses an app with
both (a ``DefinitionError`` naming them). (A name outside the IDs' alphabet would avoid
that, but ``:`` makes ``systemd-analyze verify`` fail, and upper case or ``\\x2d`` are
hard to type.)

Imports jinja2, ``supervisor.core.definitions``, ``supervisor.systemd.oncalendar``,
``supervisor.core.errors`` and the standard library.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources.abc import Traversable
from pathlib import Path

import jinja2

from supervisor.core.definitions import USER_NAME, Command, Kind, Options, Settings
from supervisor.core.errors import DefinitionError
from supervisor.core.settings import check as check_settings_for_kind
from supervisor.systemd.oncalendar import dst_differences, to_oncalendar

ACCURACY = timedelta(milliseconds=1)
DEFAULT_STOP_TIMEOUT = timedelta(seconds=15)
SETTINGS_DROPIN_NAME = "50-sched-supervisor-settings.conf"
RETRY_DROPIN_NAME = "60-sched-supervisor-retries.conf"
START_TIMER_SUFFIX = "-start.timer"
MAX_PREFIX_LENGTH = 100  # + "-" + 128-character ID + ".service" stays under systemd's 255
_PREFIX = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9._])?")
# Hidden from a unit by its sandbox: PrivateTmp=yes gives it empty ones of its own.
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp")  # noqa: S108 - names them, creates nothing
# Hidden by ProtectHome=yes; read-only (not hidden) when the code lives there.
HOME_DIRS = ("/home", "/root", "/run/user")
_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitFile:
    """One rendered unit: its file name (e.g. ``sched-demo-x.timer``) and its text."""

    name: str
    text: str


# --- names ----------------------------------------------------------------------------


def default_prefix(app_name: str) -> str:
    """The unit-name prefix for an application: ``sched-`` and the name made safe."""
    slug = re.sub(r"[^a-z0-9._]+", "-", app_name.lower()).strip("-._")
    return check_prefix(f"sched-{slug[: MAX_PREFIX_LENGTH - 6] or 'app'}".rstrip("-._"))


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start unit names of any scheduler ID, else ``DefinitionError``."""
    if not _PREFIX.fullmatch(prefix) or prefix.endswith("-"):
        raise DefinitionError(
            "prefix",
            f"{prefix!r} must be lower-case letters, digits, '.', '_' and '-', "
            "start with a letter or digit and not end with '-'",
        )
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise DefinitionError("prefix", f"must be at most {MAX_PREFIX_LENGTH} characters")
    return prefix


def unit_names(prefix: str, scheduler_id: str) -> tuple[str, str]:
    """The (service, timer) unit names of a scheduler (the timer: SCHEDULE's repeat timer)."""
    stem = _stem(prefix, scheduler_id)
    return f"{stem}.service", f"{stem}.timer"


def start_timer_name(prefix: str, scheduler_id: str) -> str:
    """The name of a SCHEDULE scheduler's start timer (``OnActiveSec=`` start delay)."""
    return f"{_stem(prefix, scheduler_id)}{START_TIMER_SUFFIX}"


def _stem(prefix: str, scheduler_id: str) -> str:
    check_prefix(prefix)
    stem = f"{prefix}-{scheduler_id}"
    if stem.endswith("-"):
        stem = stem[:-1] + "\\x2d"
    return stem


# --- filters (systemd.syntax(7)) -------------------------------------------------------


def escape_specifiers(text: str) -> str:
    """``%`` doubled: systemd expands ``%`` specifiers in most settings."""
    return text.replace("%", "%%")


def quote_word(text: str) -> str:
    """One word of a list setting (``Environment=``, ``ReadWritePaths=``, ...)."""
    if _SAFE_WORD.fullmatch(text):
        return escape_specifiers(text)
    escaped = "".join(
        _C_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if _CONTROL.match(char) else char)
        for char in text
    )
    return escape_specifiers(f'"{escaped}"')


def quote_exec_arg(text: str) -> str:
    """One argument of ``ExecStart=``: a word with ``$`` doubled as well."""
    return quote_word(text).replace("$", "$$")


def quote_executable(path: str) -> str:
    """The executable of ``ExecStart=``: quoted and ``%`` doubled, but ``$`` kept (no
    variable expansion there). systemd refuses quotes and backslashes in it."""
    if any(char in path for char in "\"'\\") or _CONTROL.search(path):
        raise DefinitionError(
            "python", f"{path!r}: systemd refuses quotes, backslashes and control characters"
        )
    return quote_word(path)


def one_line(text: str) -> str:
    """A free-text value (``Description=``): whitespace collapsed, ``%`` doubled."""
    # A trailing backslash would continue the line; the text is informational only.
    return escape_specifiers(" ".join(text.split()).rstrip("\\"))


def comment(text: str) -> str:
    """Text for a ``#`` comment line: control characters replaced, no continuation."""
    return _CONTROL.sub(" ", text).rstrip("\\ ")


def path_value(path: str) -> str:
    """A single-path setting taken verbatim (``WorkingDirectory=``): ``%`` doubled."""
    return escape_specifiers(path)


def timespan(value: timedelta | None) -> str:
    """A systemd time span (``1h 30min``, ``100ms``); None is ``infinity``."""
    if value is None:
        return "infinity"
    micro = value // timedelta(microseconds=1)
    if micro <= 0:
        return "0"
    parts = []
    for unit, size in (
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("min", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ):
        count, micro = divmod(micro, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


# --- rendering ------------------------------------------------------------------------


def _entry(package_dir: str | None) -> list[str]:
    """The interpreter arguments that start the ``supervisor`` command."""
    if package_dir is None:
        return ["-m", "supervisor"]
    _check_path("package_dir", package_dir)
    return [
        "-c",
        f"import sys; sys.path.insert(0, {package_dir!r}); "
        "from supervisor.cli.main import main; main(sys.argv[1:], prog_name='supervisor')",
    ]


def render_units(
    definitions: Iterable[Options],
    *,
    app_spec: str,
    python: str,
    working_dir: str,
    prefix: str,
    state_dir: str,
    user: str | None,
    settings: Callable[[str], Settings] | None = None,
    python_path: Sequence[str] | None = None,
    stop_timeout: timedelta = DEFAULT_STOP_TIMEOUT,
    package_dir: str | None = None,
    interpreter_paths: Sequence[str] = (),
    supervisor_command: str | None = None,
) -> list[UnitFile]:
    """The units of every definition, in definition order (service, timer, start timer).

    ``package_dir``: the directory holding the ``supervisor`` package to run, put first
    on ``sys.path`` by ``python -c`` (a private directory such as the Debian package's,
    where ``-m supervisor`` would find nothing, or another project's ``supervisor``).
    Without it the service runs ``python -m supervisor``. ``supervisor_command``: the
    ``supervisor`` script to run instead (a virtualenv's ``bin/supervisor``), then
    ``ExecStart=`` is ``<script> exec ...`` and ``python`` only names the interpreter.

    ``python`` is the interpreter that runs ``-m supervisor exec`` (absolute),
    ``working_dir`` its working directory and, unless ``python_path`` says otherwise,
    its ``PYTHONPATH``. ``settings(id)`` gives the effective settings (default: each
    definition's ``defaults``). ``stop_timeout`` is how long systemd waits after SIGTERM
    to the exec process before it SIGKILLs the unit's processes (``KillMode=mixed``);
    keep it above the exec command's own cancel, SIGTERM, SIGKILL escalation.
    Disabled schedulers get units too; installing decides what to enable.
    ``DefinitionError`` (field ``id``) if two schedulers would share a unit name.

    ``user`` runs the services of schedulers whose ``Options.user`` is None (``User=``;
    None: root). ``interpreter_paths``: more directories the interpreter reads (where the
    executable really is, ``sys.base_prefix``), for the sandbox below.

    Each service is sandboxed (``templates/service.j2``): ``systemd-analyze security``
    rates it "OK" (exposure <= 3.0; ``tests/test_units.py`` checks every unit). Relaxed
    only where the scheduler needs it: ``ProtectHome=read-only`` instead of ``yes`` when
    the code lives under ``HOME_DIRS``; no ``MemoryDenyWriteExecute=`` for a ``Command``
    runner (any program, a JIT among them). Code under ``/tmp`` or ``/var/tmp`` would be
    invisible behind ``PrivateTmp=yes``: ``DefinitionError`` naming the path.
    """
    check_prefix(prefix)
    host = _checked_host(
        app_spec=app_spec,
        python=python,
        working_dir=working_dir,
        state_dir=state_dir,
        user=user,
        python_path=python_path,
        stop_timeout=stop_timeout,
        package_dir=package_dir,
        interpreter_paths=interpreter_paths,
        supervisor_command=supervisor_command,
    )
    units: list[UnitFile] = []
    owners: dict[str, str] = {}
    for options in definitions:
        effective = settings(options.id) if settings is not None else options.defaults
        check_settings_for_kind(options.kind, effective)
        rendered = _units_of(options, effective, host, prefix)
        for unit in rendered:
            other = owners.setdefault(unit.name, options.id)
            if other != options.id:
                raise DefinitionError(
                    "id",
                    f"schedulers {other!r} and {options.id!r} would both have unit "
                    f"{unit.name} (a SCHEDULE's start timer is named <id>-start.timer)",
                )
        units.extend(rendered)
    return units


@dataclass(frozen=True, slots=True)
class _Host:
    """What every service of one generation shares, checked once (``_checked_host``)."""

    app_spec: str
    executable: str
    entry: tuple[str, ...]
    working_dir: str
    python_path: str
    state_dir: str
    user: str | None
    protect_home: str
    stop_timeout: timedelta


def _checked_host(
    *,
    app_spec: str,
    python: str,
    working_dir: str,
    state_dir: str,
    user: str | None,
    python_path: Sequence[str] | None,
    stop_timeout: timedelta,
    package_dir: str | None,
    interpreter_paths: Sequence[str],
    supervisor_command: str | None,
) -> _Host:
    """``render_units``' host arguments, checked (``DefinitionError`` naming the first
    wrong one), with what follows from them."""
    executable = supervisor_command or python
    quote_executable(executable)
    if supervisor_command is not None:
        _check_path("supervisor_command", supervisor_command)
    entry = [] if supervisor_command is not None else _entry(package_dir)
    for name, path in (("python", python), ("working_dir", working_dir), ("state_dir", state_dir)):
        _check_path(name, path)
    paths = list(python_path) if python_path is not None else [working_dir]
    for path in paths:
        _check_path("python_path", path)
        if ":" in path:
            raise DefinitionError("python_path", f"{path!r}: PYTHONPATH cannot hold a ':'")
    code_paths = [
        ("python", python),
        *([("supervisor_command", supervisor_command)] if supervisor_command else []),
        ("working_dir", working_dir),
        *(("python_path", path) for path in paths),
        *([("package_dir", package_dir)] if package_dir is not None else []),
        *(("interpreter_paths", path) for path in interpreter_paths),
    ]
    for name, path in code_paths:
        if _under(path, PRIVATE_TMP_DIRS):
            raise DefinitionError(
                name,
                f"{path} is under /tmp or /var/tmp, which the units cannot see "
                "(PrivateTmp=yes gives each its own): move it elsewhere",
            )
    if not app_spec or _CONTROL.search(app_spec):
        raise DefinitionError("app_spec", f"{app_spec!r} must be a non-empty MODULE:ATTRIBUTE")
    if user is not None and not USER_NAME.fullmatch(user):
        raise DefinitionError("user", f"{user!r} is not a valid user name or UID")
    if stop_timeout <= timedelta(0):
        raise DefinitionError("stop_timeout", "must be positive")
    return _Host(
        app_spec=app_spec,
        executable=executable,
        entry=tuple(entry),
        working_dir=working_dir,
        python_path=":".join(paths),
        state_dir=state_dir,
        user=user,
        protect_home="read-only" if any(_under(p, HOME_DIRS) for _, p in code_paths) else "yes",
        stop_timeout=stop_timeout,
    )


def _units_of(options: Options, effective: Settings, host: _Host, prefix: str) -> list[UnitFile]:
    """One scheduler's units: its service, and its timer and start timer where it has them."""
    service, timer = unit_names(prefix, options.id)
    header = comment(
        f"Scheduler {options.id} of {host.app_spec}, generated by sched-supervisor "
        "(generate-units); edits are lost when units are generated again."
    )
    common = {"header": header, "description": _description(options)}
    rendered = [
        UnitFile(
            name=service,
            text=_template("service.j2").render(
                **common,
                scheduler_id=options.id,
                executable=host.executable,
                arguments=[*host.entry, "exec", "--app", host.app_spec, options.id],
                working_dir=host.working_dir,
                python_path=host.python_path,
                state_dir=host.state_dir,
                user=options.user or host.user,
                protect_home=host.protect_home,
                deny_write_execute=not isinstance(options.runner, Command),
                timeout=effective.timeout,
                stop_timeout=host.stop_timeout,
            ),
        )
    ]
    if options.kind is not Kind.MANUAL:
        rendered.append(
            UnitFile(
                name=timer,
                text=_template("timer.j2").render(
                    **common,
                    service=service,
                    triggers=timer_triggers(options.kind, effective),
                    accuracy=ACCURACY,
                ),
            )
        )
    if options.kind is Kind.SCHEDULE:
        rendered.append(
            UnitFile(
                name=start_timer_name(prefix, options.id),
                text=_template("start-timer.j2").render(
                    **common,
                    service=service,
                    repeat_timer=timer,
                    triggers=start_timer_triggers(options.kind, effective),
                    accuracy=ACCURACY,
                ),
            )
        )
    return rendered


def timer_triggers(kind: Kind, settings: Settings) -> list[tuple[str, str]]:
    """The ``[Timer]`` trigger settings (key, value) of the timer of a ``kind`` scheduler
    (for SCHEDULE its repeat timer; see ``start_timer_triggers``)."""
    check_settings_for_kind(kind, settings)
    if kind is Kind.SCHEDULE:
        return [("OnUnitInactiveSec", timespan(settings.pause_time))]
    if kind is Kind.ONE_SHOT:
        return [("OnActiveSec", timespan(settings.start_delay))]
    if kind is Kind.CRON:
        assert settings.cron is not None  # checked above
        lines = to_oncalendar(settings.cron, settings.timezone)
        return [("OnCalendar", line) for line in lines] + [("Persistent", "true")]
    raise DefinitionError("kind", f"a {kind.name} scheduler has no timer")


def start_timer_triggers(kind: Kind, settings: Settings) -> list[tuple[str, str]]:
    """The trigger of a SCHEDULE scheduler's start timer: ``OnActiveSec=`` start delay."""
    check_settings_for_kind(kind, settings)
    if kind is not Kind.SCHEDULE:
        raise DefinitionError("kind", f"a {kind.name} scheduler has no start timer")
    return [("OnActiveSec", timespan(settings.start_delay))]


def render_timer_dropin(options: Options, settings: Settings) -> str:
    """A ``<timer>.d/`` drop-in that replaces every trigger with those of ``settings``.

    It starts with empty ``OnActiveSec=``, ``OnUnitInactiveSec=`` and ``OnCalendar=``
    (in systemd any of them resets all triggers), then states the new ones. For
    ``SETTINGS_DROPIN_NAME`` under the timer's drop-in directory; reload after writing
    it (see ``systemd_backend`` for what else applies it). ``DefinitionError`` for a
    MANUAL scheduler (no timer). For SCHEDULE this is the repeat timer's (the pause);
    ``render_start_timer_dropin`` gives the start timer's.
    """
    triggers = [(k, v) for k, v in timer_triggers(options.kind, settings) if k != "Persistent"]
    return _template("timer-dropin.j2").render(header=_dropin_header(options), triggers=triggers)


def render_start_timer_dropin(options: Options, settings: Settings) -> str:
    """The start timer's drop-in (the start delay) of a SCHEDULE scheduler, like
    ``render_timer_dropin``. ``DefinitionError`` for the other kinds."""
    triggers = start_timer_triggers(options.kind, settings)
    return _template("timer-dropin.j2").render(header=_dropin_header(options), triggers=triggers)


def render_service_dropin(options: Options, settings: Settings) -> str:
    """A ``<service>.d/`` drop-in carrying the run timeout of ``settings``."""
    check_settings_for_kind(options.kind, settings)
    return _template("service-dropin.j2").render(
        header=_dropin_header(options), timeout=settings.timeout
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryHandler:
    """How systemd runs our light steps, ``supervisor.systemd.retry`` (the retries
    drop-in, after each run) and ``supervisor.systemd.resume`` (the end of a pause):
    ``python`` (absolute) with ``package_dir`` first on ``sys.path`` (None: ``-m``, from
    the service's ``PYTHONPATH``, or the interpreter's own packages for the resume)."""

    python: str
    package_dir: str | None = None


def render_retry_dropin(
    options: Options, settings: Settings, *, service: str, handler: RetryHandler
) -> str | None:
    """The ``<service>.d/`` drop-in that retries failed runs of ``options``
    (``RETRY_DROPIN_NAME``): ``ExecStopPost=-+`` of ``supervisor.systemd.retry`` with the
    retry settings, which plans each retry with a transient timer. None when ``settings``
    retry nothing (no retries, or disabled). ``DefinitionError`` for a bad ``handler``.

    Not ``Restart=on-failure``: systemd 252 allows it for ``Type=oneshot`` (checked), but
    restarts without a bound (``StartLimitBurst=`` also counts the timers' starts and
    then refuses every start) and with one fixed ``RestartSec=``; ``RestartSteps=`` and
    ``RestartMaxDelaySec=`` need systemd 254."""
    check_settings_for_kind(options.kind, settings)
    if settings.retries < 1 or settings.disabled:
        return None
    arguments = [
        *_handler_entry(handler, "supervisor.systemd.retry"),
        "--scheduler",
        options.id,
        "--service",
        service,
        "--retries",
        str(settings.retries),
        "--retry-delay-us",
        str(settings.retry_delay // timedelta(microseconds=1)),
        *(["--command-runner"] if isinstance(options.runner, Command) else []),
    ]
    return _template("retry-dropin.j2").render(
        header=_dropin_header(options),
        executable=handler.python,
        arguments=arguments,
        retries=settings.retries,
        retry_delay=settings.retry_delay,
    )


def _handler_entry(handler: RetryHandler, module: str) -> list[str]:
    """The interpreter arguments that run ``module``'s ``main`` with ``handler``."""
    quote_executable(handler.python)
    _check_path("python", handler.python)
    if handler.package_dir is None:
        return ["-m", module]
    _check_path("package_dir", handler.package_dir)
    return [
        "-c",
        f"import sys; sys.path.insert(0, {handler.package_dir!r}); "
        f"from {module} import main; sys.exit(main(sys.argv[1:]))",
    ]


def calendar_second(moment: datetime) -> str:
    """``moment`` as a one-time ``OnCalendar=`` value in UTC, rounded up to the second."""
    if moment.tzinfo is None:
        raise ValueError("the end of a pause needs a time zone")
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def render_resume_units(
    options: Options,
    *,
    service: str,
    timers: Sequence[str],
    until: datetime,
    handler: RetryHandler,
    runtime: bool,
) -> list[UnitFile]:
    """The timer and service that end a timed pause of ``options`` at ``until``
    (``<stem>:resume.timer``, ``<stem>:resume.service``), written next to the scheduler's
    units while the pause holds: the timer fires at ``until`` and whenever it starts (so
    at every boot), and the service runs ``supervisor.systemd.resume``, which enables and
    starts ``timers`` (disabled for the pause) once ``until`` has come. ``runtime``: the
    timers are enabled with ``--runtime`` (units in ``/run``)."""
    if not timers:
        raise ValueError(f"scheduler {options.id} has no timers to resume")
    stem = service.removesuffix(".service")
    name = f"{stem}:resume"
    at = calendar_second(until)
    description = f"End of the pause of scheduler {options.id} ({at})"
    arguments = [
        *_handler_entry(handler, "supervisor.systemd.resume"),
        "--scheduler",
        options.id,
        "--service",
        service,
        "--until-us",
        str(round(until.timestamp() * 1_000_000)),
        *(["--runtime"] if runtime else []),
        *timers,
    ]
    header = comment(
        f"Pause of scheduler {options.id}, written by sched-supervisor; removed when the "
        "pause ends or is cancelled (resume, stop, disable, uninstall-units)."
    )
    return [
        UnitFile(
            name=f"{name}.timer",
            text=_template("resume-timer.j2").render(
                header=header,
                description=description,
                service=f"{name}.service",
                on_calendar=at,
                accuracy=ACCURACY,
            ),
        ),
        UnitFile(
            name=f"{name}.service",
            text=_template("resume-service.j2").render(
                header=header,
                description=description,
                executable=handler.python,
                arguments=arguments,
            ),
        ),
    ]


def dst_warnings(
    definitions: Iterable[Options],
    *,
    start: datetime,
    settings: Callable[[str], Settings] | None = None,
    horizon_days: int = 400,
) -> list[str]:
    """One line per CRON scheduler whose timer will not run like the manager across a
    DST change within ``horizon_days`` after ``start``, naming the next affected date."""
    warnings = []
    for options in definitions:
        if options.kind is not Kind.CRON:
            continue
        effective = settings(options.id) if settings is not None else options.defaults
        if effective.cron is None:
            continue
        differences = dst_differences(
            effective.cron, effective.timezone, start=start, horizon_days=horizon_days
        )
        if differences:
            warnings.append(f"scheduler {options.id}: {differences[0].describe()}")
    return warnings


def _description(options: Options) -> str:
    description = " ".join(options.description.split())
    return f"{options.name}: {description}" if description else options.name


def _dropin_header(options: Options) -> str:
    return comment(
        f"Settings of scheduler {options.id}, written by sched-supervisor; "
        "remove this file to return to the settings in the code."
    )


def _under(path: str, directories: Sequence[str]) -> bool:
    normal = os.path.normpath(path)
    return any(normal == d or normal.startswith(d + "/") for d in directories)


def _check_path(name: str, path: str) -> None:
    if not path.startswith("/"):
        raise DefinitionError(name, f"{path!r} must be an absolute path")
    if _CONTROL.search(path) or path != path.strip():
        raise DefinitionError(name, f"{path!r} must not hold control characters or end in blanks")


# --- templates ------------------------------------------------------------------------


def _templates_root() -> Traversable:
    """The ``templates/`` files: package data when installed, else the source tree's."""
    try:
        root = importlib.resources.files("supervisor.templates")
        if root.joinpath("service.j2").is_file():
            return root
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "templates"


@functools.cache
def _environment() -> jinja2.Environment:
    root = _templates_root()
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: root.joinpath(name).read_text("utf-8")),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - unit files, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        systemd_word=quote_word,
        systemd_exec_arg=quote_exec_arg,
        systemd_executable=quote_executable,
        systemd_line=one_line,
        systemd_path=path_value,
        systemd_timespan=timespan,
    )
    return environment


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)
