"""The account use cases: add, remove, list, disable, enable users, change a role, set or
change a password, and log in.

Like every use case they check the subject's permission (``VIEW_USERS`` to list,
``MANAGE_USERS`` to change users, ``RESET_PASSWORDS`` to set another user's password, or
being the user whose password changes) and write the audit trail: user changes, logins
and refused logins (name and address, never the password), also the logins a trusted
proxy's header makes (once per new session). They work on the state
database directly, so they need no running manager. A login whose stored hash is cheaper
than the current cost stores a fresh hash.

A disabled user keeps its record and password, locked as ``passwd -l`` locks one: the
stored hash gets a ``!`` in front, which no password matches; enabling removes it. No
administrator can remove, disable or demote themselves, nor the last enabled admin, so
the Admin Center always keeps someone who can manage it.

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
LOCKED = "!"  # in front of a disabled user's stored hash
ADMIN_ROLE = "admin"
# Where the bootstrap admin's one-time password is left when no terminal shows it.
BOOTSTRAP_PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name
BOOTSTRAP_USER = "admin"


class AccountStore(UserDirectory, AuditTrail, Protocol):
    """The store's users and audit trail, which the account use cases write together
    (errors as ``store.protocols`` says)."""


def is_disabled(user: StoredUser) -> bool:
    return user.password_hash.startswith(LOCKED)


def must_change(user: StoredUser) -> bool:
    """Whether ``user``'s password is a one-time one, to change at the next login."""
    return is_temporary(user.password_hash.removeprefix(LOCKED))


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
        record = self._existing(name)
        self._keep_an_admin(subject, record, "remove")
        with self._audited(subject.name, "remove user", name):
            if not self._users.remove_user(name):  # removed by someone else in between
                raise DefinitionError("name", f"no user {name!r}")

    def list(self, subject: Subject) -> list[StoredUser]:
        subject.require(Permission.VIEW_USERS)
        return list(self._users.list_users())

    def set_role(self, subject: Subject, name: str, role: str) -> bool:
        """Give ``name`` another role; it holds from their next request on. False (and
        nothing audited) if ``name`` has that role already."""
        subject.require(Permission.MANAGE_USERS)
        if role not in ROLES:
            raise DefinitionError("role", f"{role!r}: choose one of {', '.join(ROLES)}")
        record = self._existing(name)
        if record.role == role:
            return False
        if role != ADMIN_ROLE:
            self._keep_an_admin(subject, record, "demote")
        with self._audited(subject.name, "set role", f"{name}: {record.role} -> {role}"):
            self._users.set_role(name, role)
        return True

    def disable(self, subject: Subject, name: str) -> bool:
        """Lock ``name`` out (the record and password stay); refused logins are audited.
        False (and nothing audited) if ``name`` was disabled already."""
        subject.require(Permission.MANAGE_USERS)
        record = self._existing(name)
        if is_disabled(record):
            return False
        self._keep_an_admin(subject, record, "disable")
        with self._audited(subject.name, "disable user", name):
            self._users.set_password(name, LOCKED + record.password_hash)
        return True

    def enable(self, subject: Subject, name: str) -> bool:
        """Let ``name`` log in again with their password; False if they could already."""
        subject.require(Permission.MANAGE_USERS)
        record = self._existing(name)
        if not is_disabled(record):
            return False
        with self._audited(subject.name, "enable user", name):
            self._users.set_password(name, record.password_hash.removeprefix(LOCKED))
        return True

    def set_password(
        self, subject: Subject, name: str, password: str, *, temporary: bool = False
    ) -> None:
        """An administrator sets ``name``'s password (no current password needed); a
        disabled user stays disabled."""
        subject.require(Permission.RESET_PASSWORDS)
        record = self._existing(name)
        check_new_password(password)
        detail = f"{name} (one-time)" if temporary else name
        with self._audited(subject.name, "set password", detail):
            self._store_password(name, password, temporary=temporary, locked=is_disabled(record))

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
        if is_disabled(record):
            verify_password(password, _dummy_hash(self._cost))
            self._record(record.name, "login refused", f"user disabled, from {address}")
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

    def proxy_login(self, name: str, *, address: str, header: str) -> None:
        """Note that the trusted proxy's ``header`` logged ``name`` in (a new session; the
        proxy checked who they are). ``StoreError`` when the trail cannot be written: the
        caller then makes no session."""
        self._record(_actor(name), "login", f"through proxy header {header}, from {address}")

    def refused_unchecked(self, name: str, *, address: str, reason: str) -> None:
        """Note a login refused before its password was checked (e.g. throttled)."""
        self._record(_actor(name), "login refused", f"{reason}, from {address}")

    def must_change_password(self, name: str) -> bool:
        record = self._users.get_user(name)
        return record is not None and is_temporary(record.password_hash)

    # -- internals -------------------------------------------------------------------------

    def _existing(self, name: str) -> StoredUser:
        record = self._users.get_user(name)
        if record is None:
            raise DefinitionError("name", f"no user {name!r}")
        return record

    def _keep_an_admin(self, subject: Subject, record: StoredUser, what: str) -> None:
        """Refuse to take away the subject's own account or the last enabled admin."""
        if record.name == subject.name:
            raise DefinitionError("name", f"you cannot {what} your own account")
        if record.role != ADMIN_ROLE or is_disabled(record):
            return
        admins = [
            u for u in self._users.list_users() if u.role == ADMIN_ROLE and not is_disabled(u)
        ]
        if [u.name for u in admins] == [record.name]:
            raise DefinitionError("name", f"{record.name!r} is the last admin: cannot {what}")

    def _store_password(
        self, name: str, password: str, *, temporary: bool, locked: bool = False
    ) -> None:
        stored = hash_password(password, cost=self._cost, temporary=temporary)
        self._users.set_password(name, LOCKED + stored if locked else stored)
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
