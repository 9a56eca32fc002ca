"""Where notifications go: a webhook (signed JSON POST) or email (SMTP).

Each target's ``send`` delivers one notification or raises ``NotifyError``; retries with
back-off are the caller's (``dispatch``). May import ``core``, ``notify.events`` and the
stdlib.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlsplit

from supervisor.core.errors import DefinitionError, NotifyError
from supervisor.notify.events import Notification

SIGNATURE_HEADER = "X-Sched-Supervisor-Signature"
TIMESTAMP_HEADER = "X-Sched-Supervisor-Timestamp"


class Target(Protocol):
    """One place notifications are delivered to."""

    @property
    def name(self) -> str:
        """What the target is, for messages (``webhook https://...``); no secrets."""
        ...

    def send(self, notification: Notification) -> None:
        """Deliver ``notification`` once; raise ``NotifyError`` naming the problem.
        ``NotifyError.retry`` says whether trying again may help."""
        ...


class DeliveryError(NotifyError):
    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp.body``: a receiver recomputes it
    with the shared secret and refuses a mismatch (or an old timestamp: replay)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    url: str
    secret: bytes | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DefinitionError("notify webhook", f"needs an http(s) URL, got {self.url!r}")
        if not 0 < self.timeout_seconds <= 300:
            raise DefinitionError("notify webhook timeout", "must be between 0 and 300 s")

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def send(self, notification: Notification) -> None:
        body = json.dumps(notification.to_json(), sort_keys=True).encode()
        timestamp = str(int(notification.at.timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sched-supervisor",
            TIMESTAMP_HEADER: timestamp,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, body)
        # The scheme is checked to be http(s) on construction.
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                response.read(1 << 16)
        except urllib.error.HTTPError as error:
            retry = error.code == 429 or error.code >= 500
            raise DeliveryError(f"{self.name} answered {error.code}", retry=retry) from error
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise DeliveryError(f"{self.name}: {reason}", retry=True) from error


@dataclass(frozen=True, slots=True, kw_only=True)
class Email:
    host: str
    port: int = 25
    sender: str
    recipients: Sequence[str]
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise DefinitionError("notify email host", "must not be empty")
        if not 0 < self.port < 65536:
            raise DefinitionError("notify email port", f"not a port: {self.port}")
        if not self.recipients or any("@" not in r for r in self.recipients):
            raise DefinitionError("notify email", "needs recipient addresses (user@host)")
        if "@" not in self.sender:
            raise DefinitionError("notify email sender", f"not an address: {self.sender!r}")
        if (self.username is None) != (self.password is None):
            raise DefinitionError("notify email", "a user name needs a password, and back")

    @property
    def name(self) -> str:
        return f"email via {self.host}:{self.port}"

    def send(self, notification: Notification) -> None:
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(notification.to_text())
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None and self.password is not None:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as error:
            retry = 400 <= error.smtp_code < 500
            raise DeliveryError(
                f"{self.name} refused the message: {error.smtp_code}", retry=retry
            ) from error
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"{self.name}: {error}", retry=True) from error
