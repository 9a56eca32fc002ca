"""Rendered pages kept while what they show has not changed, shared by every session alike.

A page is kept per *variant* (its query, the path, who looks and what they may do) with
the *basis* it was rendered from (the overview's snapshot), and reused only while the
caller hands in that same basis object (compared by identity): a caller that reads newer
data makes a new basis, so a kept page never outlives the data it shows.

The session's CSRF token is the one part of a page that differs between the sessions of
one user: a page is rendered for a copy of the session that carries a random placeholder
instead, and every reply swaps in the asking session's own token. The copy has no flashes;
a session with flashes waiting gets its page rendered afresh (they are shown once) and not
kept. Anonymous requests are never kept.

May import ``supervisor.web.site``, bottle and the stdlib.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import bottle

from supervisor.web.site import Request

# A kept page of the overview of 1,000 schedulers is about 1.2 MB.
MAX_PAGES = 16


@dataclass(frozen=True, slots=True)
class _Kept:
    basis: object
    status: int
    content_type: str
    parts: tuple[bytes, ...]  # the body split where the CSRF token goes


class PageCache:
    """Thread-safe; holds at most ``max_pages`` pages (least recently used dropped)."""

    def __init__(self, *, max_pages: int = MAX_PAGES) -> None:
        self._max = max_pages
        self._pages: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self._placeholder = "csrf-" + secrets.token_urlsafe(24)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)

    def serve(
        self,
        request: Request,
        basis: object,
        variant: Hashable,
        render: Callable[[Request], Any],
    ) -> Any:
        """The reply ``render(request)`` would give, from a kept page when ``basis`` is the
        one it was rendered from. ``render`` must depend only on its request's session,
        subject and path, on ``variant`` and on ``basis``."""
        session = request.session
        if session is None or request.subject is None or session.flashes:
            return render(request)
        key = (
            variant,
            request.path,
            request.subject,
            session.via_proxy,
            session.must_change_password,
        )
        with self._lock:
            kept = self._pages.get(key)
            if kept is not None and kept.basis is basis:
                self._pages.move_to_end(key)
            else:
                kept = None
        if kept is None:
            stand_in = dataclasses.replace(session, csrf=self._placeholder, flashes=[])
            response = render(dataclasses.replace(request, session=stand_in))
            body = response.body
            if not isinstance(body, bytes) or response.status_code != 200:
                return render(request)  # not a page to keep: render it for this session
            kept = _Kept(
                basis=basis,
                status=response.status_code,
                content_type=str(response.content_type),
                parts=tuple(body.split(self._placeholder.encode("ascii"))),
            )
            with self._lock:
                self._pages[key] = kept
                self._pages.move_to_end(key)
                while len(self._pages) > self._max:
                    self._pages.popitem(last=False)
        reply = bottle.HTTPResponse(
            body=session.csrf.encode("ascii", errors="replace").join(kept.parts),
            status=kept.status,
        )
        reply.set_header("Content-Type", kept.content_type)
        return reply
