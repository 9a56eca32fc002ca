"""A tiny HTTP client over a real socket that keeps the Admin Center's session cookie.

Shared by the web server tests and the Admin Center benchmark.
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode


class HttpSession:
    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self.cookie = ""

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """One request on a new connection: (status, headers, body)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        found = response.getheader("Set-Cookie")
        if found:
            self.cookie = found.split(";")[0]
        connection.close()
        return response.status, dict(response.getheaders()), text

    def csrf(self, path: str) -> str:
        """The CSRF token of the form on the page at ``path``."""
        _, _, page = self.request("GET", path)
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None, page[:500]
        return match.group(1)

    def login(self, name: str, password: str) -> None:
        token = self.csrf("/login")
        status, _, _ = self.request(
            "POST", "/login", {"csrf": token, "name": name, "password": password}
        )
        assert status == 303, status

    def change_password(self, current: str, new: str) -> None:
        token = self.csrf("/account/password")
        form = {"csrf": token, "current": current, "password": new, "repeat": new}
        status, _, body = self.request("POST", "/account/password", form)
        assert status == 303, (status, body[:500])

    def first_login(self, name: str, one_time: str, new: str) -> None:
        """Log in with a one-time password and change it, as the page requires."""
        self.login(name, one_time)
        self.change_password(one_time, new)

    def open_stream(self, path: str) -> tuple[http.client.HTTPConnection, Any]:
        """A server-sent-events stream left open: (connection, response)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        connection.request("GET", path, headers={"Cookie": self.cookie})
        return connection, connection.getresponse()


def bootstrap_password(state_dir: Path) -> str:
    """The bootstrap admin's one-time password, left in the state directory's file."""
    return (state_dir / "admin-password").read_text().strip()
