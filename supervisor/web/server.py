"""Serving the Admin Center: ``AdminServer`` and the ``start_admin`` factory of ``run``.

The HTTP side is ``httpserver.HttpServer`` (deadlines per request, bounded heads and
bodies, a thread cap, no banner). A non-loopback address is refused unless the caller
allows it, and then announced loudly: the Admin Center speaks plain HTTP.
May import ``service`` (types only), ``usecases``, ``store``, ``errors``,
``supervisor.web.*`` and the stdlib.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from supervisor.core.errors import DefinitionError
from supervisor.usecases.accounts import AccountStore
from supervisor.web.app import AdminConfig, create_app
from supervisor.web.auth import bootstrap_file, ensure_bootstrap_admin
from supervisor.web.httpserver import HttpServer, ServerLimits

if TYPE_CHECKING:
    from supervisor.usecases.schedulers import UseCases


class AdminOptions(Protocol):
    """What serving the Admin Center needs of a mode's options (``RunOptions`` has it)."""

    @property
    def admin(self) -> tuple[str, int] | None: ...

    @property
    def state_dir(self) -> Path: ...


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_admin_address(host: str, *, allow_remote: bool) -> str | None:
    """Refuse a non-loopback ``host`` unless allowed; the warning to show when allowed."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise DefinitionError(
            "--admin",
            f"{host} is reachable from other machines and the Admin Center has no TLS;"
            " serve it on 127.0.0.1 behind an HTTPS proxy or an SSH tunnel, or pass"
            " --allow-remote if you accept the exposure",
        )
    return (
        "WARNING: the Admin Center listens on "
        f"{host}, reachable from other machines, over plain HTTP (no TLS): passwords and"
        " session cookies cross the network readable. Prefer 127.0.0.1 behind an HTTPS"
        " proxy or an SSH tunnel."
    )


class AdminServer:
    """The Admin Center being served on ``host:port`` until ``close``."""

    def __init__(
        self,
        use_cases: UseCases,
        *,
        users: AccountStore,
        host: str = "127.0.0.1",
        port: int = 8080,
        config: AdminConfig | None = None,
        limits: ServerLimits | None = None,
        **app_options: Any,
    ) -> None:
        self.stop = threading.Event()
        config = config or AdminConfig()
        limits = limits or ServerLimits(max_body_bytes=config.max_body_bytes)
        self.app = create_app(use_cases, users=users, config=config, stop=self.stop, **app_options)
        self._http = HttpServer(self.app, host=host, port=port, limits=limits)
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def host(self) -> str:
        return str(self._http.server_address[0])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pending(self) -> int:
        """Connections still sending their request."""
        return self._http.pending

    def start(self) -> AdminServer:
        self._http.start()
        return self

    def close(self) -> None:
        """Stop accepting, end the event streams, and release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        self._http.close()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_admin(
    use_cases: UseCases,
    *,
    users: AccountStore,
    host: str,
    port: int,
    config: AdminConfig | None = None,
    state_dir: Path | None = None,
    out: IO[str] | None = None,
    **app_options: Any,
) -> AdminServer:
    """Create the bootstrap admin if there is no user yet, then serve; returns the server.

    With ``state_dir``, the bootstrap password goes to a file there unless ``out`` is a
    terminal (see ``auth.ensure_bootstrap_admin``).
    """
    config = config or AdminConfig()
    if state_dir is not None:
        config = replace(config, bootstrap_file=bootstrap_file(state_dir))
    ensure_bootstrap_admin(
        users, out=out or sys.stderr, state_dir=state_dir, cost=config.password_cost
    )
    server = AdminServer(use_cases, users=users, host=host, port=port, config=config, **app_options)
    return server.start()


def start_admin(
    use_cases: UseCases,
    store: AccountStore,
    options: AdminOptions,
    *,
    config: AdminConfig | None = None,
    out: IO[str] | None = None,
    allow_remote: bool = False,
) -> AdminServer:
    """The admin factory of ``supervisor run`` (``service.Service(admin_factory=...)``)."""
    if options.admin is None:
        raise ValueError("start_admin needs options.admin = (host, port)")
    host, port = options.admin
    stream = out or sys.stderr
    warning = check_admin_address(host, allow_remote=allow_remote)
    chosen = config or AdminConfig(app_name=use_cases.registry.app_name)
    server = serve_admin(
        use_cases,
        users=store,
        host=host,
        port=port,
        config=chosen,
        state_dir=options.state_dir.absolute(),
        out=stream,
    )
    if warning is not None:
        stream.write(warning + "\n")
    stream.write(f"Admin Center: {server.url}/\n")
    stream.flush()
    return server


AdminFactory = Callable[["UseCases", AccountStore, AdminOptions], AdminServer]
