"""Notification settings: SMTP, webhook signing and retry policy, from the environment.

>>> s = NotifySettings.from_env({"TSMETER_SMTP_HOST": "mail.example.com",
...                              "TSMETER_SMTP_FROM": "alerts@example.com"})
>>> s.smtp_port, s.smtp_security, s.retries
(587, 'starttls', 8)
>>> NotifySettings.from_env({"TSMETER_SMTP_PORT": "x"})
Traceback (most recent call last):
tsmeter.errors.ValidationError: TSMETER_SMTP_PORT: must be an integer, got 'x'
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from email.utils import parseaddr
from typing import Any, Literal, cast

from tsmeter.domain.targets import ALLOW_LINK_LOCAL_ENV
from tsmeter.envvars import boolean as _bool
from tsmeter.envvars import integer as _int
from tsmeter.envvars import seconds as _float
from tsmeter.envvars import text as _text
from tsmeter.errors import ValidationError

__all__ = ["ENV", "NotifySettings", "Security"]

Security = Literal["starttls", "ssl", "none"]
_SECURITIES = ("starttls", "ssl", "none")
_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: The environment variable of each setting.
ENV = {
    "smtp_host": "TSMETER_SMTP_HOST",
    "smtp_port": "TSMETER_SMTP_PORT",
    "smtp_security": "TSMETER_SMTP_SECURITY",
    "smtp_user": "TSMETER_SMTP_USER",
    "smtp_password": "TSMETER_SMTP_PASSWORD",
    "smtp_from": "TSMETER_SMTP_FROM",
    "smtp_timeout": "TSMETER_SMTP_TIMEOUT",
    "smtp_ca_file": "TSMETER_SMTP_CA_FILE",
    "webhook_secret": "TSMETER_WEBHOOK_SECRET",
    "webhook_timeout": "TSMETER_WEBHOOK_TIMEOUT",
    "retries": "TSMETER_NOTIFY_RETRIES",
    "backoff_base": "TSMETER_NOTIFY_BACKOFF_BASE",
    "backoff_max": "TSMETER_NOTIFY_BACKOFF_MAX",
    "concurrency": "TSMETER_NOTIFY_CONCURRENCY",
    "poll_interval": "TSMETER_NOTIFY_POLL_INTERVAL",
    "allow_link_local": ALLOW_LINK_LOCAL_ENV,
}


@dataclass(frozen=True, kw_only=True)
class NotifySettings:
    """How notifications are sent and retried; validated on construction.

    ``smtp_port`` defaults by ``smtp_security`` (starttls 587, ssl 465, none 25).
    ``smtp_ca_file`` adds a CA bundle to trust (a private or test CA). Without
    ``webhook_secret`` webhooks are sent unsigned. A failed attempt is retried up to
    ``retries`` times, after ``backoff_base * 2**(n-1)`` seconds (at most ``backoff_max``,
    less a random jitter of up to half). Webhooks to link-local and cloud metadata addresses
    are refused unless ``allow_link_local`` (``TSMETER_NOTIFY_ALLOW_LINK_LOCAL``).
    Example: ``NotifySettings(smtp_host="localhost", smtp_from="alerts@example.com",
    smtp_security="none")``.
    """

    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    smtp_timeout: float = 10.0
    smtp_ca_file: str | None = None
    webhook_secret: str | None = None
    webhook_timeout: float = 10.0
    retries: int = 8
    backoff_base: float = 5.0
    backoff_max: float = 600.0
    concurrency: int = 4
    poll_interval: float = 30.0
    allow_link_local: bool = False

    def __post_init__(self) -> None:
        if self.smtp_security not in _SECURITIES:
            problem = f"must be one of starttls, ssl, none, got {self.smtp_security!r}"
            raise _bad("smtp_security", problem)
        if self.smtp_port is None:
            object.__setattr__(self, "smtp_port", _DEFAULT_PORTS[self.smtp_security])
        elif not 0 < self.smtp_port < 65536:
            raise _bad("smtp_port", f"must be between 1 and 65535, got {self.smtp_port}")
        for name in ("smtp_host", "smtp_user", "smtp_password", "smtp_from", "webhook_secret"):
            value = getattr(self, name)
            if value is not None and (not value or _CONTROL.search(value)):
                raise _bad(name, "must be non-empty and free of control characters")
        if (self.smtp_user is None) != (self.smtp_password is None):
            missing = "smtp_password" if self.smtp_user else "smtp_user"
            raise _bad(missing, "TSMETER_SMTP_USER and TSMETER_SMTP_PASSWORD go together")
        if self.smtp_from is not None and "@" not in parseaddr(self.smtp_from)[1]:
            raise _bad("smtp_from", f"not an email address: {self.smtp_from!r}")
        if self.smtp_host is not None and self.smtp_from is None:
            raise _bad("smtp_from", "required when TSMETER_SMTP_HOST is set")
        for name in ("smtp_timeout", "webhook_timeout", "backoff_base", "backoff_max",
                     "poll_interval"):  # fmt: skip
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise _bad(name, f"must be greater than 0, got {getattr(self, name)}")
        if self.backoff_max < self.backoff_base:
            raise _bad("backoff_max", "must be at least TSMETER_NOTIFY_BACKOFF_BASE")
        if self.retries < 0:
            raise _bad("retries", f"must be 0 or more, got {self.retries}")
        if self.concurrency < 1:
            raise _bad("concurrency", f"must be 1 or more, got {self.concurrency}")

    @property
    def email_enabled(self) -> bool:
        """Whether an SMTP server is configured."""
        return self.smtp_host is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> NotifySettings:
        """Settings from ``TSMETER_*`` variables (see :data:`ENV`); empty ones count as unset.

        ``overrides`` (field names) win over the environment.
        Example: ``NotifySettings.from_env(retries=2)``.
        """
        env = os.environ if environ is None else environ
        kinds: dict[str, Callable[[str, str], Any]] = {
            "smtp_port": _int, "retries": _int, "concurrency": _int,
            "smtp_timeout": _float, "webhook_timeout": _float, "backoff_base": _float,
            "backoff_max": _float, "poll_interval": _float, "smtp_security": _security,
            "allow_link_local": _bool,
        }  # fmt: skip
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV[f.name], "").strip()
            if raw:
                values[f.name] = kinds.get(f.name, _text)(ENV[f.name], raw)
        values.update(overrides)
        return cls(**values)

    def __repr__(self) -> str:
        """The settings with the password and the webhook secret masked."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("smtp_password", "webhook_secret"):
            if shown[secret] is not None:
                shown[secret] = "***"
        return f"NotifySettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _bad(name: str, problem: str) -> ValidationError:
    return ValidationError(ENV[name], problem)


def _security(env: str, raw: str) -> Security:
    value = raw.lower()
    if value not in _SECURITIES:
        raise ValidationError(env, f"must be one of starttls, ssl, none, got {raw!r}")
    return cast(Security, value)
