"""Whom a path may be trusted by: the checks sudo and ssh make before using a file.

A privileged caller (root running ``sudo supervisor ...``) must never import, execute or
follow anything that a less privileged user can change. A path is trusted by a caller when
the path and every directory above it are owned by the caller or root and are writable by
no one else (no group or world write bit, sticky directories such as /tmp included).
Symlinks are resolved first and every component of the real path is checked.

Only what the caller did not choose is checked: an ``--app`` typed on the command line is
the caller's own choice, an app spec read from a state directory is not.

May import ``core.errors`` and the stdlib. Reads the file system only when asked.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from supervisor.core.errors import UntrustedPath


def owner_name(uid: int) -> str:
    """The user name of ``uid``, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def trusted_uids(caller_uid: int) -> frozenset[int]:
    """Who may own what ``caller_uid`` relies on: the caller and root."""
    return frozenset({caller_uid, 0})


def _problem(st: os.stat_result, trusted: frozenset[int]) -> str | None:
    if st.st_uid not in trusted:
        return f"it is owned by {owner_name(st.st_uid)}"
    if st.st_mode & stat.S_IWOTH:
        return "it is writable by every user"
    if st.st_mode & stat.S_IWGRP:
        return "it is writable by its group"
    return None


def check_path(path: Path | str, *, caller_uid: int, what: str) -> None:
    """Raise ``UntrustedPath`` unless ``path`` and all directories above it are trusted.

    ``what`` says in the message what the path is for ("the app module", ...). A path that
    does not exist is checked from its nearest existing ancestor.
    """
    trusted = trusted_uids(caller_uid)
    real = Path(os.path.realpath(path))
    for component in (real, *real.parents):
        try:
            st = os.stat(component)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise UntrustedPath(
                f"refusing {what} {path}: cannot check {component}: {error.strerror or error}"
            ) from error
        problem = _problem(st, trusted)
        if problem is not None:
            where = "" if component == real else f" (in {component})"
            shown = component if component == real else path
            raise UntrustedPath(f"refusing {what} {shown}{where}: {problem}")


def _module_locations(module: str, search_path: Sequence[str]) -> list[Path]:
    """The files and package directories ``import module`` would use from ``search_path``.

    Found without importing anything: the first entry of ``search_path`` holding the top
    package wins, as for the import system's path finder.
    """
    parts = module.split(".")
    for entry in search_path:
        base = Path(entry or ".").absolute()
        found: list[Path] = []
        directory = base
        for index, part in enumerate(parts):
            package = directory / part
            last = index == len(parts) - 1
            if (package / "__init__.py").is_file():
                found += [package, package / "__init__.py"]
                directory = package
                continue
            if last:
                candidates = [directory / f"{part}.py", *directory.glob(f"{part}.*.so")]
                files = [c for c in candidates if c.is_file()]
                if files:
                    found.append(files[0])
                    return found
                if package.is_dir():  # a namespace package
                    found.append(package)
                    return found
            break
        else:
            return found
        if found:
            return found
    return []


def check_module(module: str, search_path: Sequence[str], *, caller_uid: int) -> None:
    """Raise ``UntrustedPath`` if importing ``module`` from ``search_path`` would run code
    that someone other than the caller or root can change.

    Checks every ``search_path`` entry searched before the module is found (an earlier
    writable directory could shadow it, or any module it imports) and the module's files.
    """
    locations = _module_locations(module, search_path)
    for entry in _entries_up_to(search_path, locations):
        check_path(entry or ".", caller_uid=caller_uid, what="the import path entry")
    for location in locations:
        check_path(location, caller_uid=caller_uid, what=f"the app module {module}")


def _entries_up_to(search_path: Sequence[str], locations: Iterable[Path]) -> list[str]:
    first = next(iter(locations), None)
    entries: list[str] = []
    for entry in search_path:
        entries.append(entry)
        if first is not None and Path(entry or ".").absolute() in first.parents:
            break
    return entries
