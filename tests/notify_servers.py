"""Real servers for the notification tests: an SMTP server (aiosmtpd) and a webhook
receiver (http.server), both in-process on 127.0.0.1, plus a self-signed certificate."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Certificate:
    """A server certificate for 127.0.0.1 / localhost from a test CA: ``cert`` is the CA a
    client must trust, ``chain`` the server's key and certificate chain (PEM files)."""

    cert: Path
    chain: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.chain)
        return context


def make_certificate(folder: Path) -> Certificate:
    """A test CA and a certificate it signed for 127.0.0.1 and localhost (trustme)."""
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    cert, chain = folder / "ca.pem", folder / "server.pem"
    authority.cert_pem.write_to_path(str(cert))
    issued.private_key_and_cert_chain_pem.write_to_path(str(chain))
    return Certificate(cert, chain)


@dataclass
class Received:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class SmtpServer:
    """An aiosmtpd server that keeps what it receives; ``fail_next`` answers 451 that many
    times to DATA (a temporary failure)."""

    port: int
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # mechanism, user, pw
    fail_next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message (or fail on purpose)."""
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return "451 4.3.0 try again later"
            raw = cast(bytes, envelope.original_content or envelope.content)
            message = cast(EmailMessage, message_from_bytes(raw, policy=policy.default))
            login = session.auth_data if session.authenticated else None
            self.received.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), message,
                         session.ssl is not None,
                         None if login is None else bytes(login).decode()),
            )  # fmt: skip
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until ``count`` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.received)


def _authenticator(server_state: SmtpServer, user: str, password: str) -> Callable[..., Any]:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        given = (auth_data.login.decode(), auth_data.password.decode())
        server_state.logins.append((mechanism, *given))
        ok = given == (user, password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    return check


@contextmanager
def smtp_server(
    *,
    starttls: Certificate | None = None,
    implicit_tls: Certificate | None = None,
    credentials: tuple[str, str] | None = None,
    port: int | None = None,
) -> Iterator[SmtpServer]:
    """Run an SMTP server on ``port`` (default: a free one): plain, STARTTLS (required) or
    implicit TLS, with AUTH required when ``credentials`` are given."""
    state = SmtpServer(port or free_port())
    kwargs: dict[str, Any] = {}
    if starttls is not None:
        kwargs.update(tls_context=starttls.server_context(), require_starttls=True)
    if implicit_tls is not None:
        kwargs["ssl_context"] = implicit_tls.server_context()
    if credentials is not None:
        kwargs.update(
            authenticator=_authenticator(state, *credentials),
            auth_required=True,
            auth_require_tls=starttls is not None or implicit_tls is not None,
        )
    controller = Controller(state, hostname="127.0.0.1", port=state.port, **kwargs)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()


@dataclass
class Hit:
    """One request the webhook server received."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookServer:
    """A webhook receiver. ``script`` is the statuses to answer, in order (then 200);
    the status 0 means: hang (answer nothing until the test ends)."""

    url: str
    hits: list[Hit]
    script: list[int]
    release: threading.Event

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Hit]:
        """Wait until ``count`` requests arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.hits) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.hits)


@contextmanager
def webhook_server(script: list[int] | None = None, default: int = 200) -> Iterator[WebhookServer]:
    """Run a webhook receiver on a free port (``default``: the status after the script)."""
    hits: list[Hit] = []
    plan = list(script or [])
    release = threading.Event()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                hits.append(Hit(self.path, dict(self.headers.items()), body))
                status = plan.pop(0) if plan else default
            if status == 0:
                release.wait(30)
                return
            payload = b"ok" if status < 400 else b"server says no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield WebhookServer(f"http://127.0.0.1:{server.server_port}/hook", hits, plan, release)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
