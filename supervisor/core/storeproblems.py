"""What can be wrong with a store, read from the errors its calls raise.

``StoreProblem`` names it (a full disk, a read-only file, a lock held too long, a corrupt
file, an I/O error, a server that does not answer); ``classify`` reads it from an error's
own codes (``sqlite3.Error.sqlite_errorname``, an ``OSError``'s errno), following the
chain of causes a ``StoreError`` keeps, never from message text. ``Backlog`` is what a
writer keeps in memory for the store meanwhile, and drops past its bound. ``LockFailure``
is why a PostgreSQL store's manager lock could not be taken, last (its kind, when, the
driver's or server's words): the store's health reads it as it is, never out of a message.
Imports nothing from the package.
"""

from __future__ import annotations

import enum
import errno
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Final


class StoreProblem(enum.StrEnum):
    """What is wrong with the store (the ``state`` of ``list``/``status --json``'s ``store``)."""

    UNREACHABLE = "unreachable"  # the PostgreSQL server does not answer
    DISK_FULL = "disk_full"  # no space left for the SQLite file or its journal
    READ_ONLY = "read_only"  # the file or its directory cannot be written
    LOCKED = "locked"  # another process holds the database's lock past the busy timeout
    CORRUPT = "corrupt"  # the file is damaged or no database
    IO_ERROR = "io_error"  # the disk fails to read or write
    WRITE_FAILED = "write_failed"  # writes fail for another reason

    @property
    def words(self) -> str:
        """How the store's line starts: ``disk full since …``."""
        return _WORDS[self]


_WORDS: dict[StoreProblem, str] = {
    StoreProblem.UNREACHABLE: "unreachable",
    StoreProblem.DISK_FULL: "disk full",
    StoreProblem.READ_ONLY: "read-only",
    StoreProblem.LOCKED: "locked by another process",
    StoreProblem.CORRUPT: "corrupt",
    StoreProblem.IO_ERROR: "I/O error",
    StoreProblem.WRITE_FAILED: "writes failing",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Backlog:
    """What the manager could not store yet: log records kept in memory to be written once
    the store takes writes again, and those dropped (counted, marked in their runs' logs)
    because the memory bound was passed, since the outage began."""

    kept_records: int = 0
    dropped_records: int = 0

    def __post_init__(self) -> None:
        if self.kept_records < 0 or self.dropped_records < 0:
            raise ValueError("backlog counts must not be negative")

    @property
    def empty(self) -> bool:
        return self.kept_records == 0

    @property
    def text(self) -> str:
        """``; 120 log record(s) kept to store, 3 dropped`` (empty when there are none)."""
        if not self.kept_records and not self.dropped_records:
            return ""
        return (
            f"; {self.kept_records} log record(s) kept to store,"
            f" {self.dropped_records} dropped (counted in their runs' logs)"
        )


class LockFailureKind(enum.StrEnum):
    """Why the manager lock of a PostgreSQL store could not be taken."""

    CONNECT = "connect"  # no connection to the server could be opened
    NO_ANSWER = "no_answer"  # connected, but the lock's statements got no answer in time
    QUERY = "query"  # the lock's statements failed (an error, a connection cut meanwhile)
    HELD_ELSEWHERE = "held_elsewhere"  # another manager holds the lock


@dataclass(frozen=True, slots=True, kw_only=True)
class LockFailure:
    """The last failure to take a store's manager lock: its kind, when (aware), and the
    driver's or server's own words on one line (``connection failed: …``)."""

    kind: LockFailureKind
    at: datetime
    message: str

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("at must be an aware datetime")
        if not self.message or self.message != " ".join(self.message.split()):
            raise ValueError("message must be one line of words, not empty")

    @property
    def reason(self) -> str:
        """Why the store is unreachable, as its health shows it (one line)."""
        if self.kind is LockFailureKind.HELD_ELSEWHERE:
            return self.message
        return f"cannot take the manager lock: {self.message}"


# Input the store refuses (a run stored twice, a value too big) says nothing of its health.
_NOT_HEALTH: Final = ("SQLITE_CONSTRAINT", "SQLITE_MISMATCH", "SQLITE_RANGE", "SQLITE_TOOBIG")
_BY_SQLITE_CODE: Final = (
    ("SQLITE_FULL", StoreProblem.DISK_FULL),
    ("SQLITE_READONLY", StoreProblem.READ_ONLY),
    ("SQLITE_PERM", StoreProblem.READ_ONLY),
    ("SQLITE_BUSY", StoreProblem.LOCKED),
    ("SQLITE_LOCKED", StoreProblem.LOCKED),
    ("SQLITE_CORRUPT", StoreProblem.CORRUPT),
    ("SQLITE_NOTADB", StoreProblem.CORRUPT),
    ("SQLITE_IOERR", StoreProblem.IO_ERROR),
    ("SQLITE_CANTOPEN", StoreProblem.IO_ERROR),
)
_BY_ERRNO: Final = {
    errno.ENOSPC: StoreProblem.DISK_FULL,
    errno.EDQUOT: StoreProblem.DISK_FULL,
    errno.EFBIG: StoreProblem.DISK_FULL,
    errno.EROFS: StoreProblem.READ_ONLY,
    errno.EACCES: StoreProblem.READ_ONLY,
    errno.EPERM: StoreProblem.READ_ONLY,
    errno.EIO: StoreProblem.IO_ERROR,
}


def classify(error: BaseException) -> StoreProblem | None:
    """What ``error`` (or an error it was raised from) says is wrong with the store; None
    for an error that says nothing of the store's health."""
    # sqlite3 is looked up, not imported: the CLI shows a store's trouble without loading
    # it, and an error of that module cannot exist before it is loaded.
    sqlite3 = sys.modules.get("sqlite3")
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if sqlite3 is not None and isinstance(current, sqlite3.Error):
            name = getattr(current, "sqlite_errorname", None) or ""
            if not name:  # misuse of the module (a ProgrammingError): no store problem
                return None
            if any(name == code or name.startswith(code + "_") for code in _NOT_HEALTH):
                return None
            for prefix, problem in _BY_SQLITE_CODE:
                if name == prefix or name.startswith(prefix + "_"):
                    return problem
            return StoreProblem.WRITE_FAILED
        if isinstance(current, OSError) and current.errno in _BY_ERRNO:
            return _BY_ERRNO[current.errno]
        current = current.__cause__ or current.__context__
    return None


def reason_of(error: BaseException) -> str:
    """The error's own words on one line (the ``StoreError`` names the file)."""
    return " ".join(str(error).split()) or type(error).__name__
