"""``replacing.replace``: the same values and errors as ``dataclasses.replace``, faster.

Plain frozen classes (the machine's slots, plans, runs, events) take the quick path;
classes with ``init=False`` fields or ``InitVar`` pseudo-fields take the stdlib, and the
tests on those fail if they took the quick path instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.planning import Plan
from supervisor.core.records import Outcome, RunRecord, Trigger
from supervisor.manager import machine, replacing
from supervisor.manager.replacing import replace

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def noop(ctx: object) -> None:
    return None


def a_slot() -> machine.Slot:
    options = Options(
        id="s",
        name="S",
        kind=Kind.SCHEDULE,
        runner=noop,
        defaults=Settings(start_delay=timedelta(seconds=10)),
    )
    slot, _ = machine.open_slot(options, options.defaults, machine.Now(mono=5.0, wall=T0))
    return slot


def a_run() -> RunRecord:
    return RunRecord(
        run_id="r1", scheduler_id="s", trigger=Trigger.SCHEDULE, triggered_by=None, started_at=T0
    )


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class Mutable:
    name: str


@dataclass(frozen=True)
class Window:
    """``end`` is computed (init=False): a copy computes it again from the new values."""

    start: int
    length: int
    end: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "end", self.start + self.length)


UNITS = {"m": 1, "km": 1000}


@dataclass(frozen=True)
class Distance:
    """``unit`` is an InitVar: no attribute, only an argument of ``__post_init__``."""

    metres: int
    unit: InitVar[str]

    def __post_init__(self, unit: str) -> None:
        object.__setattr__(self, "metres", self.metres * UNITS[unit])


@dataclass(frozen=True)
class Counted:
    instances: ClassVar[int] = 0
    value: int


def cases() -> list[tuple[Any, dict[str, Any]]]:
    slot = a_slot()
    run = a_run()
    plan = Plan(due=1.0, planned_at=T0, trigger=Trigger.SCHEDULE)
    return [
        (slot, {"run_pid": None}),
        (slot, {"run": run, "phase": machine.RunPhase.STARTING, "plan": None}),
        (slot, {}),
        (plan, {"due": 2.5}),
        (run, {"ended_at": T0 + timedelta(seconds=3), "outcome": Outcome.SUCCEEDED}),
        (machine.Start(actor="ada"), {"actor": "bob"}),  # one field
        (machine.Close(), {}),  # no field at all
        (Point(x=1, tags=("a",)), {"y": 2}),
        (Mutable(name="a"), {"name": "b"}),
        (Counted(value=1), {"value": 2}),  # a ClassVar: the stdlib's path, the same value
    ]


@pytest.mark.parametrize(("obj", "changes"), cases())
def test_a_copy_equals_the_stdlib_s(obj: Any, changes: dict[str, Any]) -> None:
    copy = replace(obj, **changes)
    expected = dataclasses.replace(obj, **changes)
    assert copy == expected and type(copy) is type(expected)
    assert copy is not obj
    for name, value in changes.items():
        assert getattr(copy, name) is value


def test_the_original_is_left_as_it_was() -> None:
    slot = a_slot()
    replace(slot, run_pid=7, start_failures=2)
    assert slot == a_slot()


def test_plain_frozen_classes_take_the_quick_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(obj: object, /, **changes: object) -> object:
        raise AssertionError("dataclasses.replace was called")

    monkeypatch.setattr(dataclasses, "replace", refuse)
    slot = replace(a_slot(), run_pid=3)
    assert slot.run_pid == 3
    replace(a_run(), error="boom")
    for cls in (machine.Slot, RunRecord):
        assert replacing._QUICK[cls] is not None  # looked up once, kept
    copy = replacing.quick_path(machine.Slot)
    assert copy is not None and copy(slot, {"run_pid": 4}) == replace(slot, run_pid=4)


def test_an_init_false_field_is_computed_again_as_the_stdlib_does() -> None:
    window = Window(start=10, length=5)
    copy = replace(window, length=7)
    assert copy.end == 17 and copy == dataclasses.replace(window, length=7)
    with pytest.raises(ValueError, match="field end is declared with init=False"):
        replace(window, end=3)
    assert replacing.quick_path(Window) is None


def test_an_initvar_goes_to_post_init_as_the_stdlib_does() -> None:
    distance = Distance(metres=2, unit="km")
    copy = replace(distance, metres=3, unit="km")
    assert copy.metres == 3000 and copy == dataclasses.replace(distance, metres=3, unit="km")
    # Not an attribute to copy: the stdlib asks for it again, and so does replace.
    with pytest.raises(ValueError, match="InitVar 'unit' must be specified with replace"):
        replace(distance, metres=3)
    assert replacing.quick_path(Distance) is None


def test_classes_with_pseudo_fields_take_the_stdlib(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[type] = []
    stdlib = dataclasses.replace

    def recording(obj: Any, /, **changes: Any) -> Any:
        called.append(type(obj))
        return stdlib(obj, **changes)

    monkeypatch.setattr(dataclasses, "replace", recording)
    replace(Window(start=1, length=1), start=2)
    replace(Distance(metres=1, unit="m"), unit="km")
    replace(Point(x=1), x=2)
    assert called == [Window, Distance]


def test_an_unknown_field_raises_the_stdlib_s_type_error() -> None:
    for obj in (a_slot(), Point(x=1), Window(start=1, length=1)):
        with pytest.raises(TypeError) as expected:
            dataclasses.replace(obj, nope=1)
        with pytest.raises(TypeError) as raised:
            replace(obj, nope=1)
        assert str(raised.value) == str(expected.value)
        assert "unexpected keyword argument 'nope'" in str(raised.value)


def test_what_is_no_dataclass_instance_raises_the_stdlib_s_type_error() -> None:
    for obj in (object(), Point, {"x": 1}):
        with pytest.raises(TypeError, match="should be called on dataclass instances"):
            replace(obj, x=1)  # type: ignore[type-var]


def test_a_subclass_is_copied_as_itself() -> None:
    @dataclass(frozen=True, slots=True)
    class Point3(Point):
        z: int = 0

    copy = replace(Point3(x=1, z=3), y=2)
    assert type(copy) is Point3 and copy == Point3(x=1, y=2, z=3)
    assert type(replace(Point(x=1), y=2)) is Point
