"""A throwaway OS user for tests that need a second, unprivileged person on the machine.

Created with ``useradd`` (as root) under a random name and removed again by the test that
made it; tests skip clearly where that is not possible.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a second OS user"
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        return "needs useradd and userdel"
    return None


@contextmanager
def throwaway_user() -> Iterator[OsUser]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"sst{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        yield OsUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def as_user(user: OsUser) -> dict[str, object]:
    """``subprocess`` keyword arguments that run a command as ``user``."""
    return {"user": user.uid, "group": user.gid, "extra_groups": []}
