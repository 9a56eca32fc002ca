"""What a developer declares: scheduler kinds, timing settings, options and custom actions.

Values only, validated on construction; nothing here runs anything. May import
``errors`` and ``cronexpr`` (for cron and time-zone validation) and the stdlib, and
``context`` for type annotations only.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from supervisor.core.cronexpr import validate_cron, validate_timezone
from supervisor.core.errors import DefinitionError

if TYPE_CHECKING:
    from supervisor.runs.context import Context

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
    """A runner that executes an external program (argv, no shell)."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) and a for a in self.argv):
            raise DefinitionError("runner", "a command needs a non-empty argv of non-empty strings")


def command(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> Command:
    """Build a runner that executes ``argv`` (no shell) as the run."""
    return Command(tuple(argv), tuple(sorted((env or {}).items())), cwd)


Runner: TypeAlias = "Callable[[Context], object] | Command"

SETTING_NAMES = ("start_delay", "pause_time", "cron", "timezone", "timeout", "disabled")


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

    ``timeout`` None means no limit. ``cron`` is required (here or in the stored
    overrides) for ``Kind.CRON``.
    """

    start_delay: timedelta = timedelta(0)
    pause_time: timedelta = timedelta(seconds=60)
    cron: str | None = None
    timezone: str = "UTC"
    timeout: timedelta | None = None
    disabled: bool = False

    def __post_init__(self) -> None:
        _check_delay("start_delay", self.start_delay, allow_none=False)
        _check_delay("pause_time", self.pause_time, allow_none=False)
        _check_delay("timeout", self.timeout, allow_none=True)
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise DefinitionError("timeout", "must be positive (or unset for no limit)")
        if self.cron is not None:
            if not isinstance(self.cron, str):
                raise DefinitionError("cron", "must be a string")
            object.__setattr__(self, "cron", validate_cron(self.cron))
        if not isinstance(self.timezone, str):
            raise DefinitionError("timezone", "must be a string")
        validate_timezone(self.timezone)
        if not isinstance(self.disabled, bool):
            raise DefinitionError("disabled", "must be true or false")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings with ``overrides`` applied (all validated, or none applied)."""
        unknown = set(overrides) - set(SETTING_NAMES)
        if unknown:
            raise DefinitionError(sorted(unknown)[0], "is not a setting")
        return replace(self, **overrides)

    def differences(self, other: Settings) -> dict[str, Any]:
        """The fields whose value in ``other`` differs from this one."""
        return {
            f.name: getattr(other, f.name)
            for f in fields(self)
            if getattr(other, f.name) != getattr(self, f.name)
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomAction:
    """A button in the Admin Center: ``action`` runs in a child process; its result is shown."""

    id: str
    title: str
    action: Callable[[], object]

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not ACTION_ID.fullmatch(self.id):
            raise DefinitionError("actions.id", f"{self.id!r} must match {ACTION_ID.pattern}")
        if not isinstance(self.title, str) or not self.title.strip():
            raise DefinitionError("actions.title", "must be a non-empty string")
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
        if not isinstance(self.name, str) or not self.name.strip():
            raise DefinitionError("name", "must be a non-empty string")
        if not isinstance(self.description, str):
            raise DefinitionError("description", "must be a string")
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
        check_settings_for_kind(self.kind, self.defaults, field_prefix="defaults.")

    def action(self, action_id: str) -> CustomAction | None:
        return next((a for a in self.actions if a.id == action_id), None)


def check_settings_for_kind(kind: Kind, settings: Settings, *, field_prefix: str = "") -> None:
    """Reject settings that cannot work for ``kind`` (a CRON scheduler needs an expression)."""
    if kind is Kind.CRON and settings.cron is None:
        raise DefinitionError(f"{field_prefix}cron", "a CRON scheduler needs a cron expression")
    if kind is not Kind.CRON and settings.cron is not None:
        raise DefinitionError(
            f"{field_prefix}cron", f"only CRON schedulers use one (this one is {kind.name})"
        )
    if kind is Kind.SCHEDULE and settings.pause_time <= timedelta(0):
        raise DefinitionError(f"{field_prefix}pause_time", "must be positive for SCHEDULE")
