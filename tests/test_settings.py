"""The settings owner: checks with kind rules, merges stored overrides, applies a change all
or nothing, diffs for the audit, and reads the settings form into a typed change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from supervisor.core import settings as owner
from supervisor.core.definitions import Kind, Options, Settings
from supervisor.core.errors import DefinitionError
from supervisor.core.settings import KEEP, SettingsChange


def noop(ctx: object) -> None:
    return None


def job(kind: Kind = Kind.SCHEDULE, **defaults: Any) -> Options:
    pause = {"pause_time": timedelta(seconds=10)} if kind is Kind.SCHEDULE else {}
    settings = Settings(**(pause | defaults))
    return owner.check_definition(
        Options(id="job", name="Job", kind=kind, runner=noop, defaults=settings)
    )


CRON = job(Kind.CRON, cron="0 3 * * *", timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("kind", "settings", "field"),
    [
        (Kind.CRON, Settings(), "cron"),
        (Kind.SCHEDULE, Settings(cron="0 3 * * *"), "cron"),
        (Kind.MANUAL, Settings(cron="0 3 * * *"), "cron"),
        (Kind.SCHEDULE, Settings(pause_time=timedelta(0)), "pause_time"),
        (Kind.CRON, Settings(cron="61 * * * *"), "cron"),
        (Kind.CRON, Settings(cron="0 3 * * *", timezone="Mars/Olympus"), "timezone"),
        (Kind.ONE_SHOT, Settings(timezone="posix/UTC"), "timezone"),
        # Regression: accepted and stored, then they did nothing for these kinds.
        (Kind.CRON, Settings(cron="0 3 * * *", pause_time=timedelta(seconds=5)), "pause_time"),
        (Kind.CRON, Settings(cron="0 3 * * *", start_delay=timedelta(seconds=5)), "start_delay"),
        (Kind.MANUAL, Settings(pause_time=timedelta(seconds=5)), "pause_time"),
        (Kind.MANUAL, Settings(start_delay=timedelta(seconds=5)), "start_delay"),
        (Kind.ONE_SHOT, Settings(pause_time=timedelta(seconds=5)), "pause_time"),
    ],
)
def test_check_applies_field_and_kind_rules(kind: Kind, settings: Settings, field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        owner.check(kind, settings)
    assert caught.value.field == field
    with pytest.raises(DefinitionError) as prefixed:
        owner.check(kind, settings, prefix="defaults.")
    assert prefixed.value.field == "defaults." + field


def test_delays_are_refused_naming_the_kinds_that_use_them() -> None:
    with pytest.raises(DefinitionError, match=r"CRON scheduler \(only ONE_SHOT and SCHEDULE use"):
        owner.check(Kind.CRON, Settings(cron="0 3 * * *", start_delay=timedelta(seconds=1)))
    with pytest.raises(DefinitionError, match=r"MANUAL scheduler \(only SCHEDULE uses it\)"):
        owner.apply(
            job(Kind.MANUAL),
            owner.from_store(job(Kind.MANUAL), {}),
            SettingsChange(pause_time=timedelta(seconds=5)),
        )
    # What the kinds use is kept (DESIGN: start_delay for ONE_SHOT and SCHEDULE).
    delayed = Settings(start_delay=timedelta(seconds=5))
    assert owner.check(Kind.ONE_SHOT, delayed) == delayed


def test_check_normalises_the_cron_expression() -> None:
    checked = owner.check(Kind.CRON, Settings(cron=" */5  * * * MON "))
    assert checked.cron == "*/5 * * * mon"
    assert owner.check_cron("0 3 * * *", "UTC") == "0 3 * * *"
    with pytest.raises(DefinitionError) as caught:
        owner.check_cron("0 3 * * *", "Nowhere/City")
    assert caught.value.field == "timezone"


def test_a_change_applies_all_or_nothing_and_keeps_only_differences() -> None:
    current = owner.from_store(CRON, {})
    changed = owner.apply(CRON, current, SettingsChange(timeout=timedelta(minutes=5)))
    assert changed.effective.timeout == timedelta(minutes=5)
    assert dict(changed.overrides) == {"timeout": timedelta(minutes=5)}
    back = owner.apply(CRON, changed, SettingsChange(timeout=None, disabled=True))
    assert dict(back.overrides) == {"disabled": True}
    with pytest.raises(DefinitionError) as caught:
        owner.apply(CRON, changed, SettingsChange(disabled=True, cron="99 * * * *"))
    assert caught.value.field == "cron"  # by its setting name: the form's field
    with pytest.raises(DefinitionError) as removed:
        owner.apply(CRON, changed, SettingsChange(cron=None))
    assert removed.value.field == "cron"


def test_changes_are_typed_and_refuse_unknown_names() -> None:
    assert SettingsChange(disabled=True).given() == {"disabled": True}
    assert SettingsChange().cron is KEEP
    assert SettingsChange.of({"timeout": None}).given() == {"timeout": None}
    with pytest.raises(DefinitionError) as caught:
        SettingsChange.of({"colour": "red"})
    assert caught.value.field == "colour"
    wire = SettingsChange.from_json({"pause_time": 90, "timeout": None, "cron": "* * * * *"})
    assert wire.given() == {
        "pause_time": timedelta(seconds=90),
        "timeout": None,
        "cron": "* * * * *",
    }
    for bad in (True, "90", float("nan"), -1, 10**9):
        with pytest.raises(DefinitionError) as refused:
            SettingsChange.from_json({"start_delay": bad})
        assert refused.value.field == "start_delay"


def test_stored_overrides_that_no_longer_fit_are_left_out() -> None:
    stored = {
        "cron": "0 4 * * *",  # the code changed this scheduler from CRON to SCHEDULE
        "pause_time": timedelta(seconds=3),
        "colour": "red",  # a setting that is gone
        "timeout": "soon",  # a value of the wrong type
    }
    merged = owner.from_store(job(), stored)
    assert merged.effective == Settings(pause_time=timedelta(seconds=3))
    assert dict(merged.overrides) == {"pause_time": timedelta(seconds=3)}
    # Regression: the left-out overrides vanished silently; they are named, with why.
    assert dict(merged.dropped) == {
        "colour": "is not a setting",
        "cron": "only CRON schedulers use one (this one is SCHEDULE)",
        "timeout": "must be a duration, got str",
    }
    # A change stored on top deletes them; a clean merge drops nothing.
    changed = owner.apply(job(), merged, SettingsChange(disabled=True))
    assert set(changed.overrides) == {"pause_time", "disabled"} and changed.dropped == {}
    assert owner.from_store(job(), {"pause_time": timedelta(seconds=3)}).dropped == {}


def test_the_audit_diff_names_only_what_changed() -> None:
    before = Settings(pause_time=timedelta(seconds=10))
    after = Settings(pause_time=timedelta(seconds=90), disabled=True)
    assert owner.audit_diff(before, after) == (
        {"pause_time": 10.0, "disabled": False},
        {"pause_time": 90.0, "disabled": True},
    )
    assert owner.audit_diff(before, before) == ({}, {})
    assert owner.as_json(after)["pause_time"] == 90.0


def test_the_form_reads_each_field_of_the_kind() -> None:
    form = owner.read_form(
        Kind.SCHEDULE,
        {"start_delay": " 5s ", "pause_time": "1h30m", "timeout": "", "disabled": "on"},
    )
    assert form.errors == {}
    assert form.change == SettingsChange(
        start_delay=timedelta(seconds=5),
        pause_time=timedelta(hours=1, minutes=30),
        timeout=None,
        disabled=True,
        retries=0,  # empty: none; an empty retry delay keeps its value
    )
    cron = owner.read_form(Kind.CRON, {"cron": "0 3 * * *", "timezone": "", "timeout": "10m"})
    assert cron.change.timezone == "UTC" and cron.change.disabled is False
    assert cron.change.start_delay is KEEP  # a CRON form does not show it


def test_the_form_names_every_bad_field_and_changes_nothing() -> None:
    form = owner.read_form(
        Kind.CRON, {"cron": "61 * * * *", "timezone": "Nowhere/City", "timeout": "soon"}
    )
    assert set(form.errors) == {"cron", "timezone", "timeout"}
    assert form.texts["timezone"] == "Nowhere/City"
    assert form.change.given() == {}
    empty = owner.read_form(Kind.CRON, {"cron": " ", "timezone": "UTC"})
    assert empty.errors["cron"] == "a cron expression is required"


def _schedule() -> Options:
    return Options(
        id="r.job",
        name="R",
        kind=Kind.SCHEDULE,
        runner=lambda ctx: None,
        defaults=Settings(pause_time=timedelta(minutes=1)),
    )


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"retries": -1}, "retries", "between 0 and 100"),
        ({"retries": 101}, "retries", "between 0 and 100"),
        ({"retries": True}, "retries", "whole number"),
        ({"retry_delay": timedelta(0)}, "retry_delay", "positive"),
        ({"retry_delay": 30}, "retry_delay", "must be a duration"),
    ],
)
def test_retries_are_checked_like_the_other_settings(
    change: dict[str, Any], field: str, problem: str
) -> None:
    options = _schedule()
    current = owner.from_store(options, {})
    with pytest.raises(DefinitionError) as caught:
        owner.apply(options, current, SettingsChange.of(change))
    assert caught.value.field == field and problem in caught.value.problem


def test_retries_apply_on_every_kind_and_travel_as_json() -> None:
    options = _schedule()
    wire = SettingsChange.from_json({"retries": 3, "retry_delay": 45})
    applied = owner.apply(options, owner.from_store(options, {}), wire)
    assert applied.effective.retries == 3
    assert applied.effective.retry_delay == timedelta(seconds=45)
    assert dict(applied.overrides) == {"retries": 3, "retry_delay": timedelta(seconds=45)}
    with pytest.raises(DefinitionError, match="whole number"):
        SettingsChange.from_json({"retries": 2.5})
    for kind in Kind:
        assert {"retries", "retry_delay"} <= set(owner.KIND_FIELDS[kind])
    assert owner.as_json(applied.effective)["retry_delay"] == 45.0
