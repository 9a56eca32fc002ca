"""The account use cases: add, remove, list users, set or change a password, and log in.

Like every use case they check the subject's permission (``MANAGE_USERS``, or being the
user whose password changes) and write the audit trail: user changes, logins and refused
logins. They work on the state database directly, so they need no running manager.
A login whose stored hash is cheaper than the current cost stores a fresh hash.

User changes (add, remove, set or change a password) are audited first, as
``usecases.schedulers`` explains: the entry is written before the change, so a trail that
cannot be written (``StoreError``) refuses the change and nothing is done; a change that
then fails gets a second entry ("<action> failed"). A login is audited before it is
answered: a trail that cannot be written fails the login (no session is made).
May import ``core``, ``store.protocols`` and ``usecases.schedulers`` (its audit helper).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from supervisor.core.access import ROLES, Permission, Subject
from supervisor.core.clock import Clock, SystemClock
from supervisor.core.errors import DefinitionError, PermissionDenied, StoreError
from supervisor.core.passwords import (
    CURRENT_COST,
    ScryptCost,
    check_new_password,
    generate_password,
    hash_password,
    is_temporary,
    needs_rehash,
    verify_password,
)
from supervisor.core.records import AuditEntry
from supervisor.store.protocols import AuditTrail, StoredUser, UserDirectory
from supervisor.usecases.schedulers import note_after

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# Where the bootstrap admin's one-time password is left when no terminal shows it.
BOOTSTRAP_PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name
BOOTSTRAP_USER = "admin"


class AccountStore(UserDirectory, AuditTrail, Protocol):
    """The store's users and audit trail, which the account use cases write together
    (errors as ``store.protocols`` says)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Login:
    """A successful login: who, with which role, and whether the password is temporary."""

    name: str
    role: str
    must_change_password: bool


@functools.cache
def _dummy_hash(cost: ScryptCost) -> str:
    """Checked for unknown names, so they cost as much as a wrong password."""
    return hash_password(generate_password(), cost=cost)


class Accounts:
    def __init__(
        self,
        users: AccountStore,
        *,
        clock: Clock | None = None,
        cost: ScryptCost = CURRENT_COST,
        bootstrap_file: Path | None = None,
    ) -> None:
        self._users = users
        self._clock = clock or SystemClock()
        self._cost = cost
        self._bootstrap_file = bootstrap_file

    # -- managing users -------------------------------------------------------------------

    def add(
        self, subject: Subject, name: str, *, role: str, password: str, temporary: bool = False
    ) -> None:
        """Add a user; ``temporary``: the password must be changed at the first login."""
        subject.require(Permission.MANAGE_USERS)
        if not USER_NAME.fullmatch(name):
            raise DefinitionError("name", f"{name!r}: use letters, digits and . _ @ - (max 64)")
        if role not in ROLES:
            raise DefinitionError("role", f"{role!r}: choose one of {', '.join(ROLES)}")
        check_new_password(password)
        if self._users.get_user(name) is not None:
            raise DefinitionError("name", f"a user {name!r} already exists")
        password_hash = hash_password(password, cost=self._cost, temporary=temporary)
        with self._audited(subject.name, "add user", f"{name} ({role})"):
            self._users.add_user(name, role=role, password_hash=password_hash)

    def remove(self, subject: Subject, name: str) -> None:
        subject.require(Permission.MANAGE_USERS)
        if self._users.get_user(name) is None:
            raise DefinitionError("name", f"no user {name!r}")
        with self._audited(subject.name, "remove user", name):
            if not self._users.remove_user(name):  # removed by someone else in between
                raise DefinitionError("name", f"no user {name!r}")

    def list(self, subject: Subject) -> list[StoredUser]:
        subject.require(Permission.MANAGE_USERS)
        return list(self._users.list_users())

    def set_password(
        self, subject: Subject, name: str, password: str, *, temporary: bool = False
    ) -> None:
        """An administrator sets ``name``'s password (no current password needed)."""
        subject.require(Permission.MANAGE_USERS)
        if self._users.get_user(name) is None:
            raise DefinitionError("name", f"no user {name!r}")
        check_new_password(password)
        with self._audited(subject.name, "set password", name):
            self._store_password(name, password, temporary=temporary)

    def change_own_password(self, subject: Subject, *, current: str, new: str) -> None:
        """``subject`` changes their own password; the current one must be given."""
        record = self._users.get_user(subject.name)
        if record is None:
            raise PermissionDenied(subject.name, "change_password")
        if not verify_password(current, record.password_hash):
            self._record(subject.name, "change password refused", "wrong current password")
            raise DefinitionError("current", "is not your current password")
        if new == current:
            raise DefinitionError("password", "must differ from the current one")
        check_new_password(new)
        with self._audited(subject.name, "change password", subject.name):
            self._store_password(subject.name, new, temporary=False)

    # -- logging in ------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, *, address: str) -> Login | None:
        """The login if ``password`` is ``name``'s; None (audited) otherwise.

        Unknown names cost as much as wrong passwords. A hash cheaper than the current
        cost is replaced by a fresh one.
        """
        record = self._users.get_user(name) if name else None
        if record is None:
            verify_password(password, _dummy_hash(self._cost))
            self._record(_actor(name), "login refused", f"unknown user, from {address}")
            return None
        if record.role not in ROLES or not verify_password(password, record.password_hash):
            self._record(record.name, "login refused", f"wrong password, from {address}")
            return None
        temporary = is_temporary(record.password_hash)
        if needs_rehash(record.password_hash, cost=self._cost):
            stored = hash_password(password, cost=self._cost, temporary=temporary)
            with contextlib.suppress(DefinitionError):  # removed meanwhile
                self._users.set_password(record.name, stored)
        self._record(record.name, "login", f"from {address}")
        return Login(name=record.name, role=record.role, must_change_password=temporary)

    def refused_unchecked(self, name: str, *, address: str, reason: str) -> None:
        """Note a login refused before its password was checked (e.g. throttled)."""
        self._record(_actor(name), "login refused", f"{reason}, from {address}")

    def must_change_password(self, name: str) -> bool:
        record = self._users.get_user(name)
        return record is not None and is_temporary(record.password_hash)

    # -- internals -------------------------------------------------------------------------

    def _store_password(self, name: str, password: str, *, temporary: bool) -> None:
        self._users.set_password(
            name, hash_password(password, cost=self._cost, temporary=temporary)
        )
        if not temporary and name == BOOTSTRAP_USER and self._bootstrap_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._bootstrap_file.unlink()

    def _entry(self, actor: str, action: str, detail: str) -> AuditEntry:
        return AuditEntry(
            time=self._clock.now(), actor=actor, action=action, scheduler_id=None, detail=detail
        )

    def _record(self, actor: str, action: str, detail: str) -> None:
        self._users.add_audit(self._entry(actor, action, detail))

    @contextlib.contextmanager
    def _audited(self, actor: str, action: str, detail: str) -> Iterator[None]:
        """Audit first, then the body (the change); refused when the trail cannot be
        written; a change that fails gets a second entry and its error propagates."""
        try:
            self._record(actor, action, detail)
        except StoreError as error:
            raise StoreError(
                f"{action} not done: the audit trail cannot be written ({error})"
            ) from error
        try:
            yield
        except Exception as error:
            failed = self._entry(actor, f"{action} failed", f"{detail}: {error}")
            note_after(self._users, failed, lambda: None)
            raise


def _actor(name: str) -> str:
    """A name typed into the login form, fit for the audit trail (bounded, printable)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in name[:64])
    return cleaned or "(no name)"
