"""Handlers for the overview (a card per scheduler) and the static files.

A card's HTML is rendered again only when its scheduler's status changed, so the
overview of a thousand schedulers costs little more than their statuses.
May import ``records``, ``supervisor.web.*`` below the app, markupsafe and the stdlib.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from markupsafe import Markup

from supervisor.core.records import SchedulerStatus
from supervisor.web.render import render, scheduler_url
from supervisor.web.replies import Refused, reply
from supervisor.web.site import Request, Site, subject_of


class CardCache:
    """The last card rendered for each scheduler, with the status it showed, and the last
    joined list of cards (reused while no status changed: one string, not 1,000)."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self._cards: dict[str, tuple[SchedulerStatus, Markup]] = {}
        self._joined: tuple[list[Markup], Markup] | None = None
        self._lock = threading.Lock()
        self._icons = f"/static/icons.svg?v={site.assets['icons.svg'].version}"

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
    statuses = site.use_cases.list(subject_of(request))
    counts = Counter(s.state for s in statuses)
    return site.page(
        request, "overview.html", statuses=statuses, counts=counts, cards=cards.all(statuses)
    )


def static(site: Site, _request: Request, name: str) -> Any:
    asset = site.assets.get(name)
    if asset is None:
        raise Refused(404, "no such file")
    response = reply(asset.body, 200, content_type=asset.content_type)
    response.set_header("Cache-Control", "public, max-age=31536000, immutable")
    return response
