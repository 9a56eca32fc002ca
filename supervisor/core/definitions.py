"""What a developer declares: scheduler kinds, timing settings, options and custom actions.

Values only, checked on construction for what each field is on its own (types, ranges,
text that can be stored and shown); nothing here runs anything. What needs more than the
field itself (a cron expression's grammar, a time zone's existence, the rules of a kind)
is checked by ``core.settings``, once, when a definition is configured and on every
change. ``RunContext`` is what a runner is handed, as a Protocol: the runtime's
``runs.context.Context`` fulfils it. May import ``errors`` and the stdlib only.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeAlias, runtime_checkable

from supervisor.core.errors import DefinitionError

SCHEDULER_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
ACTION_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_ID_LENGTH = 128
# An OS user name (as useradd takes it) or a numeric UID: what systemd's User= accepts.
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10}")
MAX_DELAY = timedelta(days=366)


class Kind(enum.Enum):
    """When a scheduler runs."""

    ONE_SHOT = "one_shot"  # once, start_delay after the supervisor starts
    SCHEDULE = "schedule"  # repeats; pause_time between the end of a run and the next start
    MANUAL = "manual"  # only when triggered
    CRON = "cron"  # at the times of a cron expression in a time zone


@dataclass(frozen=True, slots=True)
class Command:
    """A runner that executes an external program (argv, no shell).

    Every part must be text the OS can take: ``argv`` a non-empty tuple of non-empty
    strings, ``env`` (name, value) pairs whose names are non-empty and hold no ``=``,
    ``cwd`` a string; none may hold NUL or a lone surrogate. ``DefinitionError`` names the
    field (``runner.argv[1]``, ``runner.env``, ``runner.cwd``) otherwise.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.argv, str | bytes) or not isinstance(self.argv, tuple):
            raise DefinitionError(
                "runner.argv",
                f"must be a list of strings, e.g. ['ls', '-la'], not {type(self.argv).__name__}",
            )
        if not self.argv:
            raise DefinitionError("runner.argv", "must name a program to run")
        for index, part in enumerate(self.argv):
            check_text(f"runner.argv[{index}]", part)
        if not isinstance(self.env, tuple):
            raise DefinitionError("runner.env", "must be a mapping of names to values")
        for pair in self.env:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise DefinitionError("runner.env", "must be a mapping of names to values")
            name, value = pair
            check_text("runner.env", name)
            if "=" in name:
                raise DefinitionError("runner.env", f"name {name!r} must not contain '='")
            check_text(f"runner.env[{name!r}]", value, empty=True)
        if self.cwd is not None:
            check_text("runner.cwd", self.cwd)


def command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Command:
    """Build a runner that executes ``argv`` (no shell) as the run; ``DefinitionError``
    naming the field for a string argv (``"ls -la"`` is one program name, not two
    words), text the OS cannot take, or a ``cwd`` that is not a path."""
    if isinstance(argv, str | bytes) or not isinstance(argv, Sequence):
        raise DefinitionError(
            "runner.argv",
            f"must be a list of strings, e.g. ['ls', '-la'], not {type(argv).__name__}",
        )
    if env is not None and not isinstance(env, Mapping):
        raise DefinitionError("runner.env", f"must be a mapping, not {type(env).__name__}")
    if cwd is not None and not isinstance(cwd, str | os.PathLike):
        raise DefinitionError("runner.cwd", f"must be a path, not {type(cwd).__name__}")
    pairs = tuple(sorted((env or {}).items(), key=lambda pair: str(pair[0])))
    return Command(tuple(argv), pairs, None if cwd is None else os.fspath(cwd))


@runtime_checkable
class RunContext(Protocol):
    """What a runner is handed (``scheduler.Context``): which run it is, and whether it
    has been asked to end. Reading it raises nothing."""

    @property
    def scheduler_id(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def trigger(self) -> str:
        """``start``, ``schedule``, ``cron``, ``missed`` or ``manual``."""
        ...

    @property
    def deadline(self) -> datetime | None:
        """When the timeout will end the run (aware UTC), or None."""
        ...

    @property
    def cancelled(self) -> bool: ...

    def err(self) -> BaseException | None:
        """None, or the cancellation error once stop, timeout or shutdown asked the run to end."""
        ...

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``: True if the full time elapsed, False if woken early because
        the run was asked to end (``err()`` then tells why)."""
        ...


Runner: TypeAlias = Callable[[RunContext], object] | Command

SETTING_NAMES = (
    "start_delay",
    "pause_time",
    "cron",
    "timezone",
    "timeout",
    "disabled",
    "retries",
    "retry_delay",
)
# At most this many retries after a failed run (setting ``retries``).
MAX_RETRIES = 100


def check_text(name: str, value: object, *, empty: bool = False) -> str:
    """``value`` if it is text that can be stored and shown (valid Unicode, no NUL);
    ``DefinitionError(name)`` otherwise. ``empty`` allows an empty (or blank) string."""
    if not isinstance(value, str):
        raise DefinitionError(name, f"must be a string, got {type(value).__name__}")
    if not empty and not value.strip():
        raise DefinitionError(name, "must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DefinitionError(
            name,
            f"is not valid Unicode text (a lone surrogate {value[error.start]!r} "
            f"at position {error.start})",
        ) from None
    nul = value.find("\x00")
    if nul >= 0:
        raise DefinitionError(name, f"must not contain NUL (at position {nul})")
    return value


def _check_delay(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, timedelta):
        raise DefinitionError(name, f"must be a duration, got {type(value).__name__}")
    if value < timedelta(0):
        raise DefinitionError(name, "must not be negative")
    if value > MAX_DELAY:
        raise DefinitionError(name, "must be at most 366 days")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The timing an operator may change at run time.

    ``timeout`` None means no limit. ``retries``: how often a failed, crashed or
    timed-out run is tried again (0: never), the first time ``retry_delay`` after its end,
    each further time after twice the wait before (capped). Each field is checked on
    its own here; the cron grammar, the time zone and the rules of a kind (``cron``
    only and always for ``Kind.CRON``) are checked by ``core.settings``, which every
    definition and every change passes through.
    """

    start_delay: timedelta = timedelta(0)
    pause_time: timedelta = timedelta(seconds=60)
    cron: str | None = None
    timezone: str = "UTC"
    timeout: timedelta | None = None
    disabled: bool = False
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        _check_delay("start_delay", self.start_delay, allow_none=False)
        _check_delay("pause_time", self.pause_time, allow_none=False)
        _check_delay("timeout", self.timeout, allow_none=True)
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise DefinitionError("timeout", "must be positive (or unset for no limit)")
        if self.cron is not None:
            check_text("cron", self.cron)
        check_text("timezone", self.timezone)
        if not isinstance(self.disabled, bool):
            raise DefinitionError("disabled", "must be true or false")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool):
            raise DefinitionError("retries", "must be a whole number")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise DefinitionError("retries", f"must be between 0 and {MAX_RETRIES}")
        _check_delay("retry_delay", self.retry_delay, allow_none=False)
        if self.retry_delay <= timedelta(0):
            raise DefinitionError("retry_delay", "must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomAction:
    """A button in the Admin Center: ``action`` runs in a child process; its result is shown."""

    id: str
    title: str
    action: Callable[[], object]

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not ACTION_ID.fullmatch(self.id):
            raise DefinitionError("actions.id", f"{self.id!r} must match {ACTION_ID.pattern}")
        check_text("actions.title", self.title)
        if not callable(self.action):
            raise DefinitionError("actions.action", "must be callable")


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """A scheduler definition, as a developer writes it."""

    id: str
    name: str
    description: str = ""
    kind: Kind
    runner: Runner
    defaults: Settings = field(default_factory=Settings)
    actions: Sequence[CustomAction] = ()
    # The OS user its runs run as under systemd (``User=`` of its unit); None: the
    # ``generate-units --user`` default. The manager runs every run as its own user.
    user: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not SCHEDULER_ID.fullmatch(self.id):
            raise DefinitionError(
                "id", f"{self.id!r} must match {SCHEDULER_ID.pattern} (lower-case, dotted)"
            )
        if len(self.id) > MAX_ID_LENGTH:
            raise DefinitionError("id", f"must be at most {MAX_ID_LENGTH} characters")
        check_text("name", self.name)
        check_text("description", self.description, empty=True)
        if not isinstance(self.kind, Kind):
            raise DefinitionError("kind", f"must be a scheduler.Kind, got {self.kind!r}")
        if not (isinstance(self.runner, Command) or callable(self.runner)):
            raise DefinitionError("runner", "must be a callable or scheduler.command([...])")
        if not isinstance(self.defaults, Settings):
            raise DefinitionError("defaults", "must be a scheduler.Settings")
        actions = tuple(self.actions)
        if not all(isinstance(a, CustomAction) for a in actions):
            raise DefinitionError("actions", "must be a list of scheduler.CustomAction")
        ids = [a.id for a in actions]
        if len(ids) != len(set(ids)):
            raise DefinitionError("actions", "action ids must be unique")
        object.__setattr__(self, "actions", actions)
        if self.user is not None and not (
            isinstance(self.user, str) and USER_NAME.fullmatch(self.user)
        ):
            raise DefinitionError("user", f"{self.user!r} is not a valid user name or UID")

    def action(self, action_id: str) -> CustomAction | None:
        return next((a for a in self.actions if a.id == action_id), None)
