"""Notification targets: which webhook URLs and email addresses a threshold may name, which
network addresses a webhook may reach, and how a target is shown without its secrets.

A webhook URL is http(s), ASCII, at most 2,048 characters, without whitespace or control
characters, with a host and a port from 1 to 65535. Loopback and private addresses are
allowed (local receivers are legitimate); link-local addresses (169.254.0.0/16, fe80::/10)
and cloud metadata endpoints (fd00:ec2::254, 100.100.100.200, metadata.google.internal, ...)
are refused unless ``TSMETER_NOTIFY_ALLOW_LINK_LOCAL`` is true. An email field holds one
address of at most 254 characters; a threshold names at most 50.

>>> check_webhook_url("https://hooks.example.com/t?token=abc")
'https://hooks.example.com/t?token=abc'
>>> check_webhook_url("http://169.254.169.254/latest/meta-data/")
Traceback (most recent call last):
tsmeter.errors.ValidationError: notifyWebhook: must not point to a link-local or cloud \
metadata address (169.254.169.254); set TSMETER_NOTIFY_ALLOW_LINK_LOCAL=true to allow it
>>> mask_url("https://bot:hunter2@hooks.example.com/t?token=abc&team=ops")
'https://bot:***@hooks.example.com/t?token=***&team=***'
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from tsmeter.errors import ValidationError

__all__ = [
    "ALLOW_LINK_LOCAL_ENV",
    "MAX_EMAILS",
    "MAX_EMAIL_LENGTH",
    "MAX_URL_LENGTH",
    "address_problem",
    "check_email",
    "check_emails",
    "check_webhook_url",
    "link_local_allowed",
    "mask_target",
    "mask_url",
]

MAX_URL_LENGTH = 2048
MAX_EMAIL_LENGTH = 254  # RFC 5321: the longest forward path, less its angle brackets
MAX_EMAILS = 50
ALLOW_LINK_LOCAL_ENV = "TSMETER_NOTIFY_ALLOW_LINK_LOCAL"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Host names of cloud metadata services (compared lower-case, without a trailing dot).
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
     "instance-data.ec2.internal"}
)  # fmt: skip
#: Metadata addresses outside the link-local ranges (AWS over IPv6, Alibaba Cloud).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)

_WEBHOOK = "notifyWebhook"
_EMAILS = "notifyEmails"
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_TOKENISH = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_.~-]{16,}")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def link_local_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``TSMETER_NOTIFY_ALLOW_LINK_LOCAL`` allows link-local and metadata targets.

    >>> link_local_allowed({}), link_local_allowed({"TSMETER_NOTIFY_ALLOW_LINK_LOCAL": "yes"})
    (False, True)
    """
    raw = (os.environ if environ is None else environ).get(ALLOW_LINK_LOCAL_ENV, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(ALLOW_LINK_LOCAL_ENV, f"must be true or false, got {_shown(raw)}")


def address_problem(address: IPAddress, allow_link_local: bool = False) -> str | None:
    """Why a webhook must not connect to ``address`` (None: it may).

    >>> address_problem(ipaddress.ip_address("10.0.0.7")) is None
    True
    >>> address_problem(ipaddress.ip_address("::ffff:169.254.169.254"))
    'a link-local or cloud metadata address (::ffff:a9fe:a9fe)'
    """
    inner = address
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address
    if inner.is_unspecified or inner.is_multicast:
        return f"an unspecified or multicast address ({address})"
    if isinstance(inner, ipaddress.IPv4Address) and inner == ipaddress.IPv4Address(-1 + 2**32):
        return f"the broadcast address ({address})"
    if not allow_link_local and (inner.is_link_local or inner in METADATA_ADDRESSES):
        return f"a link-local or cloud metadata address ({address})"
    return None


def _host_address(host: str) -> IPAddress | None:
    """The address a host names literally, including the legacy IPv4 forms that the system's
    resolver accepts (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _bad(problem: str) -> ValidationError:
    return ValidationError(_WEBHOOK, problem)


def check_webhook_url(value: object, *, allow_link_local: bool | None = None) -> str:
    """Return ``value`` if it is an acceptable webhook URL (see the module docstring), else
    raise ValidationError naming ``notifyWebhook``. The URL is never quoted in the error: it
    may carry a token. ``allow_link_local`` defaults to :func:`link_local_allowed`."""
    if not isinstance(value, str):
        raise _bad(f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_URL_LENGTH:
        raise _bad(f"must be at most {MAX_URL_LENGTH} characters, got {len(value)}")
    if not value.isascii():
        raise _bad("must be ASCII: percent-encode the path and give the host in its xn-- form")
    if _UNSAFE.search(value):
        raise _bad("must not contain spaces or control characters (CR, LF, NUL, ...)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _bad(
            "is not a valid URL (bad port or bracketed host); ports are 1 to 65535"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise _bad("must be an http:// or https:// URL")
    if port == 0:
        raise _bad("port must be from 1 to 65535")
    if parts.netloc.count("@") > 1:
        raise _bad("has more than one '@' before the host: percent-encode it as %40")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _bad("must name a host")
    address = _host_address(host)
    if address is None:
        if (
            "[" in parts.netloc
            or len(host) > 253
            or not all(map(_LABEL.fullmatch, host.split(".")))
        ):
            raise _bad("host must be a DNS name (letters, digits, '-', '.') or an IP address")
        if host in METADATA_HOSTS and not _allowed(allow_link_local):
            raise _bad(f"must not point to a cloud metadata host ({host}); {_HOW}")
        return value
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise _bad("an IPv6 zone (%...) is not supported")
    problem = address_problem(address, allow_link_local=_allowed(allow_link_local))
    if problem is not None:
        raise _bad(
            f"must not point to {problem}" + (f"; {_HOW}" if "link-local" in problem else "")
        )
    return value


_HOW = f"set {ALLOW_LINK_LOCAL_ENV}=true to allow it"


def _allowed(flag: bool | None) -> bool:
    return link_local_allowed() if flag is None else flag


def check_email(value: object, field: str = _EMAILS) -> str:
    """Return ``value`` if it is one plain email address (``local@domain``, ASCII, at most 254
    characters, no display name, no second address), else raise ValidationError.

    >>> check_email("ops@example.com")
    'ops@example.com'
    >>> check_email("ops@example.com, cfo@example.com")
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: notifyEmails: one address per entry (give the option \
again for each), got 'ops@example.com, cfo@example.com'
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_EMAIL_LENGTH:
        problem = f"an address is at most {MAX_EMAIL_LENGTH} characters, got {len(value)}"
        raise ValidationError(field, problem)
    if _CONTROL.search(value):
        raise ValidationError(field, f"must not contain control characters, got {_shown(value)}")
    if any(sep in value for sep in ",; ") or value.count("@") > 1:
        problem = f"one address per entry (give the option again for each), got {_shown(value)}"
        raise ValidationError(field, problem)
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError(field, f"not an email address: {_shown(value)}")
    if not value.isascii():
        raise ValidationError(
            field, f"must be ASCII (xn-- form for the domain), got {_shown(value)}"
        )
    labels = domain.lower().split(".")
    if len(local) > 64 or not _ATEXT.fullmatch(local) or not all(map(_LABEL.fullmatch, labels)):
        raise ValidationError(field, f"not an email address: {_shown(value)}")
    return value


def check_emails(values: Sequence[object], field: str = _EMAILS) -> list[str]:
    """Check every address (see :func:`check_email`) and that there are at most 50.

    >>> check_emails(["a@example.com", "b@example.com"])
    ['a@example.com', 'b@example.com']
    """
    if len(values) > MAX_EMAILS:
        raise ValidationError(field, f"at most {MAX_EMAILS} addresses, got {len(values)}")
    return [check_email(v, field) for v in values]


def mask_url(url: str) -> str:
    """``url`` for display: a password in it, every query value, the fragment and path
    segments that look like tokens (16+ letters and digits) replaced by ``***``. Never raises.

    >>> mask_url("https://hooks.slack.com/services/T0AB12CD/B0CD34EF/x9Y8z7W6v5U4t3S2r1Q0")
    'https://hooks.slack.com/services/T0AB12CD/B0CD34EF/***'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}{':***' if colon else ''}@{hostport}"
        path = "/".join("***" if _TOKENISH.fullmatch(s) else s for s in parts.path.split("/"))
        query = "&".join(
            f"{pair.partition('=')[0]}={'***' if pair.partition('=')[2] else ''}"
            if "=" in pair else pair
            for pair in parts.query.split("&")
        ) if parts.query else ""  # fmt: skip
        fragment = "***" if parts.fragment else ""
        shown = urlunsplit((parts.scheme, netloc, path, query, fragment))
    except ValueError:
        return "(an invalid URL)"
    return _escaped(shown)


def mask_target(target: str) -> str:
    """A notification target for display: a URL through :func:`mask_url`, an email as is
    (with control characters escaped).

    >>> mask_target("ops@example.com"), mask_target("http://u:p@127.0.0.1:8080/h")
    ('ops@example.com', 'http://u:***@127.0.0.1:8080/h')
    """
    return mask_url(target) if "://" in target else _escaped(target)


def _escaped(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _shown(value: str, limit: int = 60) -> str:
    """``value`` quoted for an error message, shortened: hostile input makes no huge error."""
    if len(value) > limit:
        return f"{value[: limit // 2]!r}... ({len(value)} characters)"
    return repr(value)
