"""The two channels: one email over SMTP, one webhook POST. Each raises
:class:`DeliveryError` saying whether trying again may help; nothing else escapes.
"""

from __future__ import annotations

import http.client
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import IO, Any

from tsmeter.errors import TsmeterError
from tsmeter.notify.render import one_line
from tsmeter.notify.settings import NotifySettings
from tsmeter.notify.signing import sign

__all__ = ["DeliveryError", "build_email", "post_webhook", "send_email"]

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
    """Redirects are not followed: a signed POST goes only to the configured URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post_webhook(
    settings: NotifySettings, url: str, body: str, event_name: str, delivery_id: str
) -> int:
    """POST ``body`` to ``url`` with the tsmeter headers (signed when a secret is set);
    return the HTTP status of a 2xx answer."""
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
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=settings.webhook_timeout) as response:
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
