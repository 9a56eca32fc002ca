"""Handlers for the overview (a card per scheduler) and the static files.

A card's HTML is rendered again only when its scheduler's status changed, and the
statuses themselves are read again only when the backend's status version moved (or a
change was made through the Admin Center, or the minute turned); a backend without a
version is read at most every ``SNAPSHOT_SECONDS``. Concurrent readers of the overview of
a thousand schedulers share one reading and one rendered page (``pagecache``).

Each card shows its health (``web.health``) with a strip of its newest outcomes. The runs
are kept per scheduler and read again only for the schedulers whose last start or end
moved since, all of them in one call (``UseCases.recent_runs``), never one per card.
Failing cards come first; ``?filter=failing`` keeps only them, ``?outcome=`` only those
whose last run ended so, and ``?q=`` only those whose search text (name, ID, state, kind,
last outcome, "failing") holds every word: the same text the page's script filters on.
``?cards=ID,ID`` answers only those cards (what the live updates fetch to redraw a card).
A kept page is rendered anew when the store's outage (the banner every page shows, from
``Site.common``) begins, ends or has lasted another second.
May import ``access``, ``records``, ``supervisor.web.*`` below the app, markupsafe and the
stdlib.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup

from supervisor.core.access import Permission, Subject
from supervisor.core.errors import SupervisorError
from supervisor.core.records import Outcome, RunRecord, SchedulerStatus, State
from supervisor.web.health import STRIP_RUNS, Health, health_of
from supervisor.web.pagecache import PageCache
from supervisor.web.present import OUTCOME_WORDS, runs_a_command
from supervisor.web.render import render, scheduler_url
from supervisor.web.replies import Refused, reply, short_text
from supervisor.web.site import Request, Site, subject_of

SNAPSHOT_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class _Snapshot:
    at: float
    # the Admin Center's, the backend's, the minute, and the store's outage (as of the
    # second: the page's banner says how long it has lasted)
    version: tuple[int, int | None, int, object]
    with_runs: bool
    statuses: list[SchedulerStatus]  # failing ones first
    health: dict[str, Health]
    counts: Counter[State]
    failing: int
    cards: list[Markup]  # in the order of ``statuses``
    joined: Markup


class CardCache:
    """The last card rendered for each scheduler, with the status it showed, and the last
    joined list of cards (reused while no status changed: one string, not 1,000)."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self._cards: dict[str, tuple[SchedulerStatus, Health, Markup]] = {}
        self._joined: tuple[list[Markup], Markup] | None = None
        self._snapshot: _Snapshot | None = None
        self._ranks: dict[str, int] | None = None
        # per scheduler: what its status said of its runs when read, and those runs
        self._runs: dict[str, tuple[tuple[object, ...], tuple[RunRecord, ...]]] = {}
        # per scheduler: the health last worked out, from which status, runs and minute
        self._health: dict[str, tuple[SchedulerStatus, tuple[RunRecord, ...], int, Health]] = {}
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # one reading of the statuses at a time
        self._icons = f"/static/icons.svg?v={site.assets['icons.svg'].version}"
        self.pages = PageCache()

    def snapshot(self, subject: Subject) -> _Snapshot:
        """The statuses, their counts and their cards, read afresh when too old."""
        with_runs = subject.can(Permission.STATUS)
        with self._reading:
            now = time.monotonic()
            with self._lock:
                found = self._snapshot
            use_cases = self._site.use_cases
            wall = self._site.clock.now()
            minute = int(wall.timestamp() // 60)
            outage = use_cases.store_health(subject)
            store = None if outage is None else outage.text
            version = (self._site.version, use_cases.status_version(subject), minute, store)
            if (
                found is not None
                and found.version == version
                and found.with_runs == with_runs
                and (version[1] is not None or now - found.at <= SNAPSHOT_SECONDS)
            ):
                return found
            listed = use_cases.list(subject)
            recent = self._recent_runs(subject, listed) if with_runs else {}
            health = {s.id: self._health_of(s, recent.get(s.id, ()), wall) for s in listed}
            # Failing first, then definition order: what the page's script keeps live.
            rank = self.ranks()
            statuses = sorted(listed, key=lambda s: (not health[s.id].failing, rank.get(s.id, 0)))
            cards = [self.card(s, health[s.id]) for s in statuses]
            made = _Snapshot(
                at=now,
                version=version,
                with_runs=with_runs,
                statuses=statuses,
                health=health,
                counts=Counter(s.state for s in statuses),
                failing=sum(h.failing for h in health.values()),
                cards=cards,
                joined=self.all(cards),
            )
            with self._lock:
                self._snapshot = made
            return made

    def _recent_runs(
        self, subject: Subject, statuses: list[SchedulerStatus]
    ) -> dict[str, tuple[RunRecord, ...]]:
        """The newest runs of each scheduler: those whose runs moved read in one call."""
        keys = {s.id: _runs_key(s) for s in statuses}
        known = self._runs
        stale = [sid for sid, key in keys.items() if sid not in known or known[sid][0] != key]
        if stale:
            fresh = self._site.use_cases.recent_runs(subject, stale, limit=STRIP_RUNS)
            for sid in stale:
                known[sid] = (keys[sid], tuple(fresh.get(sid, ())))
        if len(known) > len(keys):  # schedulers gone: forget them
            for sid in [sid for sid in known if sid not in keys]:
                del known[sid]
                self._health.pop(sid, None)
        return {sid: known[sid][1] for sid in keys}

    def _health_of(
        self, status: SchedulerStatus, runs: tuple[RunRecord, ...], wall: datetime
    ) -> Health:
        """``health_of``, worked out again only when its inputs moved (or a minute did:
        "last success 3 min ago" is read to the minute)."""
        minute = int(wall.timestamp() // 60)
        known = self._health.get(status.id)
        if known is not None and known[1] is runs and known[2] == minute and known[0] == status:
            return known[3]
        found = health_of(status, runs, wall)
        self._health[status.id] = (status, runs, minute, found)
        return found

    def all(self, cards: list[Markup]) -> Markup:
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

    def _command(self, scheduler_id: str) -> bool:
        try:
            return runs_a_command(self._site.use_cases.registry.get(scheduler_id))
        except SupervisorError:
            return False

    def ranks(self) -> dict[str, int]:
        """Each scheduler's place in the app's definition order (the registry is frozen)."""
        ranks = self._ranks
        if ranks is None:
            ranks = {sid: i for i, sid in enumerate(self._site.use_cases.registry.ids())}
            self._ranks = ranks
        return ranks

    def card(self, status: SchedulerStatus, health: Health) -> Markup:
        with self._lock:
            cached = self._cards.get(status.id)
        if cached is not None and cached[0] == status and cached[1] == health:
            return cached[2]
        html = Markup(  # noqa: S704 - the output of an autoescaping template
            render(
                self._site.env,
                "card.html",
                {
                    "s": status,
                    "h": health,
                    "href": scheduler_url(status.id),
                    "search": search_text(status, health),
                    "rank": self.ranks().get(status.id, 0),
                    "command": self._command(status.id),
                    "icons": self._icons,
                },
            )
        )
        with self._lock:
            self._cards[status.id] = (status, health, html)
        return html


def search_text(status: SchedulerStatus, health: Health) -> str:
    """What the filter matches a card on, lower case."""
    words = [status.name.lower(), status.id.lower(), status.state.value, status.kind.value]
    if status.last_outcome is not None:
        words += [status.last_outcome.value, OUTCOME_WORDS[status.last_outcome].lower()]
    if health.failing:
        words.append("failing")
    return " ".join(words)


def matches(text: str, query: str) -> bool:
    """Every word of ``query`` is in ``text`` (as the page's script filters)."""
    return all(word in text for word in query.lower().split())


MAX_CARDS_ASKED = 200


def _runs_key(status: SchedulerStatus) -> tuple[object, ...]:
    """What a status says of its runs: when it moves, so did the newest runs. The run's
    phase too: a status can show a run starting before its row is stored, and the row is
    there once the run is running."""
    return (
        status.last_started_at,
        status.last_completed_at,
        status.current_run_id,
        status.run_phase,
        status.last_outcome,
    )


def overview(site: Site, request: Request, *, cards: CardCache) -> Any:
    # the guard checked the LIST permission; every subject with it sees every scheduler
    found = cards.snapshot(subject_of(request))
    asked = request.query.get("cards")
    if asked is not None:
        wanted = set(asked.split(",")[:MAX_CARDS_ASKED])
        chosen = [
            card
            for status, card in zip(found.statuses, found.cards, strict=True)
            if status.id in wanted
        ]
        return reply(str(Markup("").join(chosen)), 200)
    only_failing = request.query.get("filter") == "failing"
    outcome_text = request.query.get("outcome") or ""
    outcome = _outcome(outcome_text)
    text = (short_text(request.query.get("q"), field="q") or "").strip()
    shown = found.joined
    matched = len(found.statuses)
    if only_failing or text or outcome is not None:
        chosen = [
            card
            for status, card in zip(found.statuses, found.cards, strict=True)
            if (not only_failing or found.health[status.id].failing)
            and (outcome is None or status.last_outcome is outcome)
            and matches(search_text(status, found.health[status.id]), text)
        ]
        matched = len(chosen)
        shown = Markup("").join(chosen)

    def page(viewer: Request) -> Any:
        return site.page(
            viewer,
            "overview.html",
            statuses=found.statuses,
            counts=found.counts,
            failing=found.failing,
            only_failing=only_failing,
            outcome=outcome,
            outcomes=list(Outcome),
            q=text,
            matched=matched,
            cards=shown,
        )

    return cards.pages.serve(request, found, (only_failing, text, outcome), page)


def _outcome(text: str) -> Outcome | None:
    if not text:
        return None
    try:
        return Outcome(text)
    except ValueError:
        raise Refused(
            400, f"outcome must be one of {', '.join(o.value for o in Outcome)}"
        ) from None


def static(site: Site, _request: Request, name: str) -> Any:
    asset = site.assets.get(name)
    if asset is None:
        raise Refused(404, "no such file")
    response = reply(asset.body, 200, content_type=asset.content_type)
    response.set_header("Cache-Control", "public, max-age=31536000, immutable")
    return response
