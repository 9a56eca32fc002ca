"""Rendered pages kept while what they show has not changed, shared by every session alike.

A page is kept per *variant* (its query, the path, who looks and what they may do) with
the *basis* it was rendered from (the overview's snapshot), and reused only while the
caller hands in that same basis object (compared by identity): a caller that reads newer
data makes a new basis, so a kept page never outlives the data it shows.

The session's CSRF token is the one part of a page that differs between the sessions of
one user: a page is rendered for a copy of the session that carries a random placeholder
instead, and every reply swaps in the asking session's own token. The copy has no flashes;
a session with flashes waiting gets its page rendered afresh (they are shown once) and not
kept. Anonymous requests are never kept. Readers that find the same new basis at once
wait for the first one's rendering instead of each rendering (and compressing) the page.

A client that accepts gzip (every browser does) gets the kept page compressed (the
overview of 1,000 schedulers: 1.2 MB, about 30 KB compressed). It is compressed once, in
pieces between the token's places, and the token goes between them as a stored
(uncompressed) deflate block: the token never shares a compression window with anything
else on the page (text a query reflects included), so the size of a reply tells nothing
about it (BREACH). The gzip trailer's checksum covers the token, so each token's reply
is assembled once and kept with the page: a session asking again is answered with those
same bytes, neither spliced nor compressed again. An uncompressed reply is the kept
pieces and the token, handed on as they are (not joined into a new 1.2 MB string).

May import ``supervisor.web.site``, bottle and the stdlib.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import bottle

from supervisor.web.site import Request

# A kept page of the overview of 1,000 schedulers is about 1.2 MB (30 KB compressed).
MAX_PAGES = 16
MAX_TOKENS = 64  # compressed replies kept per page, one per session token
GZIP_LEVEL = 6
RENDER_WAIT_SECONDS = 10.0  # a reader waits this long for another's rendering of a page
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no time
_LAST_BLOCK = b"\x01\x00\x00\xff\xff"  # an empty stored block marked final


@dataclass(frozen=True, slots=True)
class _Kept:
    basis: object
    status: int
    content_type: str
    parts: tuple[bytes, ...]  # the body split where the CSRF token goes
    deflated: tuple[bytes, ...]  # each part as raw deflate blocks, none final
    gzipped: dict[str, bytes]  # by token: the whole gzip reply (guarded by the cache)


def _deflated(part: bytes) -> bytes:
    """``part`` as raw deflate blocks ending on a byte boundary, none marked final."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(part) + compressor.flush(zlib.Z_FULL_FLUSH)


def _stored(data: bytes) -> bytes:
    """``data`` as stored (uncompressed) deflate blocks, none marked final."""
    blocks = []
    for start in range(0, len(data), 0xFFFF):
        piece = data[start : start + 0xFFFF]
        blocks.append(b"\x00" + struct.pack("<HH", len(piece), len(piece) ^ 0xFFFF) + piece)
    return b"".join(blocks)


def _gzipped(kept: _Kept, token: bytes) -> bytes:
    stored = _stored(token)
    body = [_GZIP_HEADER]
    crc = 0
    size = 0
    for index, (part, deflated) in enumerate(zip(kept.parts, kept.deflated, strict=True)):
        if index:
            body.append(stored)
            crc = zlib.crc32(token, crc)
            size += len(token)
        body.append(deflated)
        crc = zlib.crc32(part, crc)
        size += len(part)
    body += [_LAST_BLOCK, struct.pack("<II", crc, size & 0xFFFFFFFF)]
    return b"".join(body)


class _Pieces:
    """A reply's body as the pieces it is sent in, one after another (as often as asked:
    a WSGI server takes an iterable other than a list as it is, without joining it)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)


@functools.lru_cache(maxsize=256)  # browsers send a handful of distinct values
def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip (by name, else ``*``; not ``q=0``)."""
    qualities: dict[str, float] = {}
    for item in header.split(","):
        name, _, parameters = item.partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        qualities[name.strip().lower()] = quality
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


class PageCache:
    """Thread-safe; holds at most ``max_pages`` pages (least recently used dropped)."""

    def __init__(self, *, max_pages: int = MAX_PAGES) -> None:
        self._max = max_pages
        self._pages: OrderedDict[Hashable, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        # Pages being rendered: by key, the basis and an event set when it is done.
        self._flights: dict[Hashable, tuple[object, threading.Event]] = {}
        self._placeholder = "csrf-" + secrets.token_urlsafe(24)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)

    def _once(
        self, key: Hashable, basis: object, request: Request, render: Callable[[Request], Any]
    ) -> _Kept | None:
        """The page kept for ``key`` from ``basis``, rendered by this thread or by the one
        already rendering it (waited for): readers that find a new basis at once render
        it once, not once each. None when it is not a page to keep."""
        with self._lock:
            kept = self._pages.get(key)
            if kept is not None and kept.basis is basis:
                self._pages.move_to_end(key)
                return kept
            found = self._flights.get(key)
            mine = found is None or found[0] is not basis
            flight = (basis, threading.Event()) if found is None or mine else found
            if mine:
                self._flights[key] = flight
        if not mine:
            flight[1].wait(RENDER_WAIT_SECONDS)
            with self._lock:
                kept = self._pages.get(key)
            return kept if kept is not None and kept.basis is basis else None
        try:
            return self._rendered(key, basis, request, render)
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight[1].set()

    def _rendered(
        self, key: Hashable, basis: object, request: Request, render: Callable[[Request], Any]
    ) -> _Kept | None:
        session = request.session
        assert session is not None
        stand_in = dataclasses.replace(session, csrf=self._placeholder, flashes=[])
        response = render(dataclasses.replace(request, session=stand_in))
        body = response.body
        if not isinstance(body, bytes) or response.status_code != 200:
            return None
        parts = tuple(body.split(self._placeholder.encode("ascii")))
        kept = _Kept(
            basis=basis,
            status=response.status_code,
            content_type=str(response.content_type),
            parts=parts,
            deflated=tuple(_deflated(part) for part in parts),
            gzipped={},
        )
        with self._lock:
            self._pages[key] = kept
            self._pages.move_to_end(key)
            while len(self._pages) > self._max:
                self._pages.popitem(last=False)
        return kept

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
        # A flash added just after this look waits for the next page; none is lost: the
        # kept page is rendered for a copy without flashes, the others take them.
        if session is None or request.subject is None or session.flashes:
            return render(request)
        key = (
            variant,
            request.path,
            request.subject,
            session.via_proxy,
            session.must_change_password,
        )
        kept = self._once(key, basis, request, render)
        if kept is None:
            return render(request)  # not a page to keep: render it for this session
        token = session.csrf.encode("ascii", errors="replace")
        if accepts_gzip(str(request.environ.get("HTTP_ACCEPT_ENCODING", ""))):
            with self._lock:
                data = kept.gzipped.get(session.csrf)
            if data is None:
                data = _gzipped(kept, token)
                with self._lock:
                    if len(kept.gzipped) >= MAX_TOKENS:
                        kept.gzipped.clear()
                    kept.gzipped[session.csrf] = data
            headers = [("Content-Encoding", "gzip"), ("Content-Length", str(len(data)))]
            content: Any = data
        else:
            pieces = [kept.parts[0]]
            for part in kept.parts[1:]:
                pieces += (token, part)
            size = sum(len(piece) for piece in pieces)
            headers = [("Content-Length", str(size))]
            content = _Pieces(pieces)
        headers += [("Content-Type", kept.content_type), ("Vary", "Accept-Encoding")]
        return bottle.HTTPResponse(body=content, status=kept.status, headers=headers)
