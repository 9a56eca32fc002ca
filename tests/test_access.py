"""Who may do what: every (role, use case) pair, driven through the real use cases.

The table below is the product's access contract, written out by hand: a change to the
role bundles in ``core.access`` that lets a viewer reset settings (or stops an operator
from stopping) fails here, pair by pair. A new use case without a row fails too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from supervisor.core.access import ROLES, Subject, su, with_role
from supervisor.core.definitions import Kind, Options
from supervisor.core.errors import PermissionDenied
from supervisor.core.records import AuditEntry, LogQuery
from supervisor.usecases.accounts import Accounts
from supervisor.usecases.schedulers import Definitions, UseCases
from tests.test_web_fakes import (
    PASSWORD,
    TEST_COST,
    FakeBackend,
    MemoryAudit,
    MemoryUsers,
    fast_hash,
    make_world,
    noop,
)

VIEWER, OPERATOR, ADMIN, SU = "viewer", "operator", "admin", "su"
NOBODY = "no role"
EVERYONE = (VIEWER, OPERATOR, ADMIN, SU, NOBODY)

# use case -> the subjects allowed to call it (nobody else may).
ALLOWED: dict[str, frozenset[str]] = {
    "configure": frozenset({SU}),
    "list": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "status": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "runs": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "run": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "logs": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "find_settings": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "audit": frozenset({OPERATOR, ADMIN, SU}),
    "start": frozenset({OPERATOR, ADMIN, SU}),
    "stop": frozenset({OPERATOR, ADMIN, SU}),
    "execute": frozenset({OPERATOR, ADMIN, SU}),
    "run_action": frozenset({OPERATOR, ADMIN, SU}),
    "update_settings": frozenset({ADMIN, SU}),
    "reset_settings": frozenset({ADMIN, SU}),
    "users.add": frozenset({ADMIN, SU}),
    "users.remove": frozenset({ADMIN, SU}),
    "users.list": frozenset({ADMIN, SU}),
    "users.set_password": frozenset({ADMIN, SU}),
    # one's own account, and logging in: anyone (the password is what is checked)
    "users.change_own_password": frozenset(EVERYONE),
    "users.authenticate": frozenset(EVERYONE),
    "users.refused_unchecked": frozenset(EVERYONE),
    "users.must_change_password": frozenset(EVERYONE),
}


def subject(who: str) -> Subject:
    if who == SU:
        return su("root")
    if who == NOBODY:
        return Subject("nemo", frozenset())
    return with_role(f"{who}-user", who)


class Directory(MemoryUsers):
    """Users and the audit trail in one, as the store is (``accounts.UserDirectory``)."""

    def __init__(self, audit: MemoryAudit) -> None:
        super().__init__()
        self.audit = audit

    def add_audit(self, entry: AuditEntry) -> None:
        self.audit.add_audit(entry)


@dataclass
class World:
    use_cases: UseCases
    definitions: Definitions
    accounts: Accounts
    backend: FakeBackend
    audit: MemoryAudit
    directory: Directory
    run_id: str

    def effects(self) -> tuple[int, int, int, int]:
        """What a call can change: backend commands, audit entries, definitions, users."""
        return (
            len(self.backend.commands),
            len(self.audit.entries),
            len(self.use_cases.registry),
            len(self.directory.users),
        )


def world() -> World:
    use_cases, backend, audit, _, _ = make_world()
    run_id = backend.execute("jobs.hello", actor="setup")
    backend.log("jobs.hello", "hello", run_id=run_id)
    directory = Directory(audit)
    directory.add_user("leaving", role="viewer", password_hash="x")
    return World(
        use_cases=use_cases,
        definitions=Definitions(use_cases.registry),
        accounts=Accounts(directory, cost=TEST_COST),
        backend=backend,
        audit=audit,
        directory=directory,
        run_id=run_id,
    )


CALLS: dict[str, Callable[[World, Subject], Any]] = {
    "configure": lambda w, s: w.definitions.configure(
        s, Options(id="new.job", name="New", kind=Kind.MANUAL, runner=noop)
    ),
    "list": lambda w, s: w.use_cases.list(s),
    "status": lambda w, s: w.use_cases.status(s, "jobs.repeat"),
    "runs": lambda w, s: w.use_cases.runs(s, "jobs.hello"),
    "run": lambda w, s: w.use_cases.run(s, w.run_id),
    "logs": lambda w, s: w.use_cases.logs(s, LogQuery(scheduler_id="jobs.hello", run_id=w.run_id)),
    "find_settings": lambda w, s: w.use_cases.find_settings(s, "jobs.repeat"),
    "audit": lambda w, s: w.use_cases.audit(s),
    "start": lambda w, s: w.use_cases.start(s, "jobs.repeat"),
    "stop": lambda w, s: w.use_cases.stop(s, "jobs.repeat"),
    "execute": lambda w, s: w.use_cases.execute(s, "jobs.manual"),
    "run_action": lambda w, s: w.use_cases.run_action(s, "jobs.repeat", "count"),
    "update_settings": lambda w, s: w.use_cases.update_settings(
        s, "jobs.repeat", {"pause_time": timedelta(seconds=99)}
    ),
    "reset_settings": lambda w, s: w.use_cases.reset_settings(s, "jobs.repeat"),
    "users.add": lambda w, s: w.accounts.add(
        s, "newcomer", role="viewer", password="a long password"
    ),
    "users.remove": lambda w, s: w.accounts.remove(s, "leaving"),
    "users.list": lambda w, s: w.accounts.list(s),
    "users.set_password": lambda w, s: w.accounts.set_password(s, "leaving", "a new password"),
    "users.change_own_password": lambda w, s: own_password(w, s),
    "users.authenticate": lambda w, s: w.accounts.authenticate("leaving", "x", address="t"),
    "users.refused_unchecked": lambda w, s: w.accounts.refused_unchecked(
        "leaving", address="t", reason="throttled"
    ),
    "users.must_change_password": lambda w, s: w.accounts.must_change_password("leaving"),
}


def own_password(w: World, s: Subject) -> None:
    w.directory.add_user(s.name, role="viewer", password_hash=fast_hash(PASSWORD))
    w.accounts.change_own_password(s, current=PASSWORD, new="my own new password")


def test_the_table_covers_every_use_case_and_every_role() -> None:
    def public(cls: type) -> set[str]:
        return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}

    every = public(UseCases) | public(Definitions) | {f"users.{n}" for n in public(Accounts)}
    assert set(ALLOWED) == every == set(CALLS)
    assert set(ROLES) == {VIEWER, OPERATOR, ADMIN}  # a new role needs its column here


@pytest.mark.parametrize("who", EVERYONE)
@pytest.mark.parametrize("use_case", sorted(ALLOWED))
def test_who_may_do_what(use_case: str, who: str) -> None:
    w = world()
    acting = subject(who)
    before = w.effects()
    if who in ALLOWED[use_case]:
        CALLS[use_case](w, acting)
        return
    with pytest.raises(PermissionDenied) as caught:
        CALLS[use_case](w, acting)
    assert caught.value.subject == acting.name
    assert w.effects() == before, "a refused call must change nothing"


@pytest.mark.parametrize("use_case", ["start", "stop", "execute", "update_settings", "users.add"])
def test_an_allowed_change_is_audited_with_the_actor(use_case: str) -> None:
    w = world()
    acting = subject(ADMIN)
    CALLS[use_case](w, acting)
    assert w.audit.entries[-1].actor == acting.name
