"""Scheduler definitions: valid options build, invalid ones name the field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from supervisor.core.definitions import (
    CustomAction,
    Kind,
    Options,
    Settings,
    check_settings_for_kind,
    command,
)
from supervisor.core.errors import DefinitionError


def noop(ctx: object) -> None:
    return None


def options(**overrides: object) -> Options:
    values: dict[str, object] = {
        "id": "my.test.scheduler",
        "name": "Hello",
        "kind": Kind.MANUAL,
        "runner": noop,
    }
    values.update(overrides)
    return Options(**values)  # type: ignore[arg-type]


def test_valid_options_keep_their_values() -> None:
    action = CustomAction(id="flush", title="Flush caches", action=lambda: "ok")
    built = options(actions=[action], description="d")
    assert built.id == "my.test.scheduler"
    assert built.actions == (action,)
    assert built.action("flush") is action
    assert built.action("missing") is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": "Upper.Case"}, "id"),
        ({"id": ""}, "id"),
        ({"id": ".leading"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"name": "  "}, "name"),
        ({"description": 3}, "description"),
        ({"kind": "manual"}, "kind"),
        ({"runner": "not callable"}, "runner"),
        ({"defaults": {"pause_time": 3}}, "defaults"),
        ({"kind": Kind.CRON}, "defaults.cron"),
        ({"actions": ["x"]}, "actions"),
    ],
)
def test_invalid_options_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        options(**overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ":")


def test_duplicate_action_ids_are_refused() -> None:
    a = CustomAction(id="a", title="A", action=lambda: None)
    with pytest.raises(DefinitionError, match="unique"):
        options(actions=[a, a])


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"start_delay": timedelta(seconds=-1)}, "start_delay"),
        ({"pause_time": 5}, "pause_time"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"disabled": "yes"}, "disabled"),
        ({"start_delay": timedelta(days=400)}, "start_delay"),
    ],
)
def test_invalid_settings_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_overrides_apply_all_or_nothing() -> None:
    defaults = Settings(pause_time=timedelta(seconds=10))
    changed = defaults.with_overrides({"pause_time": timedelta(seconds=3), "disabled": True})
    assert changed.pause_time == timedelta(seconds=3)
    assert changed.disabled is True
    assert defaults.differences(changed) == {"pause_time": timedelta(seconds=3), "disabled": True}
    with pytest.raises(DefinitionError) as caught:
        defaults.with_overrides({"pause_time": timedelta(seconds=1), "timezone": "Nowhere/X"})
    assert caught.value.field == "timezone"
    with pytest.raises(DefinitionError) as unknown:
        defaults.with_overrides({"colour": "red"})
    assert unknown.value.field == "colour"


def test_schedule_needs_a_positive_pause() -> None:
    with pytest.raises(DefinitionError) as caught:
        check_settings_for_kind(Kind.SCHEDULE, Settings(pause_time=timedelta(0)))
    assert caught.value.field == "pause_time"


def test_command_runner_needs_an_argv() -> None:
    assert command(["echo", "hi"], env={"A": "1"}).argv == ("echo", "hi")
    with pytest.raises(DefinitionError) as caught:
        command([])
    assert caught.value.field == "runner"
