"""Password hashing for Admin Center users: ``hashlib.scrypt`` with a random salt.

A stored hash reads ``scrypt$N$r$p$salt$digest`` (base64 salt and digest), with a seventh
field ``temporary`` for a password that must be changed at its first use (the bootstrap
admin's, or one that ``users add`` generated). ``needs_rehash`` says when a stored hash is
cheaper than the current cost, so a login can store a fresh one.
May import ``errors`` and the stdlib only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from supervisor.core.errors import DefinitionError

_SCHEME = "scrypt"
_TEMPORARY = "temporary"
MIN_LENGTH = 12
MAX_LENGTH = 1024  # scrypt reads the whole password; nobody types more


@dataclass(frozen=True, slots=True, kw_only=True)
class ScryptCost:
    """scrypt's cost parameters; the default is OWASP's minimum (N=2**17, r=8, p=1)."""

    n: int = 1 << 17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or self.r < 1 or self.p < 1:
            raise ValueError(f"invalid scrypt cost n={self.n} r={self.r} p={self.p}")

    @property
    def memory(self) -> int:
        """Bytes scrypt needs (128 * r * N, plus room for the block buffers)."""
        return 128 * self.r * self.n * self.p + 128 * self.r * (self.p + 2) + (1 << 20)

    def at_least(self, other: ScryptCost) -> bool:
        return self.n >= other.n and self.r >= other.r and self.p >= other.p


CURRENT_COST = ScryptCost()
# Hashes cost about 128 MiB each: only so many may be computed at once (see LoginThrottle).
_MAX_N = 1 << 22


def check_new_password(password: str) -> None:
    """Raise ``DefinitionError('password', ...)`` unless ``password`` may be chosen."""
    if len(password) < MIN_LENGTH:
        raise DefinitionError("password", f"must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise DefinitionError("password", f"must have at most {MAX_LENGTH} characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in password):
        raise DefinitionError("password", "must be valid text (no lone surrogates)")


def _encode(password: str) -> bytes:
    return password.encode("utf-8", errors="surrogatepass")


def hash_password(
    password: str, *, cost: ScryptCost = CURRENT_COST, temporary: bool = False
) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        _encode(password),
        salt=salt,
        n=cost.n,
        r=cost.r,
        p=cost.p,
        maxmem=cost.memory,
        dklen=32,
    )
    encoded = [base64.b64encode(x).decode() for x in (salt, digest)]
    fields = [_SCHEME, str(cost.n), str(cost.r), str(cost.p), *encoded]
    if temporary:
        fields.append(_TEMPORARY)
    return "$".join(fields)


def _parse(stored: str) -> tuple[ScryptCost, bytes, bytes, bool] | None:
    parts = stored.split("$")
    if len(parts) not in (6, 7) or parts[0] != _SCHEME:
        return None
    if len(parts) == 7 and parts[6] != _TEMPORARY:
        return None
    try:
        cost = ScryptCost(n=int(parts[1]), r=int(parts[2]), p=int(parts[3]))
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return None
    if cost.n > _MAX_N or cost.r > 64 or cost.p > 16 or not digest:
        return None  # a planted hash must not make a check eat the machine
    return cost, salt, digest, len(parts) == 7


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for a wrong one or a malformed hash."""
    parsed = _parse(stored)
    if parsed is None or len(password) > MAX_LENGTH:
        return False
    cost, salt, expected, _temporary = parsed
    try:
        actual = hashlib.scrypt(
            _encode(password),
            salt=salt,
            n=cost.n,
            r=cost.r,
            p=cost.p,
            maxmem=cost.memory,
            dklen=len(expected),
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str, *, cost: ScryptCost = CURRENT_COST) -> bool:
    """Whether ``stored`` was made with a lower cost than ``cost`` (or cannot be read)."""
    parsed = _parse(stored)
    return parsed is None or not parsed[0].at_least(cost)


def is_temporary(stored: str) -> bool:
    """Whether ``stored`` is a one-time password that must be changed at first login."""
    parsed = _parse(stored)
    return parsed is not None and parsed[3]


def generate_password() -> str:
    return secrets.token_urlsafe(18)
