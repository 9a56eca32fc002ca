"""Server-side login sessions and the slowing-down of failed logins.

Sessions live in the memory of the process that serves the Admin Center: the cookie
carries only a random token, the server keeps a SHA-256 of it (so a memory dump or a
timing side channel on the dict lookup does not hand out live tokens). A restart of the
server logs everyone out, which is the safe default and keeps the store's schema (whose
table set the store checks) free of web concerns.

May import the stdlib only.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
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


@dataclass(slots=True, kw_only=True)
class Session:
    """One browser's session; mutable, owned and guarded by ``SessionStore``.

    ``user`` is None for the anonymous session that carries the login form's CSRF token.
    """

    key: str
    user: str | None
    csrf: str
    created: float
    last_seen: float
    via_proxy: bool = False
    flashes: list[Flash] = field(default_factory=list)
    streams: int = 0


class SessionStore:
    """Sessions by token, expiring after ``idle_seconds`` unused or ``lifetime_seconds``.

    Thread-safe. Holds at most ``max_sessions``; beyond that the least recently used one
    is dropped (anonymous ones first, so a flood of login-page loads cannot log users out).
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

    def create(self, user: str | None, *, via_proxy: bool = False) -> tuple[str, Session]:
        """A new session with a fresh token and CSRF token; returns (token, session)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._now()
        session = Session(
            key=_digest(token),
            user=user,
            csrf=secrets.token_urlsafe(TOKEN_BYTES),
            created=now,
            last_seen=now,
            via_proxy=via_proxy,
        )
        with self._lock:
            self._sessions[session.key] = session
            self._evict(now)
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token`` (touching it), or None if unknown or expired."""
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
            self._sessions.move_to_end(key)
            return session

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still valid (not ended, not expired); does not touch it."""
        with self._lock:
            current = self._sessions.get(session.key)
            return current is session and not self._expired(session, self._now())

    def end(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.key, None)

    def end_user(self, user: str) -> int:
        """End every session of ``user`` (removed or demoted); how many were ended."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.user == user]
            for key in keys:
                del self._sessions[key]
            return len(keys)

    def flash(self, session: Session, message: Flash) -> None:
        with self._lock:
            session.flashes.append(message)
            del session.flashes[:-5]

    def pop_flashes(self, session: Session) -> list[Flash]:
        with self._lock:
            out, session.flashes = session.flashes, []
            return out

    def open_stream(self, session: Session, *, limit: int) -> bool:
        """Count an event stream against ``session``; False if it already has ``limit``."""
        with self._lock:
            if session.streams >= limit:
                return False
            session.streams += 1
            return True

    def close_stream(self, session: Session) -> None:
        with self._lock:
            session.streams = max(0, session.streams - 1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self._idle or now - session.created > self._lifetime

    def _evict(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
        while len(self._sessions) > self._max:
            victim = next((k for k, s in self._sessions.items() if s.user is None), None)
            if victim is None:
                victim = next(iter(self._sessions))
            del self._sessions[victim]


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """Slows down password guessing, per user name and per client address.

    Every failure costs ``failure_delay`` (spent by the caller, so a guesser waits for
    each answer). Once a key has ``n >= free_attempts`` failures, its next attempt is
    refused unchecked until ``base_wait * 2**(n - free_attempts)`` seconds (capped at
    ``max_wait``) have passed since the last failure. Counters are forgotten
    ``forget_after`` seconds after the last failure and on a successful login.
    """

    def __init__(
        self,
        *,
        free_attempts: int = 3,
        base_wait: float = 1.0,
        max_wait: float = 300.0,
        forget_after: float = 900.0,
        failure_delay: float = 0.5,
        max_keys: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free_attempts
        self._base = base_wait
        self._max_wait = max_wait
        self._forget = forget_after
        self.failure_delay = failure_delay
        self._max_keys = max_keys
        self._now = monotonic
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    @staticmethod
    def keys(user: str, address: str) -> tuple[str, str]:
        return (f"user:{user.casefold()}", f"addr:{address}")

    def wait_needed(self, user: str, address: str) -> float:
        """Seconds until an attempt for (user, address) is allowed; 0 if it is now."""
        now = self._now()
        with self._lock:
            return max(self._wait_for(key, now) for key in self.keys(user, address))

    def failed(self, user: str, address: str) -> None:
        now = self._now()
        with self._lock:
            for key in self.keys(user, address):
                entry = self._failures.pop(key, None)
                if entry is None or now - entry.last > self._forget:
                    entry = _Failures(0, now)
                entry.count += 1
                entry.last = now
                self._failures[key] = entry
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            for key in self.keys(user, address):
                self._failures.pop(key, None)

    def _wait_for(self, key: str, now: float) -> float:
        entry = self._failures.get(key)
        if entry is None or entry.count < self._free or now - entry.last > self._forget:
            return 0.0
        wait = min(self._max_wait, self._base * 2.0 ** (entry.count - self._free))
        return max(0.0, entry.last + wait - now)
