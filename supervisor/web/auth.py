"""Who is logged in: Admin Center users, password checks and the bootstrap admin.

Users are stored by the store (``store.protocols.UserDirectory``); this module
only reads them, checks passwords and, on a first start, creates the bootstrap admin.
May import ``passwords``, ``user``, ``errors``, ``store.protocols`` and the stdlib.
"""

from __future__ import annotations

import functools
from typing import IO

from supervisor.core.access import ROLES, Subject, with_role
from supervisor.core.errors import DefinitionError
from supervisor.core.passwords import generate_password, hash_password, verify_password
from supervisor.store.protocols import StoredUser, UserDirectory

BOOTSTRAP_USER = "admin"


@functools.cache
def _dummy_hash() -> str:
    """Checked for unknown names, so they cost as much as a wrong password."""
    return hash_password(generate_password())


def check_password(users: UserDirectory, name: str, password: str) -> StoredUser | None:
    """The user if ``password`` is theirs; None otherwise (with the same cost either way)."""
    record = users.get_user(name) if name else None
    if record is None:
        verify_password(password, _dummy_hash())
        return None
    if not verify_password(password, record.password_hash):
        return None
    return record


def subject_for(users: UserDirectory, name: str) -> Subject | None:
    """The subject a logged-in user acts as, read afresh (a removed user acts no more)."""
    record = users.get_user(name)
    if record is None or record.role not in ROLES:
        return None
    return with_role(record.name, record.role)


def ensure_bootstrap_admin(users: UserDirectory, *, out: IO[str]) -> str | None:
    """On a first start (no user at all) create ``admin`` with a one-time random password.

    The password is written to ``out`` once and returned; None if users already existed.
    """
    if users.list_users():
        return None
    password = generate_password()
    try:
        users.add_user(BOOTSTRAP_USER, role="admin", password_hash=hash_password(password))
    except DefinitionError:
        return None  # another process created it first
    print(
        f"Admin Center: created user {BOOTSTRAP_USER!r} (role admin) with the one-time"
        f" password: {password}\n"
        "Admin Center: it is shown only now; add users with `supervisor users add`.",
        file=out,
        flush=True,
    )
    return password
