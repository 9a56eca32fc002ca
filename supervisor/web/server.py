"""Serving the Admin Center: a threaded stdlib WSGI server and the ``start_admin`` factory.

Bottle's default server handles one request at a time, so one open event stream would
hold every other request. This serves each connection in its own (daemon) thread, caps
the number of connections, and on ``close`` ends every event stream before returning.
May import ``service`` (types only), ``usecases``, ``store``, ``supervisor.web.*``
and the stdlib.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from supervisor.store.protocols import UserDirectory
from supervisor.web.app import CONNECTION_KEY, AdminConfig, create_app
from supervisor.web.auth import ensure_bootstrap_admin

if TYPE_CHECKING:
    from supervisor.service.manager_mode import RunOptions
    from supervisor.usecases.schedulers import UseCases

MAX_CONNECTIONS = 200


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (the manager's stderr is for the manager), no versions told."""

    server_version = "sched-supervisor"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        # lets an event stream notice at once that its reader went away (see app.py)
        environ[CONNECTION_KEY] = self.connection
        return environ


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: drop the connection
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


class _IPv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class AdminServer:
    """The Admin Center being served on ``host:port`` until ``close``."""

    def __init__(
        self,
        use_cases: UseCases,
        *,
        users: UserDirectory,
        host: str = "127.0.0.1",
        port: int = 8080,
        config: AdminConfig | None = None,
        **app_options: Any,
    ) -> None:
        self.stop = threading.Event()
        self.app = create_app(use_cases, users=users, config=config, stop=self.stop, **app_options)
        server_class = _IPv6Server if ":" in host else ThreadingWSGIServer
        self._server = make_server(
            host, port, self.app, server_class=server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="admin-center",
            daemon=True,
        )
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> AdminServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, end the event streams, and release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_admin(
    use_cases: UseCases,
    *,
    users: UserDirectory,
    host: str,
    port: int,
    config: AdminConfig | None = None,
    out: IO[str] | None = None,
    **app_options: Any,
) -> AdminServer:
    """Create the bootstrap admin if there is no user yet, then serve; returns the server."""
    ensure_bootstrap_admin(users, out=out or sys.stderr)
    server = AdminServer(use_cases, users=users, host=host, port=port, config=config, **app_options)
    return server.start()


def start_admin(
    use_cases: UseCases,
    store: UserDirectory,
    options: RunOptions,
    *,
    config: AdminConfig | None = None,
    out: IO[str] | None = None,
) -> AdminServer:
    """The admin factory of ``supervisor run`` (``service.Service(admin_factory=...)``)."""
    if options.admin is None:
        raise ValueError("start_admin needs options.admin = (host, port)")
    host, port = options.admin
    chosen = config or AdminConfig(app_name=use_cases.registry.app_name)
    server = serve_admin(use_cases, users=store, host=host, port=port, config=chosen, out=out)
    (out or sys.stderr).write(f"Admin Center: {server.url}/\n")
    return server


AdminFactory = Callable[["UseCases", UserDirectory, "RunOptions"], AdminServer]
