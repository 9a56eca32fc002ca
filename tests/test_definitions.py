"""Scheduler definitions: valid options build, invalid ones name the field (on construction
for what a field is on its own, at configure time for the rest: ``test_settings``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from supervisor.core.access import su
from supervisor.core.definitions import (
    Command,
    CustomAction,
    Kind,
    Options,
    RunContext,
    Settings,
    command,
)
from supervisor.core.errors import DefinitionError
from supervisor.core.registry import Registry
from supervisor.runs.context import Context
from supervisor.usecases.schedulers import Definitions


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
        ({"actions": ["x"]}, "actions"),
        ({"name": "caf\udce9"}, "name"),
        ({"description": "bad \ud800 text"}, "description"),
        ({"name": "nul\x00"}, "name"),
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
        ({"cron": 5}, "cron"),
        ({"cron": "  "}, "cron"),
        ({"timezone": "Europe/\udcff"}, "timezone"),
        ({"disabled": "yes"}, "disabled"),
        ({"start_delay": timedelta(days=400)}, "start_delay"),
    ],
)
def test_invalid_settings_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": Kind.CRON}, "defaults.cron"),
        ({"defaults": Settings(cron="61 * * * *")}, "defaults.cron"),
        ({"defaults": Settings(timezone="Mars/Olympus")}, "defaults.timezone"),
        (
            {"kind": Kind.SCHEDULE, "defaults": Settings(pause_time=timedelta(0))},
            "defaults.pause_time",
        ),
    ],
)
def test_what_needs_more_than_the_field_is_refused_at_configure_time(
    overrides: dict[str, object], field: str
) -> None:
    definitions = Definitions(Registry())
    with pytest.raises(DefinitionError) as caught:
        definitions.configure(su(), options(**overrides))
    assert caught.value.field == field
    assert definitions.registry.ids() == []


def test_configure_stores_the_cron_expression_normalised() -> None:
    registry = Registry()
    Definitions(registry).configure(
        su(), options(kind=Kind.CRON, defaults=Settings(cron="  0   3 * * MON "))
    )
    assert registry.get("my.test.scheduler").defaults.cron == "0 3 * * mon"


# Regression (issue 13, item 5): lone surrogates in a name made the overview answer 500
# for every user and `list --json` crash; they are refused at configure time instead.
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: options(name="Report \udc80"), "name"),
        (lambda: options(description="\ud83d alone"), "description"),
        (
            lambda: options(
                actions=[CustomAction(id="go", title="Go \udfff", action=lambda: "ok")]
            ),
            "actions.title",
        ),
        (lambda: options(id="job.\udc80"), "id"),
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(build: object, field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        build()  # type: ignore[operator]
    assert caught.value.field == field


def test_text_that_encodes_is_kept() -> None:
    built = options(name="Nächtlicher Bericht 📈", description="")
    assert built.name == "Nächtlicher Bericht 📈"


def test_the_runtime_context_fulfils_the_protocol_runners_are_typed_against() -> None:
    class Sink:
        def write(self, record: object) -> None:
            return None

    context = Context(scheduler_id="a", run_id="r", trigger="manual", deadline=None, sink=Sink())
    assert isinstance(context, RunContext)
    assert context.err() is None and not context.cancelled


def test_command_runner_needs_an_argv() -> None:
    assert command(["echo", "hi"], env={"A": "1"}).argv == ("echo", "hi")
    with pytest.raises(DefinitionError) as caught:
        command([])
    assert caught.value.field == "runner.argv"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        # Regression: a string argv became one argument per character ('l', 's', ...).
        (lambda: command("ls -la"), "runner.argv"),  # type: ignore[arg-type]
        (lambda: command(b"ls"), "runner.argv"),  # type: ignore[arg-type]
        (lambda: command(["ls", "-l\x00a"]), "runner.argv[1]"),
        (lambda: command(["ls\udc80"]), "runner.argv[0]"),
        (lambda: command(["ls", 3]), "runner.argv[1]"),  # type: ignore[list-item]
        (lambda: command(["ls", ""]), "runner.argv[1]"),
        (lambda: command(["env"], env={"A=B": "1"}), "runner.env"),
        (lambda: command(["env"], env={"": "1"}), "runner.env"),
        (lambda: command(["env"], env={"A": "1\x00"}), "runner.env['A']"),
        (lambda: command(["env"], env={"A": "\udc80"}), "runner.env['A']"),
        (lambda: command(["env"], env={"A": 1}), "runner.env['A']"),  # type: ignore[dict-item]
        (lambda: command(["env"], env=[("A", "1")]), "runner.env"),  # type: ignore[arg-type]
        (lambda: command(["pwd"], cwd=5), "runner.cwd"),  # type: ignore[arg-type]
        (lambda: command(["pwd"], cwd="/tmp\x00x"), "runner.cwd"),
        (lambda: Command("ls"), "runner.argv"),  # type: ignore[arg-type]
        (lambda: Command(("ls",), cwd=5), "runner.cwd"),  # type: ignore[arg-type]
    ],
)
def test_a_command_the_os_cannot_run_is_refused_naming_the_field(
    build: Callable[[], object], field: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        build()
    assert caught.value.field == field


def test_a_command_takes_a_path_as_cwd_and_an_empty_env_value() -> None:
    built = command(["pwd"], cwd=Path("/srv/jobs"), env={"EMPTY": "", "B": "2"})
    assert built.cwd == "/srv/jobs"
    assert built.env == (("B", "2"), ("EMPTY", ""))
