"""How long a lease lives and how often hosts act on leases (``--lease-ttl``).

A value with no database in it (so the CLI can check ``--lease-ttl`` without psycopg):
``LeaseTiming`` and ``lease_timing``, which derives the renewal and the poll from the ttl
and says what is wrong with a ttl an operator gave. May import ``core``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from supervisor.core.errors import DefinitionError

DEFAULT_TTL_SECONDS = 2.0
# A holder renews five times per ttl (so one or two lost renewals do not lose the lease);
# a contender polls ten times per ttl (a dead session is taken over within a tenth).
RENEWALS_PER_TTL = 5
POLLS_PER_TTL = 10
# Below this a host's polls would load the database (and its watchdog's 50 ms checks
# could not fence in time).
MIN_POLL = timedelta(milliseconds=50)
MAX_TTL_SECONDS = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseTiming:
    """How long a lease lives without renewal, and how often holders and contenders act.

    ``ttl`` bounds takeover after a host stops answering (SIGSTOP, partition); a killed
    host is taken over within ``acquire_every`` (its session ends with it) while
    ``dead_session_takeover`` is on. The price of that shortcut: a host whose connection
    merely broke loses its leases before it can notice (at most one run per slot still
    holds, and its writes are refused, but its run in flight may overlap the new owner's
    next one until it reconnects or its own ttl runs out). Off, only expiry frees a lease.
    """

    ttl: timedelta = timedelta(seconds=DEFAULT_TTL_SECONDS)
    renew_every: timedelta = timedelta(seconds=DEFAULT_TTL_SECONDS / RENEWALS_PER_TTL)
    acquire_every: timedelta = timedelta(seconds=DEFAULT_TTL_SECONDS / POLLS_PER_TTL)
    dead_session_takeover: bool = True

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise DefinitionError("ttl", "must be positive")
        if not timedelta(0) < self.renew_every < self.ttl / 2:
            raise DefinitionError("renew_every", "must be positive and below half the ttl")
        if self.acquire_every <= timedelta(0):
            raise DefinitionError("acquire_every", "must be positive")


def lease_timing(ttl: str | float | None, *, field: str = "--lease-ttl") -> LeaseTiming:
    """The timing of a lease of ``ttl`` seconds (None: the default, 2 s): renewed every
    fifth, polled every tenth of it. ``DefinitionError(field)`` for a ttl that is not a
    number, not above 0, too short for its poll, or above an hour."""
    if ttl is None:
        return LeaseTiming()
    try:
        seconds = float(ttl)
    except ValueError:
        raise DefinitionError(field, f"{ttl!r} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise DefinitionError(field, f"{ttl!r} is not a number of seconds")
    if seconds <= 0:
        raise DefinitionError(field, f"must be more than 0 seconds, not {seconds:g}")
    shortest = MIN_POLL.total_seconds() * POLLS_PER_TTL
    if seconds < shortest:
        raise DefinitionError(
            field,
            f"{seconds:g}s is too short: hosts poll for leases every tenth of it "
            f"({seconds * 1000 / POLLS_PER_TTL:g} ms), and no more often than every "
            f"{MIN_POLL.total_seconds() * 1000:g} ms; give at least {shortest:g}",
        )
    if seconds > MAX_TTL_SECONDS:
        raise DefinitionError(
            field, f"{seconds:g}s is above an hour (a dead host's work would wait that long)"
        )
    ttl_delta = timedelta(seconds=seconds)
    return LeaseTiming(
        ttl=ttl_delta,
        renew_every=ttl_delta / RENEWALS_PER_TTL,
        acquire_every=ttl_delta / POLLS_PER_TTL,
    )
