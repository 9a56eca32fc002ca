"""Server-side login sessions.

Sessions live in the memory of the process that serves the Admin Center: the cookie
carries only a random token, the server keeps a SHA-256 of it (so a memory dump or a
timing side channel on the dict lookup does not hand out live tokens). A restart of the
server logs everyone out, which is the safe default and keeps the store's schema (whose
table set the store checks) free of web concerns.

The store stays the truth about whether a session may go on: each session keeps the
credentials stamp its user had when it was made (``store.protocols.StoredUser.stamp``),
and the guard refuses it once the stored stamp differs (a new password or a disable,
made here, by ``supervisor users`` or on another host). ``end_user`` ends a user's
sessions here at once (their open streams stop) but keeps them, marked ``ended``, until
their next request, which is then told why rather than treated as an unknown cookie.

May import the stdlib only.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

TOKEN_BYTES = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Flash:
    """A one-time message shown on the next page (result of a POST that redirected)."""

    kind: str  # "ok", "error" or "info"
    title: str
    text: str = ""
    link: str = ""  # a path on this site to follow up (e.g. the running run's live log)
    link_text: str = ""


@dataclass(slots=True, kw_only=True)
class Session:
    """One browser's session; mutable, owned and guarded by ``SessionStore``.

    ``user`` is None for the anonymous session that carries the login form's CSRF token.
    ``stamp``: the user's credentials stamp when it was made; ``ended``: ended by
    ``end_user``, refused at its next request.
    """

    key: str
    user: str | None
    csrf: str
    created: float
    last_seen: float
    stamp: str = ""
    ended: bool = False
    via_proxy: bool = False
    must_change_password: bool = False
    returned: bool = False  # its cookie came back (a client that keeps cookies)
    flashes: list[Flash] = field(default_factory=list)


class SessionStore:
    """Sessions by token, expiring after ``idle_seconds`` unused or ``lifetime_seconds``.

    Thread-safe. Holds at most ``max_sessions``; beyond that the least recently used one
    is dropped (anonymous ones and those a proxy's header made for a client that never sent
    the cookie back first, so a flood of login-page loads or of cookie-less requests through
    the proxy cannot log users out).
    """

    def __init__(
        self,
        *,
        idle_seconds: float = 3600.0,
        lifetime_seconds: float = 12 * 3600.0,
        max_sessions: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle_seconds
        self._lifetime = lifetime_seconds
        self._max = max_sessions
        self._now = monotonic
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @property
    def idle_seconds(self) -> float:
        return self._idle

    def create(
        self,
        user: str | None,
        *,
        stamp: str = "",
        via_proxy: bool = False,
        must_change_password: bool = False,
    ) -> tuple[str, Session]:
        """A new session with a fresh token and CSRF token; returns (token, session).

        ``stamp``: the user's credentials stamp as read when they logged in.
        ``must_change_password``: the session may only change its password (a temporary
        one was used to log in) until ``password_changed``.
        """
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._now()
        session = Session(
            key=_digest(token),
            user=user,
            csrf=secrets.token_urlsafe(TOKEN_BYTES),
            created=now,
            last_seen=now,
            stamp=stamp,
            via_proxy=via_proxy,
            must_change_password=must_change_password,
        )
        with self._lock:
            self._sessions[session.key] = session
            self._evict(now)
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The session for ``token`` (touching it), or None if unknown or expired; one
        ``end_user`` ended comes back ``ended`` (the caller refuses it, saying why)."""
        if not token:
            return None
        key = _digest(token)
        now = self._now()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[key]
                return None
            session.last_seen = now
            session.returned = True
            self._sessions.move_to_end(key)
            return session

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still valid (not ended, not expired); does not touch it."""
        with self._lock:
            current = self._sessions.get(session.key)
            return (
                current is session and not session.ended and not self._expired(session, self._now())
            )

    def end(self, session: Session) -> bool:
        """End ``session``; whether this call ended it (False: it was gone already, ended
        by a request of the same session at the same time, or expired). Of several
        requests of one session ending it at once, exactly one gets True: the one that
        tells (e.g. writes the audit trail's ``session ended``)."""
        with self._lock:
            if self._sessions.get(session.key) is not session:
                return False
            del self._sessions[session.key]
            return True

    def end_user(self, user: str) -> int:
        """End every session of ``user`` here (a new password, disabled, removed): each is
        no longer ``alive`` and comes back ``ended`` at its next request (kept until then,
        or until it expires); how many were ended."""
        with self._lock:
            ended = [s for s in self._sessions.values() if s.user == user and not s.ended]
            for session in ended:
                session.ended = True
            return len(ended)

    def flash(self, session: Session, message: Flash) -> None:
        with self._lock:
            session.flashes.append(message)
            del session.flashes[:-5]

    def pop_flashes(self, session: Session) -> list[Flash]:
        with self._lock:
            out, session.flashes = session.flashes, []
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self._idle or now - session.created > self._lifetime

    def _evict(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
        while len(self._sessions) > self._max:
            victim = next((k for k, s in self._sessions.items() if _spare(s)), None)
            if victim is None:
                victim = next(iter(self._sessions))
            del self._sessions[victim]


def _spare(session: Session) -> bool:
    """Whether ``session`` goes first when there are too many: anonymous, or made by a
    proxy's header for a client that never sent its cookie back (curl, a scraper), or
    ended and waiting only to say so."""
    return session.user is None or session.ended or (session.via_proxy and not session.returned)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login attempt that may check its password (already counted as a failure)."""

    key: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Throttled:
    """A login attempt refused before its password was checked; retry after ``wait``.

    ``first``: the first refusal of this pair since its last counted attempt (so a flood
    of refused attempts is noted once, not once each).
    """

    wait: float
    first: bool = True


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    refused: bool = False  # refused unchecked since the last counted attempt


class LoginThrottle:
    """Slows down password guessing per (user name, client address), counted before checks.

    ``begin`` counts an attempt as a failure *before* its password is checked (so 40
    parallel tries get ``free_attempts`` checks, not 40) and ``succeeded`` forgets the pair.
    Once a pair has ``n >= free_attempts`` failures, its attempts are refused unchecked
    until ``base_wait * 2**(n - free_attempts)`` seconds (capped at ``max_wait``) have
    passed since the last one. Other names from the same address are not affected (every
    user of an ``ssh -L`` tunnel comes from 127.0.0.1).

    The global cap never refuses a correct password of a pair that has not failed: when
    more than ``global_failures`` failures happened within ``global_window`` seconds,
    pairs that have failed before are refused unchecked until the window has room again,
    while fresh pairs are still checked. At most ``max_parallel_checks`` passwords are
    hashed at once (scrypt takes 128 MiB each); ``checking`` waits for a turn, and at most
    ``max_waiting_checks`` attempts wait (the others are answered busy, not wrong).
    Counters are forgotten ``forget_after`` seconds after the last failure.
    """

    def __init__(
        self,
        *,
        free_attempts: int = 3,
        base_wait: float = 1.0,
        max_wait: float = 300.0,
        forget_after: float = 900.0,
        failure_delay: float = 0.5,
        global_failures: int = 100,
        global_window: float = 60.0,
        max_parallel_checks: int = 2,
        max_waiting_checks: int = 16,
        check_wait: float = 30.0,
        max_keys: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free_attempts
        self._base = base_wait
        self._max_wait = max_wait
        self._forget = forget_after
        self.failure_delay = failure_delay
        self._global_failures = global_failures
        self._global_window = global_window
        self._recent: deque[float] = deque()
        self._checks = threading.BoundedSemaphore(max_parallel_checks)
        self._max_waiting = max_waiting_checks
        self._waiting = 0
        self._check_wait = check_wait
        self._max_keys = max_keys
        self._now = monotonic
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    @staticmethod
    def key(user: str, address: str) -> tuple[str, str]:
        return (user.casefold(), address)

    def begin(self, user: str, address: str) -> Attempt | Throttled:
        """Count an attempt of (user, address) in, or refuse it unchecked."""
        key = self.key(user, address)
        now = self._now()
        with self._lock:
            self._trim(now)
            entry = self._failures.get(key)
            if entry is not None and now - entry.last > self._forget:
                entry = None
            wait = self._wait_for(entry, now)
            if wait == 0 and entry is not None and len(self._recent) >= self._global_failures:
                wait = max(0.001, self._recent[0] + self._global_window - now)
            if wait > 0:
                first = entry is None or not entry.refused
                if entry is not None:
                    entry.refused = True
                return Throttled(wait, first=first)
            self._failures.pop(key, None)
            if entry is None:
                entry = _Failures(0, now)
            entry.count += 1
            entry.last = now
            entry.refused = False
            self._failures[key] = entry
            self._recent.append(now)  # counted as failed until it succeeds
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)
            return Attempt(key)

    @contextlib.contextmanager
    def checking(self) -> Iterator[bool]:
        """Hold one of the parallel password checks; yields False if none came in time,
        or at once when ``max_waiting_checks`` already wait (a flood of logins must not
        hold every server thread: the caller answers "busy, try again")."""
        with self._lock:
            full = self._waiting >= self._max_waiting
            if not full:
                self._waiting += 1
        if full:
            yield False
            return
        try:
            got = self._checks.acquire(timeout=self._check_wait)
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            yield got
        finally:
            if got:
                self._checks.release()

    @property
    def waiting(self) -> int:
        """Attempts waiting for a turn to check their password."""
        with self._lock:
            return self._waiting

    def failed(self, attempt: Attempt) -> None:
        now = self._now()
        with self._lock:
            entry = self._failures.get(attempt.key)
            if entry is not None:
                entry.last = max(entry.last, now)

    def succeeded(self, attempt: Attempt) -> None:
        with self._lock:
            self._failures.pop(attempt.key, None)
            with contextlib.suppress(ValueError):
                self._recent.pop()  # not a failure after all (any one of the window)

    def wait_needed(self, user: str, address: str) -> float:
        """Seconds until an attempt for (user, address) is checked again; 0 if now."""
        now = self._now()
        with self._lock:
            entry = self._failures.get(self.key(user, address))
            if entry is not None and now - entry.last > self._forget:
                return 0.0
            return self._wait_for(entry, now)

    def _wait_for(self, entry: _Failures | None, now: float) -> float:
        if entry is None or entry.count < self._free:
            return 0.0
        wait = min(self._max_wait, self._base * 2.0 ** (entry.count - self._free))
        return max(0.0, entry.last + wait - now)

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self._global_window:
            self._recent.popleft()
