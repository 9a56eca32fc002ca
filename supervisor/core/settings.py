"""The one owner of a scheduler's settings: checking them, merging the stored overrides
over the code defaults, applying a change, and the before/after of the audit.

Every path goes through here: a definition is checked when it is configured
(``check``, fields named ``defaults.<name>``), the stored overrides are merged when a
backend starts (``from_store``), an operator's change is applied all or nothing
(``apply``, fields named by their setting name), and a backend is handed the result as
an ``EffectiveSettings`` value it stores and applies without checking again. Text from
a form (``read_form``) or the control socket (``SettingsChange.from_json``) becomes a
typed ``SettingsChange`` first.

May import ``definitions``, ``cronexpr``, ``durations``, ``errors`` and the stdlib.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

from supervisor.core.cronexpr import validate_cron, validate_timezone
from supervisor.core.definitions import SETTING_NAMES, Kind, Options, Settings
from supervisor.core.durations import parse_duration
from supervisor.core.errors import DefinitionError

DURATION_SETTINGS: Final = frozenset({"start_delay", "pause_time", "timeout", "retry_delay"})
# Settings only some kinds use: set (away from the class default) on another kind they
# would be stored and do nothing, so ``check`` refuses them.
DELAY_SETTINGS: Final = ("start_delay", "pause_time")
_UNSET: Final = Settings()
MAX_DURATION_SECONDS: Final = 366 * 24 * 3600

# The settings each kind uses, in the order a form shows them; the others have no effect
# on that kind (``cron``, ``start_delay`` and ``pause_time`` are refused outside the kinds
# that use them, see ``check``).
KIND_FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = MappingProxyType(
    {
        Kind.ONE_SHOT: ("start_delay", "timeout", "retries", "retry_delay", "disabled"),
        Kind.SCHEDULE: (
            "start_delay",
            "pause_time",
            "timeout",
            "retries",
            "retry_delay",
            "disabled",
        ),
        Kind.CRON: ("cron", "timezone", "timeout", "retries", "retry_delay", "disabled"),
        Kind.MANUAL: ("timeout", "retries", "retry_delay", "disabled"),
    }
)


# -- checking ------------------------------------------------------------------------------


def check(kind: Kind, settings: Settings, *, prefix: str = "") -> Settings:
    """``settings`` as ``kind`` can use them (the cron expression normalised), or
    ``DefinitionError`` naming the field as ``prefix + name``.

    Beyond what ``Settings`` checks per field: the cron grammar, the time zone, and the
    kind rules (a CRON scheduler needs an expression, the others take none; a SCHEDULE
    needs a positive pause).
    """
    if not isinstance(settings, Settings):
        raise DefinitionError(prefix.rstrip(".") or "settings", "must be a scheduler.Settings")
    try:
        cron = None if settings.cron is None else validate_cron(settings.cron)
        validate_timezone(settings.timezone)
    except DefinitionError as error:
        raise DefinitionError(prefix + error.field, error.problem) from None
    if kind is Kind.CRON and cron is None:
        raise DefinitionError(f"{prefix}cron", "a CRON scheduler needs a cron expression")
    if kind is not Kind.CRON and cron is not None:
        raise DefinitionError(
            f"{prefix}cron", f"only CRON schedulers use one (this one is {kind.name})"
        )
    if kind is Kind.SCHEDULE and settings.pause_time <= timedelta(0):
        raise DefinitionError(f"{prefix}pause_time", "must be positive for SCHEDULE")
    for name in DELAY_SETTINGS:
        if name not in KIND_FIELDS[kind] and getattr(settings, name) != getattr(_UNSET, name):
            users = [k.name for k in Kind if name in KIND_FIELDS[k]]
            only = " and ".join(users) + (" use it" if len(users) > 1 else " uses it")
            raise DefinitionError(
                f"{prefix}{name}",
                f"has no effect on a {kind.name} scheduler (only {only}); leave it unset",
            )
    return settings if cron == settings.cron else replace(settings, cron=cron)


def check_definition(options: Options) -> Options:
    """``options`` with its defaults checked for its kind (``defaults.<name>`` named)."""
    checked = check(options.kind, options.defaults, prefix="defaults.")
    return options if checked is options.defaults else replace(options, defaults=checked)


def check_cron(expr: str, timezone: str = "UTC") -> str:
    """A cron expression, normalised, checked with its time zone (previews, ``next-runs``);
    ``DefinitionError`` naming ``cron`` or ``timezone``."""
    checked = check(Kind.CRON, Settings(cron=expr, timezone=timezone)).cron
    assert checked is not None  # check() refuses a CRON without one
    return checked


# -- changes -------------------------------------------------------------------------------


class Keep(enum.Enum):
    """The value of a ``SettingsChange`` field the change leaves as it is."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsChange:
    """What an operator asks to change; fields left at ``KEEP`` keep their value.

    ``timeout=None`` means no limit, ``cron=None`` removes an expression. The values are
    typed but not yet checked against the scheduler (``apply`` does that).
    """

    start_delay: timedelta | Keep = KEEP
    pause_time: timedelta | Keep = KEEP
    cron: str | Keep | None = KEEP
    timezone: str | Keep = KEEP
    timeout: timedelta | Keep | None = KEEP
    disabled: bool | Keep = KEEP
    retries: int | Keep = KEEP
    retry_delay: timedelta | Keep = KEEP

    def given(self) -> dict[str, Any]:
        """The fields this change sets, by name."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not KEEP}

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> SettingsChange:
        """A change from Python values by setting name; an unknown name is refused."""
        unknown = sorted(set(values) - set(SETTING_NAMES))
        if unknown:
            raise DefinitionError(unknown[0], "is not a setting")
        return cls(**values)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> SettingsChange:
        """A change as the wire carries it (durations in seconds, ``null`` for none)."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name in DURATION_SETTINGS and value is not None:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise DefinitionError(name, "must be a duration in seconds")
                if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_SECONDS:
                    raise DefinitionError(name, f"must be between 0 and {MAX_DURATION_SECONDS} s")
                out[name] = timedelta(seconds=value)
            elif name == "retries" and (not isinstance(value, int) or isinstance(value, bool)):
                raise DefinitionError(name, "must be a whole number")
            else:
                out[name] = value
        return cls.of(out)


# -- effective settings --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveSettings:
    """A scheduler's settings as they apply: built only by this module, so a backend
    can store ``overrides`` and apply ``effective`` without checking them again.

    ``overrides`` holds only the fields whose value differs from the code defaults.
    ``dropped`` names the stored overrides ``from_store`` left out because they no
    longer fit the definition, each with why, so a caller can report them; the next
    stored change (or a reset) deletes them.
    """

    effective: Settings
    defaults: Settings
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    dropped: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def defaults_of(options: Options) -> EffectiveSettings:
    """The code defaults alone (after a reset)."""
    return EffectiveSettings(effective=options.defaults, defaults=options.defaults)


def from_store(options: Options, stored: Mapping[str, Any]) -> EffectiveSettings:
    """The stored overrides merged over the code defaults.

    Overrides were checked when they were stored; one that no longer fits (the code
    changed the kind, or the override names a setting that is gone) is left out, so a
    changed definition never stops a backend from starting, and named with the reason
    in ``dropped`` of the result, so it is never lost silently.
    """
    current = options.defaults
    dropped: dict[str, str] = {}
    for name in sorted(set(stored) - set(SETTING_NAMES)):
        dropped[name] = "is not a setting"
    for name in SETTING_NAMES:
        if name not in stored:
            continue
        try:
            current = check(options.kind, replace(current, **{name: stored[name]}))
        except DefinitionError as error:
            dropped[name] = error.problem
        except TypeError as error:
            dropped[name] = str(error)
    return replace(_effective(options, current), dropped=MappingProxyType(dropped))


def apply(
    options: Options, current: EffectiveSettings, change: SettingsChange
) -> EffectiveSettings:
    """``change`` applied on top of ``current``: all of it, or ``DefinitionError`` naming
    the first bad field (by its setting name) and nothing changed."""
    if not isinstance(change, SettingsChange):
        raise DefinitionError("changes", "must be a SettingsChange")
    wanted = replace(current.effective, **change.given())
    return _effective(options, check(options.kind, wanted))


def _effective(options: Options, settings: Settings) -> EffectiveSettings:
    return EffectiveSettings(
        effective=settings,
        defaults=options.defaults,
        overrides=MappingProxyType(differences(options.defaults, settings)),
    )


def differences(before: Settings, after: Settings) -> dict[str, Any]:
    """The fields whose value in ``after`` differs from ``before``, with ``after``'s value."""
    return {
        f.name: getattr(after, f.name)
        for f in fields(Settings)
        if getattr(after, f.name) != getattr(before, f.name)
    }


# -- the audit and JSON --------------------------------------------------------------------


def setting_json(value: object) -> object:
    """One setting's value as plain JSON (durations in seconds)."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def as_json(settings: Settings) -> dict[str, Any]:
    """Settings as plain values (durations in seconds) for audit and ``--json``."""
    return {f.name: setting_json(getattr(settings, f.name)) for f in fields(Settings)}


def audit_diff(before: Settings, after: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the audit records of a change: the changed fields, before and after."""
    changed = differences(before, after)
    return (
        {name: setting_json(getattr(before, name)) for name in changed},
        {name: setting_json(value) for name, value in changed.items()},
    )


# -- the settings form ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FormReading:
    """What a settings form sent: the raw texts (to show back), the typed change, and a
    message for each field that could not be read (then the change must not be applied)."""

    texts: Mapping[str, str]
    change: SettingsChange
    errors: Mapping[str, str]


TRUE_WORDS: Final = frozenset({"on", "true", "1", "yes"})


def read_form(kind: Kind, form: Mapping[str, str]) -> FormReading:
    """Read the fields a ``kind`` shows (``KIND_FIELDS``); each bad field gets its message.

    Durations read like ``90s``, ``5m``, ``1h30m``; an empty timeout means no limit; an
    empty time zone means UTC; empty retries mean none, an empty retry delay keeps its
    value; a checkbox is on when sent as on/true/1/yes.
    """
    texts: dict[str, str] = {}
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in KIND_FIELDS[kind]:
        if name == "disabled":
            values[name] = form.get(name, "") in TRUE_WORDS
            texts[name] = "on" if values[name] else ""
            continue
        text = form.get(name, "").strip()
        texts[name] = text
        if name == "retry_delay" and not text:
            continue  # left empty: it keeps its value
        try:
            values[name] = _read_field(name, text)
        except DefinitionError as error:
            errors[name] = error.problem
    change = SettingsChange.of({} if errors else values)
    return FormReading(texts=texts, change=change, errors=errors)


def _read_field(name: str, text: str) -> Any:
    if name == "retries":
        if not text:
            return 0
        if not (text.isascii() and text.isdigit()) or len(text) > 4:
            raise DefinitionError(name, "must be a whole number, e.g. 3 (0: no retries)")
        return int(text)
    if name in ("start_delay", "pause_time", "retry_delay"):
        return parse_duration(text, field=name)
    if name == "timeout":
        return None if not text else parse_duration(text, field=name)
    if name == "cron":
        if not text:
            raise DefinitionError(name, "a cron expression is required")
        return validate_cron(text)
    if name == "timezone":
        return validate_timezone(text or "UTC")
    raise DefinitionError(name, "is not a setting")  # pragma: no cover - KIND_FIELDS only
