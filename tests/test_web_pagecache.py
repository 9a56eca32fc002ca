"""Kept pages: reused only for the same basis, each session's own token spliced in, sent
gzip-compressed to clients that take it with the token in a stored block of its own,
never kept for a session with flashes or for a refusal."""

from __future__ import annotations

import gzip
import sys
import threading
import zlib
from typing import Any

import pytest

from supervisor.core.access import Permission, Subject, with_role
from supervisor.web.pagecache import PageCache, accepts_gzip
from supervisor.web.replies import reply
from supervisor.web.sessions import Flash, SessionStore
from supervisor.web.site import Request
from supervisor.web.site import Site as WebSite
from tests.test_web_fakes import Client
from tests.test_web_pages import Site
from tests.waiting import wait_for

ADA = Subject(name="ada", permissions=frozenset({Permission.LIST}), role="viewer")


def request(
    sessions: SessionStore, token: str | None, *, encoding: str = "", subject: Subject = ADA
) -> Request:
    session = sessions.get(token)
    return Request(
        environ={"HTTP_ACCEPT_ENCODING": encoding} if encoding else {},
        path="/",
        method="GET",
        address="127.0.0.1",
        secure=False,
        query={},
        form={},
        session=session,
        subject=subject if session is not None else None,
    )


class Renderer:
    """Renders a page that shows its request's CSRF token twice and its flashes (taking
    them, as ``Site.page`` does), counting its calls."""

    def __init__(self, sessions: SessionStore | None = None, *, status: int = 200) -> None:
        self.sessions = sessions or SessionStore()
        self.text = "cards"
        self.status = status
        self.calls = 0

    def __call__(self, viewer: Request) -> Any:
        self.calls += 1
        csrf = viewer.session.csrf if viewer.session is not None else ""
        session = viewer.session
        flashes = "".join(f.title for f in self.sessions.pop_flashes(session)) if session else ""
        role = viewer.subject.role if viewer.subject is not None else ""
        body = f"<form>{csrf}</form>{flashes}<b>{role}</b><main>{self.text * 2000}</main>"
        body += f"<i>{csrf}</i>"
        return reply(body, self.status)


def sent(response: Any) -> bytes:
    """The bytes a reply sends (its body, or its pieces one after another)."""
    body = response.body
    data = body if isinstance(body, bytes) else b"".join(body)
    declared = response.headers.get("Content-Length")  # else Bottle counts the bytes
    assert declared is None or int(declared) == len(data)
    return data


def body_of(response: Any) -> bytes:
    data = sent(response)
    return gzip.decompress(data) if response.headers.get("Content-Encoding") == "gzip" else data


def test_a_page_is_kept_for_its_basis_and_carries_each_sessions_token() -> None:
    sessions = SessionStore()
    cache = PageCache()
    render = Renderer()
    basis = object()
    (token_a, a), (token_b, b) = sessions.create("ada"), sessions.create("ada")
    first = cache.serve(request(sessions, token_a), basis, "all", render)
    second = cache.serve(request(sessions, token_b), basis, "all", render)
    assert render.calls == 1  # the second session got the kept page
    assert body_of(first).count(a.csrf.encode()) == 2 and b.csrf.encode() not in body_of(first)
    assert body_of(second).count(b.csrf.encode()) == 2 and a.csrf.encode() not in body_of(second)
    cache.serve(request(sessions, token_a), object(), "all", render)  # newer data
    assert render.calls == 2
    cache.serve(request(sessions, token_a), basis, "failing", render)  # another variant
    assert render.calls == 3


def test_two_subjects_with_the_same_basis_get_pages_of_their_own() -> None:
    sessions = SessionStore()
    cache = PageCache()
    render = Renderer(sessions)
    basis = object()
    admin = with_role("ada", "admin")
    viewer = with_role("vera", "viewer")
    (token_a, _), (token_v, _) = sessions.create("ada"), sessions.create("vera")
    as_admin = cache.serve(request(sessions, token_a, subject=admin), basis, "all", render)
    as_viewer = cache.serve(request(sessions, token_v, subject=viewer), basis, "all", render)
    assert render.calls == 2 and len(cache) == 2
    assert b"<b>admin</b>" in body_of(as_admin) and b"<b>viewer</b>" in body_of(as_viewer)
    again = cache.serve(request(sessions, token_v, subject=viewer), basis, "all", render)
    assert render.calls == 2 and b"<b>viewer</b>" in body_of(again)


def test_a_viewer_and_an_admin_reading_the_same_overview_get_their_own_pages() -> None:
    site = Site()
    try:
        pages = {}
        for name in ("ada", "vera", "ada", "vera"):  # the second reads may be kept pages
            client = Client(site.app)
            assert client.login(name).status == 303
            pages[name] = client.get("/").body
        assert 'href="/audit"' in pages["ada"]  # the admin's menu
        assert 'href="/audit"' not in pages["vera"]
    finally:
        site.stop.set()


def test_only_a_users_admitted_post_that_succeeded_makes_kept_pages_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changes: list[int] = []
    real = WebSite.note_change

    def counted(self: WebSite) -> None:
        changes.append(1)
        real(self)

    monkeypatch.setattr(WebSite, "note_change", counted)
    site = Site()
    try:
        page = "/schedulers/jobs.repeat"
        anonymous = Client(site.app)
        token = anonymous.csrf("/login")
        for _ in range(5):  # a flood of logins
            wrong = anonymous.post("/login", {"name": "ada", "password": "no", "csrf": token})
            assert wrong.status in (401, 429)
        assert anonymous.post("/login", {"name": "ada", "password": "no"}).status == 403
        assert anonymous.post(f"{page}/stop", {"confirmed": "1"}).status in (303, 401, 403)
        assert site.client.post(f"{page}/stop", {"confirmed": "1"}).status == 403  # no token
        viewer = Client(site.app)
        assert viewer.login("vera").status == 303
        token = viewer.csrf(page)
        refused = viewer.post(f"{page}/stop", {"confirmed": "1", "csrf": token})
        assert refused.status == 403
        assert changes == [] and site.backend.commands == []
        assert site.post(f"{page}/stop", {"confirmed": "1"})[0] == 303
        assert len(changes) == 1
    finally:
        site.stop.set()


def test_sessions_with_flashes_anonymous_requests_and_refusals_are_not_kept() -> None:
    sessions = SessionStore()
    cache = PageCache()
    render = Renderer(sessions)
    basis = object()
    token, session = sessions.create("ada")
    sessions.flash(session, Flash(kind="ok", title="Run started"))
    shown = cache.serve(request(sessions, token), basis, "all", render)
    assert b"Run started" in body_of(shown) and len(cache) == 0
    assert sessions.pop_flashes(session) == []  # the render showed (and took) them
    assert b"Run started" not in body_of(cache.serve(request(sessions, token), basis, "", render))
    cache.serve(request(sessions, None), basis, "anonymous", render)
    refused = Renderer(sessions, status=404)
    cache.serve(request(sessions, token), basis, "refused", refused)
    cache.serve(request(sessions, token), basis, "refused", refused)
    assert len(cache) == 1 and refused.calls == 4  # rendered again, for the session each time


def test_at_most_max_pages_are_kept() -> None:
    sessions = SessionStore()
    cache = PageCache(max_pages=3)
    token, _ = sessions.create("ada")
    for variant in range(10):
        cache.serve(request(sessions, token), object(), variant, Renderer())
    assert len(cache) == 3


def test_the_gzip_reply_is_valid_and_the_token_is_stored_apart() -> None:
    sessions = SessionStore()
    cache = PageCache()
    token, session = sessions.create("ada")
    plain = cache.serve(request(sessions, token), None, "all", Renderer())
    packed = cache.serve(request(sessions, token, encoding="br, gzip"), None, "all", Renderer())
    assert packed.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers
    assert packed.headers["Vary"] == "Accept-Encoding"
    page, data = sent(plain), sent(packed)
    assert gzip.decompress(data) == page  # the trailer's CRC and size check out
    assert len(data) * 20 < len(page)
    assert session.csrf.encode() in data  # verbatim: in a stored block, not compressed
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[10:-8])
    assert inflated == page


def test_a_session_asking_again_gets_the_same_bytes_neither_spliced_nor_compressed() -> None:
    sessions = SessionStore()
    cache = PageCache()
    render = Renderer()
    (token_a, a), (token_b, _) = sessions.create("ada"), sessions.create("ada")
    first = cache.serve(request(sessions, token_a, encoding="gzip"), None, "all", render)
    other = cache.serve(request(sessions, token_b, encoding="gzip"), None, "all", render)
    again = cache.serve(request(sessions, token_a, encoding="gzip"), None, "all", render)
    assert render.calls == 1
    assert again.body is first.body  # the very bytes kept for this token
    assert other.body is not first.body and a.csrf.encode() not in other.body
    pieces = list(cache.serve(request(sessions, token_a), None, "all", render).body)
    kept = list(cache.serve(request(sessions, token_a), None, "all", render).body)
    assert all(x is y for x, y in zip(pieces[::2], kept[::2], strict=True))  # kept, no copy
    assert a.csrf.encode() in pieces and gzip.decompress(first.body) == b"".join(pieces)


@pytest.mark.parametrize(
    ("header", "taken"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("x-gzip", False),
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding(header: str, taken: bool) -> None:
    assert accepts_gzip(header) is taken


def test_readers_of_a_new_basis_at_once_render_it_once() -> None:
    sessions = SessionStore()
    cache = PageCache()
    release = threading.Event()
    page = Renderer()
    renders: list[int] = []

    def slow(viewer: Request) -> Any:
        renders.append(1)
        release.wait(10)
        return page(viewer)

    basis = object()
    tokens = [sessions.create("ada")[0] for _ in range(5)]
    replies: list[Any] = []

    def ask(token: str) -> None:
        replies.append(cache.serve(request(sessions, token, encoding="gzip"), basis, "", slow))

    threads = [threading.Thread(target=ask, args=(token,)) for token in tokens]

    def waiting() -> int:
        """Threads inside the cache, waiting for another's rendering."""
        frames = sys._current_frames()
        count = 0
        for thread in threads:
            frame = frames.get(thread.ident or 0)
            names = []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            count += "_once" in names and "slow" not in names
        return count

    for thread in threads:
        thread.start()
    wait_for(lambda: len(renders) + waiting() == 5, timeout=10, what="all five asking")
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(renders) == 1 and len(replies) == 5
    csrfs = set()
    for token in tokens:
        session = sessions.get(token)
        assert session is not None
        csrfs.add(session.csrf.encode())
    shown = {c for r in replies for c in csrfs if c in gzip.decompress(r.body)}
    assert shown == csrfs  # each session its own token
