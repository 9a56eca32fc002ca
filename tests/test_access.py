"""Who may do what: every (role, use case) pair, driven through the real use cases.

The table below is the product's access contract, written out by hand: a change to the
role bundles in ``core.access`` that lets a viewer reset settings (or stops an operator
from stopping) fails here, pair by pair. A new use case without a row fails too.

``PERMISSION`` pins which permission each use case checks, independently of the roles:
each use case is run by a subject holding every permission but its own (refused,
nothing changed) and by one holding only its own (allowed, and it did its work). Two use
cases that swapped the permissions they check fail here even when the role bundles hide it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from supervisor.core.access import ROLES, Permission, Subject, su, with_role
from supervisor.core.definitions import Kind, Options
from supervisor.core.errors import DefinitionError, PermissionDenied
from supervisor.core.records import AuditEntry, LogQuery
from supervisor.core.registry import Registry
from supervisor.core.settings import from_store
from supervisor.usecases.accounts import Accounts
from supervisor.usecases.schedulers import Definitions, UseCases
from tests.test_web_fakes import (
    PASSWORD,
    START,
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
    "status_version": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "store_health": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "status": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "runs": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "recent_runs": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "run": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "logs": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "find_settings": frozenset({VIEWER, OPERATOR, ADMIN, SU}),
    "audit": frozenset({OPERATOR, ADMIN, SU}),
    "start": frozenset({OPERATOR, ADMIN, SU}),
    "stop": frozenset({OPERATOR, ADMIN, SU}),
    "pause": frozenset({OPERATOR, ADMIN, SU}),
    "resume": frozenset({OPERATOR, ADMIN, SU}),
    "disable": frozenset({ADMIN, SU}),
    "enable": frozenset({ADMIN, SU}),
    "execute": frozenset({OPERATOR, ADMIN, SU}),
    "run_action": frozenset({OPERATOR, ADMIN, SU}),
    "update_settings": frozenset({ADMIN, SU}),
    "reset_settings": frozenset({ADMIN, SU}),
    "users.add": frozenset({ADMIN, SU}),
    "users.remove": frozenset({ADMIN, SU}),
    "users.list": frozenset({ADMIN, SU}),
    "users.set_password": frozenset({ADMIN, SU}),
    "users.set_role": frozenset({ADMIN, SU}),
    "users.disable": frozenset({ADMIN, SU}),
    "users.enable": frozenset({ADMIN, SU}),
    # one's own account, and logging in: anyone (the password is what is checked)
    "users.change_own_password": frozenset(EVERYONE),
    "users.authenticate": frozenset(EVERYONE),
    "users.refused_unchecked": frozenset(EVERYONE),
    "users.session_ended": frozenset(EVERYONE),
    "users.proxy_login": frozenset(EVERYONE),
    "users.proxy_login_refused": frozenset(EVERYONE),
    "users.must_change_password": frozenset(EVERYONE),
}

# use case -> the one permission it checks.
PERMISSION: dict[str, Permission | None] = {
    "configure": Permission.CONFIGURE,
    "list": Permission.LIST,
    "status_version": Permission.LIST,
    "store_health": Permission.LIST,
    "status": Permission.STATUS,
    "runs": Permission.STATUS,
    "recent_runs": Permission.STATUS,
    "run": Permission.STATUS,
    "logs": Permission.VIEW_LOGS,
    "find_settings": Permission.FIND_SETTINGS,
    "audit": Permission.VIEW_AUDIT,
    "start": Permission.START,
    "stop": Permission.STOP,
    "pause": Permission.STOP,
    "resume": Permission.START,
    "disable": Permission.UPDATE_SETTINGS,
    "enable": Permission.UPDATE_SETTINGS,
    "execute": Permission.EXECUTE,
    "run_action": Permission.RUN_ACTION,
    "update_settings": Permission.UPDATE_SETTINGS,
    "reset_settings": Permission.RESET_SETTINGS,
    "users.add": Permission.MANAGE_USERS,
    "users.remove": Permission.MANAGE_USERS,
    "users.list": Permission.VIEW_USERS,
    "users.set_password": Permission.RESET_PASSWORDS,
    "users.set_role": Permission.MANAGE_USERS,
    "users.disable": Permission.MANAGE_USERS,
    "users.enable": Permission.MANAGE_USERS,
    # checked by the password, not a permission
    "users.change_own_password": None,
    "users.authenticate": None,
    "users.refused_unchecked": None,
    "users.session_ended": None,
    "users.proxy_login": None,
    "users.proxy_login_refused": None,
    "users.must_change_password": None,
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
            len(self.definitions.registry),
            len(self.directory.users),
        )


def world() -> World:
    use_cases, backend, audit, _, _ = make_world()
    run_id = backend.execute("jobs.hello", actor="setup")
    backend.log("jobs.hello", "hello", run_id=run_id)
    directory = Directory(audit)
    directory.add_user("leaving", role="viewer", password_hash="x")
    directory.add_user("locked", role="operator", password_hash="!x")  # disabled
    audit.add_audit(AuditEntry(time=START, actor="setup", action="seed", scheduler_id=None))
    backend.update_settings(
        "jobs.repeat",
        from_store(use_cases.registry.get("jobs.repeat"), {"disabled": True}),
    )
    backend.commands.clear()
    return World(
        use_cases=use_cases,
        # The running use cases froze their registry; code configures another one.
        definitions=Definitions(Registry(app_name="demo")),
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
    "status_version": lambda w, s: w.use_cases.status_version(s),
    "store_health": lambda w, s: w.use_cases.store_health(s),
    "status": lambda w, s: w.use_cases.status(s, "jobs.repeat"),
    "runs": lambda w, s: w.use_cases.runs(s, "jobs.hello"),
    "recent_runs": lambda w, s: w.use_cases.recent_runs(s, ["jobs.hello"], limit=5),
    "run": lambda w, s: w.use_cases.run(s, w.run_id),
    "logs": lambda w, s: w.use_cases.logs(s, LogQuery(scheduler_id="jobs.hello", run_id=w.run_id)),
    "find_settings": lambda w, s: w.use_cases.find_settings(s, "jobs.repeat"),
    "audit": lambda w, s: w.use_cases.audit(s),
    "start": lambda w, s: w.use_cases.start(s, "jobs.repeat"),
    "stop": lambda w, s: w.use_cases.stop(s, "jobs.repeat"),
    "pause": lambda w, s: w.use_cases.pause(
        s, "jobs.repeat", until=w.backend.clock.now() + timedelta(hours=1), reason="why"
    ),
    "resume": lambda w, s: w.use_cases.resume(s, "jobs.repeat"),
    "disable": lambda w, s: w.use_cases.disable(s, "jobs.hello", reason="broken"),
    "enable": lambda w, s: w.use_cases.enable(s, "jobs.repeat"),
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
    "users.set_role": lambda w, s: w.accounts.set_role(s, "leaving", "operator"),
    "users.disable": lambda w, s: w.accounts.disable(s, "leaving"),
    "users.enable": lambda w, s: w.accounts.enable(s, "locked"),
    "users.change_own_password": lambda w, s: own_password(w, s),
    "users.authenticate": lambda w, s: w.accounts.authenticate("leaving", "x", address="t"),
    "users.refused_unchecked": lambda w, s: w.accounts.refused_unchecked(
        "leaving", address="t", reason="throttled"
    ),
    "users.session_ended": lambda w, s: w.accounts.session_ended(
        "leaving", address="t", reason="user removed"
    ),
    "users.must_change_password": lambda w, s: w.accounts.must_change_password("leaving"),
    "users.proxy_login": lambda w, s: w.accounts.proxy_login(
        "leaving", address="t", header="X-Remote-User"
    ),
    "users.proxy_login_refused": lambda w, s: w.accounts.proxy_login_refused(
        "nobody", address="t", header="X-Remote-User", reason="unknown user"
    ),
}


# use case -> what its call did, seen from outside (the result, or the world after it).
DID: dict[str, Callable[[World, Any], bool]] = {
    "configure": lambda w, r: w.definitions.registry.ids() == ["new.job"],
    "list": lambda w, r: "jobs.repeat" in [s.id for s in r],
    # The fake backend cannot tell a version: the use case passes its None on, not a guess.
    "status_version": lambda w, r: r is None,
    "store_health": lambda w, r: r is None,
    "status": lambda w, r: r.id == "jobs.repeat",
    "runs": lambda w, r: [run.run_id for run in r] == [w.run_id],
    "recent_runs": lambda w, r: [run.run_id for run in r["jobs.hello"]] == [w.run_id],
    "run": lambda w, r: r.run_id == w.run_id,
    "logs": lambda w, r: [record.message for _, record in r] == ["hello"],
    "find_settings": lambda w, r: r.effective.disabled is True,
    "audit": lambda w, r: [e.action for _, e in r] == ["seed"],
    "start": lambda w, r: w.backend.commands[-1][:2] == ("start", "jobs.repeat"),
    "stop": lambda w, r: w.backend.commands[-1][:2] == ("stop", "jobs.repeat"),
    "pause": lambda w, r: w.backend.commands[-1][:2] == ("pause", "jobs.repeat"),
    "resume": lambda w, r: w.backend.commands[-1][:2] == ("start", "jobs.repeat"),
    "disable": lambda w, r: w.backend.status("jobs.hello").settings.disabled is True,
    "enable": lambda w, r: w.backend.overrides("jobs.repeat") == {},
    "execute": lambda w, r: w.backend.run(r).scheduler_id == "jobs.manual",
    "run_action": lambda w, r: r == "42 things",
    "update_settings": lambda w, r: (
        w.backend.overrides("jobs.repeat")["pause_time"] == timedelta(seconds=99)
    ),
    "reset_settings": lambda w, r: w.backend.overrides("jobs.repeat") == {},
    "users.add": lambda w, r: "newcomer" in w.directory.users,
    "users.remove": lambda w, r: "leaving" not in w.directory.users,
    "users.list": lambda w, r: "leaving" in [a.name for a in r],
    "users.set_password": lambda w, r: w.directory.users["leaving"].password_hash != "x",
    "users.set_role": lambda w, r: w.directory.users["leaving"].role == "operator",
    "users.disable": lambda w, r: w.directory.users["leaving"].password_hash == "!x",
    "users.enable": lambda w, r: w.directory.users["locked"].password_hash == "x",
}


def own_password(w: World, s: Subject) -> None:
    w.directory.add_user(s.name, role="viewer", password_hash=fast_hash(PASSWORD))
    w.accounts.change_own_password(s, current=PASSWORD, new="my own new password")


def test_the_table_covers_every_use_case_and_every_role() -> None:
    def public(cls: type) -> set[str]:
        return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}

    every = public(UseCases) | public(Definitions) | {f"users.{n}" for n in public(Accounts)}
    assert set(ALLOWED) == every == set(CALLS) == set(PERMISSION)
    assert set(DID) == {name for name, needed in PERMISSION.items() if needed is not None}
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


@pytest.mark.parametrize(
    "use_case",
    [
        "start",
        "stop",
        "execute",
        "update_settings",
        "users.add",
        "users.remove",
        "users.set_role",
        "users.disable",
        "users.enable",
        "users.set_password",
    ],
)
def test_an_allowed_change_is_audited_with_the_actor(use_case: str) -> None:
    w = world()
    acting = subject(ADMIN)
    CALLS[use_case](w, acting)
    assert w.audit.entries[-1].actor == acting.name


@pytest.mark.parametrize("use_case", sorted(DID))
def test_each_use_case_checks_its_own_permission(use_case: str) -> None:
    # Regression: logs->LIST, reset_settings->UPDATE_SETTINGS and audit->START swapped
    # together kept every role's bundle intact, so the role table above stayed green.
    needed = PERMISSION[use_case]
    assert needed is not None
    w = world()
    before = w.effects()
    all_but = Subject("all-but", frozenset(Permission) - {needed})
    with pytest.raises(PermissionDenied) as caught:
        CALLS[use_case](w, all_but)
    assert caught.value.permission == needed.value
    assert w.effects() == before, "a refused call must change nothing"

    w = world()
    result = CALLS[use_case](w, Subject("only", frozenset({needed})))
    assert DID[use_case](w, result), f"{use_case} allowed with {needed} but did nothing"


def test_the_user_permissions_are_the_admins_alone() -> None:
    user_permissions = {Permission.VIEW_USERS, Permission.MANAGE_USERS, Permission.RESET_PASSWORDS}
    assert {role for role, held in ROLES.items() if held & user_permissions} == {ADMIN}
    assert ROLES[ADMIN] >= user_permissions


TAKE_AWAY: dict[str, Callable[[World, Subject, str], Any]] = {
    "remove": lambda w, s, name: w.accounts.remove(s, name),
    "disable": lambda w, s, name: w.accounts.disable(s, name),
    "demote": lambda w, s, name: w.accounts.set_role(s, name, "viewer"),
}


@pytest.mark.parametrize("what", sorted(TAKE_AWAY))
def test_an_admin_cannot_lock_themselves_or_the_last_admin_out(what: str) -> None:
    w = world()
    w.directory.add_user("ada", role="admin", password_hash="x")
    w.directory.add_user("bob", role="admin", password_hash="x")
    before = w.effects()
    with pytest.raises(DefinitionError, match="your own account"):
        TAKE_AWAY[what](w, with_role("ada", ADMIN), "ada")
    assert w.effects() == before
    # bob may take ada away; then bob is the last enabled admin, whom nobody may take away
    TAKE_AWAY[what](w, with_role("bob", ADMIN), "ada")
    before = w.effects()
    with pytest.raises(DefinitionError, match="last admin"):
        TAKE_AWAY[what](w, su("root"), "bob")
    assert w.effects() == before
