"""The two channels: one email over SMTP, one webhook POST. Each raises
:class:`DeliveryError` saying whether trying again may help; nothing else escapes.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from tsmeter.domain.targets import address_problem, check_email, check_webhook_url
from tsmeter.errors import TsmeterError, ValidationError
from tsmeter.integrations.notify.render import one_line
from tsmeter.integrations.notify.settings import NotifySettings
from tsmeter.integrations.notify.signing import sign

__all__ = [
    "DeliveryError",
    "WebhookTarget",
    "build_email",
    "check_target",
    "post_webhook",
    "send_email",
]

USER_AGENT = "tsmeter-notify/1"
_ERROR_BODY_LIMIT = 200


class DeliveryError(TsmeterError):
    """One delivery attempt failed; ``retryable`` says whether a later attempt may succeed
    (connection errors, timeouts, SMTP 4xx, HTTP 429/5xx) or not (SMTP 5xx, HTTP 4xx).
    ``retry_after`` is the delay the server asked for, in seconds, if it gave one."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def build_email(
    settings: NotifySettings, to: str, subject: str, body: str, headers: dict[str, str]
) -> EmailMessage:
    """The message for one recipient; every header value is made one line first."""
    if settings.smtp_from is None:
        raise DeliveryError("email is not configured (set TSMETER_SMTP_FROM)", retryable=False)
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = one_line(to)
    message["Subject"] = one_line(subject)
    message["Date"] = formatdate(usegmt=True)
    for name, value in headers.items():
        message[name] = one_line(value)
    # Non-ASCII text as quoted-printable: safe for servers without 8BITMIME.
    message.set_content(body, cte="7bit" if body.isascii() else "quoted-printable")
    return message


def _tls_context(settings: NotifySettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.smtp_ca_file:
        context.load_verify_locations(cafile=settings.smtp_ca_file)
    return context


def send_email(settings: NotifySettings, message: EmailMessage, to: str) -> None:
    """Send ``message`` to ``to`` through the configured SMTP server (STARTTLS, SSL or
    plain; login when a user is set)."""
    if settings.smtp_host is None:
        raise DeliveryError("email is not configured (set TSMETER_SMTP_HOST)", retryable=False)
    try:
        check_email(to)
    except ValidationError as exc:
        raise DeliveryError(f"refused target: {exc.problem}", retryable=False) from None
    host, port, timeout = settings.smtp_host, settings.smtp_port or 0, settings.smtp_timeout
    sender = parseaddr(settings.smtp_from or "")[1]
    try:
        context = _tls_context(settings)
        client: smtplib.SMTP
        if settings.smtp_security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if settings.smtp_security == "starttls":
                client.starttls(context=context)
            if settings.smtp_user is not None and settings.smtp_password is not None:
                client.login(settings.smtp_user, settings.smtp_password)
            client.send_message(message, from_addr=sender, to_addrs=[to])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{c} {_text(m)}" for c, m in exc.recipients.values())
        raise DeliveryError(
            f"SMTP refused the recipient: {detail}", retryable=all(400 <= c < 500 for c in codes)
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}", retryable=400 <= exc.smtp_code < 500
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"SMTP server: {exc}", retryable=False) from exc
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"SMTP TLS certificate rejected: {exc}", retryable=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {host}:{port}: {_describe(exc)}", retryable=True) from exc


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: a signed POST goes only to the configured URL (and never
    to an address the target check did not see)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL checked for sending: the URL without its userinfo, the host, the
    addresses it resolved to (the connection goes to one of them, so a DNS answer cannot
    change between the check and the connection) and the Basic credentials of the userinfo."""

    url: str
    host: str
    addresses: tuple[str, ...]
    authorization: str | None


def check_target(url: str, allow_link_local: bool) -> WebhookTarget:
    """Check ``url`` again at delivery time (it may come from an older version's log) and
    resolve its host; every address it resolves to must pass :func:`address_problem`.
    Raises DeliveryError: not retryable for a refused target, retryable when DNS fails."""
    try:
        check_webhook_url(url, allow_link_local=allow_link_local)
    except ValidationError as exc:
        raise DeliveryError(f"refused target: {exc.problem}", retryable=False) from None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        failure = f"webhook: cannot resolve {host}: {_describe(exc)}"
        raise DeliveryError(failure, retryable=True) from exc
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        problem: str | None
        try:
            problem = address_problem(ipaddress.ip_address(address), allow_link_local)
        except ValueError:
            problem = f"an address tsmeter cannot check ({one_line(address)})"
        if problem is not None:
            raise DeliveryError(f"refused target: {host} resolves to {problem}", retryable=False)
    if not addresses:
        raise DeliveryError(f"webhook: {host} resolves to no address", retryable=True)
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    netloc = parts.netloc.rpartition("@")[2]
    plain = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return WebhookTarget(plain, host, tuple(dict.fromkeys(addresses)), authorization)


def _pinned(base: type[http.client.HTTPConnection], target: WebhookTarget) -> Any:
    """``base`` connecting to the checked address when it talks to the target's host (not
    when a proxy is in between); TLS still verifies the certificate for the host name."""

    class Pinned(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.host.lower().rstrip(".") == target.host.rstrip("."):
                self._create_connection = self._to_checked_address

        @staticmethod
        def _to_checked_address(
            address: tuple[str, int], timeout: Any = None, source: Any = None
        ) -> socket.socket:
            failure: OSError | None = None
            for checked in target.addresses:  # in the resolver's order, as http.client does
                try:
                    return socket.create_connection((checked, address[1]), timeout, source)
                except OSError as exc:
                    failure = exc
            assert failure is not None  # check_target never gives an empty list
            raise failure

    return Pinned


class _PinnedHTTP(urllib.request.HTTPHandler):
    def __init__(self, target: WebhookTarget) -> None:
        super().__init__()
        self._connection = _pinned(http.client.HTTPConnection, target)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)


class _PinnedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, target: WebhookTarget) -> None:
        super().__init__()
        self._connection = _pinned(http.client.HTTPSConnection, target)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)  # the default context: certificates verified


def post_webhook(
    settings: NotifySettings, url: str, body: str, event_name: str, delivery_id: str
) -> int:
    """POST ``body`` to ``url`` with the tsmeter headers (signed when a secret is set) and
    Basic credentials from the URL's userinfo, after :func:`check_target`; return the HTTP
    status of a 2xx answer."""
    target = check_target(url, settings.allow_link_local)
    data = body.encode("utf-8")
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Tsmeter-Event": event_name,
        "X-Tsmeter-Delivery": delivery_id,
        "X-Tsmeter-Timestamp": str(timestamp),
    }
    if settings.webhook_secret:
        headers["X-Tsmeter-Signature"] = sign(settings.webhook_secret, data, timestamp)
    if target.authorization is not None:
        headers["Authorization"] = target.authorization
    request = urllib.request.Request(target.url, data=data, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect, _PinnedHTTP(target), _PinnedHTTPS(target))
    try:
        with opener.open(request, timeout=settings.webhook_timeout) as response:
            status = int(response.status)
            response.read(65536)
    except urllib.error.HTTPError as exc:
        status = exc.code
        text = _snippet(exc)
        retry_after = _retry_after(exc.headers.get("Retry-After"))
        retryable = status in (408, 425, 429) or status >= 500
        raise DeliveryError(
            f"HTTP {status}{': ' + text if text else ''}",
            retryable=retryable,
            retry_after=retry_after if retryable else None,
        ) from exc
    except urllib.error.URLError as exc:
        raise DeliveryError(f"webhook: {_describe(exc.reason)}", retryable=True) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"webhook: {_describe(exc)}", retryable=True) from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}: unexpected answer", retryable=False)
    return status


def _snippet(response: IO[bytes]) -> str:
    try:
        raw = response.read(_ERROR_BODY_LIMIT + 1)
    except (OSError, http.client.HTTPException):
        return ""
    text = raw.decode("utf-8", "replace").strip()
    if len(text) > _ERROR_BODY_LIMIT:
        text = text[:_ERROR_BODY_LIMIT] + "…"
    return one_line(text)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: ignored, the backoff applies


def _text(value: bytes | str) -> str:
    return one_line(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)


def _describe(exc: object) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, BaseException):
        return one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return one_line(str(exc))
