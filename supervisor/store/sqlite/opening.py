"""Opening ``state.db``: create it atomically, or check that an existing file is ours.

Files the store did not create are never modified: a corrupt file, another program's
SQLite database, an empty file, a schema newer than this code, or an unwritable location
raise ``StoreError`` with a one-line message naming the file, and the file is left as it
was. Connections are opened with ``mode=rw``, so SQLite never creates a file either.

An empty ``state.db`` is refused too. The store never leaves one behind: a new database
is built under a temporary name, synced, and linked into place complete, so a crash
while creating leaves either no ``state.db`` or a complete one (plus, at worst, a
``.state.db.new-PID`` file of the dead process, which the next creation removes). An
empty ``state.db`` is therefore someone else's (``touch``, a copy that failed, a file
system that lost data) and could hide a real problem.

May import ``core.errors``, ``store.sqlite.schema`` and the stdlib.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
from pathlib import Path
from typing import Final

from supervisor.core.errors import StoreError
from supervisor.store.sqlite.schema import (
    APPLICATION_ID,
    BUSY_TIMEOUT_MS,
    JOURNAL_SIZE_LIMIT,
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
    WRITER_CACHE_KIB,
)

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
# The oldest SQLite library the store works with: ending a run is one
# ``UPDATE ... RETURNING`` (3.35). Debian 12 ships 3.40.
MIN_SQLITE: Final = (3, 35, 0)
_HEADER_SIZE: Final = 100


def problem(path: Path, text: str) -> StoreError:
    return StoreError(f"cannot use state database {path}: {text}")


def failure(path: Path, exc: sqlite3.Error) -> StoreError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"state database {path}: {text}")


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the existing file ``path`` (never creating it)."""
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=rw"
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def open_database(path: Path) -> sqlite3.Connection:
    """Check or create the file at ``path`` and return the configured writer connection."""
    check_library(path)
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise problem(path, f"cannot create directory {directory}: {_os_error(exc)}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise problem(path, f"directory {directory} is not writable")
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise problem(path, _os_error(exc)) from None
    if st is None:
        _create_database(path)
    else:
        _check_file(path, st, wal_size=_size_or_zero(Path(f"{path}-wal")))
    try:
        writer = connect(path)
    except sqlite3.Error as exc:
        raise problem(path, " ".join(str(exc).split())) from None
    try:
        _check_and_configure(path, writer)
    except BaseException:
        writer.close()
        raise
    return writer


def check_library(path: Path, version: tuple[int, int, int] | None = None) -> None:
    """Refuse, before anything is written, an SQLite library older than ``MIN_SQLITE``:
    its first run end would fail (a syntax error read as a store that fails, forever)."""
    found = sqlite3.sqlite_version_info if version is None else version
    if found < MIN_SQLITE:
        have = ".".join(map(str, found))
        need = ".".join(map(str, MIN_SQLITE))
        raise problem(path, f"the SQLite library is {have}; the store needs {need} or newer")


def _check_file(path: Path, st: os.stat_result, *, wal_size: int) -> None:
    """Reject, from the bytes of its header alone, a file that is not ours."""
    if not stat.S_ISREG(st.st_mode):
        raise problem(path, "not a regular file")
    if st.st_size == 0 and wal_size == 0:
        raise problem(
            path,
            "the file is empty (0 bytes); sched-supervisor never leaves an empty database,"
            " so it was made by something else: remove it to start with a new database",
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise problem(path, "the file is not readable and writable")
    try:
        with path.open("rb") as file:
            header = file.read(_HEADER_SIZE)
    except OSError as exc:
        raise problem(path, _os_error(exc)) from None
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise problem(path, "not a SQLite database (the file is corrupt or of another kind)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise problem(path, "corrupt SQLite header (invalid page size)")
    application_id = int.from_bytes(header[68:72], "big", signed=True)
    if application_id != APPLICATION_ID:
        if application_id == 0:
            raise problem(
                path, "not a sched-supervisor database (a SQLite file of another program)"
            )
        raise problem(
            path,
            f"not a sched-supervisor database (application_id {application_id:#x}"
            " belongs to another program)",
        )
    _check_version(path, int.from_bytes(header[60:64], "big", signed=True))
    change_counter, pages, valid_for = (
        int.from_bytes(header[24:28], "big"),
        int.from_bytes(header[28:32], "big"),
        int.from_bytes(header[92:96], "big"),
    )
    # A non-empty WAL may legitimately hold pages the main file does not have yet.
    if wal_size == 0 and change_counter == valid_for and st.st_size < pages * page_size:
        raise problem(path, f"the file is truncated ({st.st_size} of {pages * page_size} bytes)")


def _check_version(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise problem(
            path,
            f"written by a newer sched-supervisor (schema version {version}; this version"
            f" reads up to {SCHEMA_VERSION})",
        )
    if version < 0:
        raise problem(path, f"corrupt schema version {version}")


def _check_and_configure(path: Path, conn: sqlite3.Connection) -> None:
    """Check what SQLite sees (WAL included), then migrate and configure. Reads first:
    nothing is written to a file that fails a check."""
    try:
        application_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise problem(path, f"corrupt database ({' '.join(str(exc).split())})") from None
    if application_id != APPLICATION_ID:
        raise problem(path, f"not a sched-supervisor database (application_id {application_id:#x})")
    _check_version(path, version)
    if version >= 1:
        missing = sorted(TABLES - tables)
        if missing:
            raise problem(path, f"damaged database (missing table {missing[0]})")
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise problem(path, f"cannot switch to WAL mode (journal mode is {mode})")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        # Log inserts touch the index all over; a larger cache keeps it in memory.
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated the file
            # while this one waited for the lock (migrating twice fails: a duplicate column).
            version = conn.execute("PRAGMA user_version").fetchall()[0][0]
            _check_version(path, version)
            if version < SCHEMA_VERSION:
                _migrate(conn, version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise problem(path, " ".join(str(exc).split())) from None


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database from ``version`` to ``SCHEMA_VERSION`` (inside a transaction)."""
    for steps in MIGRATIONS[version:]:
        for statement in steps:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create_database(path: Path) -> None:
    """Build a new database beside ``path`` and link it into place in one step, so
    ``path`` is either absent or a complete database with our header."""
    temporary = path.with_name(f".{path.name}.new-{os.getpid()}")
    _remove_leftovers(path)
    try:
        temporary.unlink(missing_ok=True)
        # Created by us so the database (and its -wal/-shm) is private: it holds users.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for steps in MIGRATIONS:
                for statement in steps:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # never replaces a file created meanwhile
        except FileExistsError:
            pass  # created meanwhile by another process: that one is checked
        except OSError:
            # A file system without hard links: rename, still never over another file.
            if not path.exists():
                os.rename(temporary, path)
        temporary.unlink(missing_ok=True)
        _fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise problem(path, f"cannot create the database: {_os_error(exc)}") from None
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise problem(path, f"cannot create the database: {exc}") from None


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary files of creations whose process died before finishing."""
    for leftover in path.parent.glob(f".{path.name}.new-*"):
        pid_text = leftover.name.rpartition("-")[2]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                leftover.unlink()
        except OSError:
            pass  # alive (or not ours to ask): leave it


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)
