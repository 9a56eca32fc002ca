"""A run's ``Job``: run ids are checked as their pattern says, without the regex engine."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.runs.job import MAX_RUN_ID, Job

PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def accepted(run_id: str) -> bool:
    try:
        Job(scheduler_id="s", run_id=run_id, trigger="manual")
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "run_id",
    ["r", "0", "a.b:c-d_e", "Z" * MAX_RUN_ID, "x-", "9:"],
)
def test_run_ids_of_the_pattern_are_accepted(run_id: str) -> None:
    assert accepted(run_id)


@pytest.mark.parametrize(
    "run_id",
    ["", "-a", ".a", "_a", "a b", "a/b", "a\n", "é", "aé", "a\x00", " a", "Z" * (MAX_RUN_ID + 1)],
)
def test_other_run_ids_are_refused(run_id: str) -> None:
    assert not accepted(run_id)


@given(st.text(alphabet="aZ09._:-/ \n\x00é-", max_size=8))
def test_the_check_is_the_patterns(run_id: str) -> None:
    assert accepted(run_id) == bool(PATTERN.fullmatch(run_id) and len(run_id) <= MAX_RUN_ID)


def test_a_relative_cgroup_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Job(scheduler_id="s", run_id="r", trigger="manual", cgroup="sys/fs/cgroup/x")
    assert Job(scheduler_id="s", run_id="r", trigger="manual", cgroup="/x").cgroup == "/x"
