"""Handlers for the overview (a card per scheduler) and the static files.

A card's HTML is rendered again only when its scheduler's status changed, and the
statuses themselves are read at most every ``SNAPSHOT_SECONDS`` (and again after any
change made through the Admin Center): concurrent readers of the overview of a thousand
schedulers share one reading instead of each taking its own. A change made elsewhere (a
run ending) shows up at most that much later; the live updates send it anyway.
May import ``records``, ``supervisor.web.*`` below the app, markupsafe and the stdlib.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from supervisor.core.access import Subject
from supervisor.core.records import SchedulerStatus, State
from supervisor.web.render import render, scheduler_url
from supervisor.web.replies import Refused, reply
from supervisor.web.site import Request, Site, subject_of

SNAPSHOT_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class _Snapshot:
    at: float
    version: int
    statuses: list[SchedulerStatus]
    counts: Counter[State]
    cards: Markup


class CardCache:
    """The last card rendered for each scheduler, with the status it showed, and the last
    joined list of cards (reused while no status changed: one string, not 1,000)."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self._cards: dict[str, tuple[SchedulerStatus, Markup]] = {}
        self._joined: tuple[list[Markup], Markup] | None = None
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # one reading of the statuses at a time
        self._icons = f"/static/icons.svg?v={site.assets['icons.svg'].version}"

    def snapshot(self, subject: Subject) -> _Snapshot:
        """The statuses, their counts and their cards, read afresh when too old."""
        with self._reading:
            now = time.monotonic()
            with self._lock:
                found = self._snapshot
            version = self._site.version
            if (
                found is not None
                and found.version == version
                and now - found.at <= SNAPSHOT_SECONDS
            ):
                return found
            statuses = self._site.use_cases.list(subject)
            made = _Snapshot(
                at=now,
                version=version,
                statuses=statuses,
                counts=Counter(s.state for s in statuses),
                cards=self.all(statuses),
            )
            with self._lock:
                self._snapshot = made
            return made

    def all(self, statuses: list[SchedulerStatus]) -> Markup:
        cards = [self.card(status) for status in statuses]
        with self._lock:
            joined = self._joined
        if (
            joined is not None
            and len(joined[0]) == len(cards)
            and all(a is b for a, b in zip(joined[0], cards, strict=True))
        ):
            return joined[1]
        html = Markup("").join(cards)
        with self._lock:
            self._joined = (cards, html)
        return html

    def card(self, status: SchedulerStatus) -> Markup:
        with self._lock:
            cached = self._cards.get(status.id)
        if cached is not None and cached[0] == status:
            return cached[1]
        html = Markup(  # noqa: S704 - the output of an autoescaping template
            render(
                self._site.env,
                "card.html",
                {"s": status, "href": scheduler_url(status.id), "icons": self._icons},
            )
        )
        with self._lock:
            self._cards[status.id] = (status, html)
        return html


def overview(site: Site, request: Request, *, cards: CardCache) -> Any:
    # the guard checked the LIST permission; every subject with it sees every scheduler
    found = cards.snapshot(subject_of(request))
    return site.page(
        request,
        "overview.html",
        statuses=found.statuses,
        counts=found.counts,
        cards=found.cards,
    )


def static(site: Site, _request: Request, name: str) -> Any:
    asset = site.assets.get(name)
    if asset is None:
        raise Refused(404, "no such file")
    response = reply(asset.body, 200, content_type=asset.content_type)
    response.set_header("Cache-Control", "public, max-age=31536000, immutable")
    return response
