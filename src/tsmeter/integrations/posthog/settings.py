"""PostHog settings: the project, the event names, groups and the mirror's limits, from the
environment. Shared by the mirror (capture) and the reader (query API).

The mirror is off unless a project API key is configured:

>>> PostHogSettings.from_env({}).enabled
False
>>> s = PostHogSettings.from_env({"TSMETER_POSTHOG_API_KEY": "phc_x",
...                               "TSMETER_POSTHOG_GROUPS": "org=company,team=team"})
>>> s.enabled, s.event_prefix, dict(s.groups), s.event_name("usage_recorded")
(True, 'metering', {'org': 'company', 'team': 'team'}, 'metering.usage_recorded')
>>> PostHogSettings.from_env({"TSMETER_POSTHOG_TIMEOUT": "soon"})
Traceback (most recent call last):
tsmeter.errors.ValidationError: TSMETER_POSTHOG_TIMEOUT: must be a number of seconds, got 'soon'
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from tsmeter.envvars import boolean as _bool
from tsmeter.envvars import integer as _int
from tsmeter.envvars import seconds as _float
from tsmeter.envvars import text as _text
from tsmeter.errors import ValidationError

__all__ = ["DEFAULT_HOST", "ENV", "PREFIX_PATTERN", "PostHogSettings", "parse_groups"]

#: PostHog Cloud (US) ingestion; EU projects use ``https://eu.i.posthog.com``.
DEFAULT_HOST = "https://us.i.posthog.com"
#: What an event prefix must look like: it goes into event names and HogQL string values.
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_GROUP_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SUBJECT_TYPE = re.compile(r"^[^\s=,]{1,256}$")
_PROJECT_ID = re.compile(r"^(?:[0-9]{1,20}|@current)$")
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
#: PostHog allows five group types per project.
MAX_GROUP_TYPES = 5
_APP_HOSTS = {
    "https://us.i.posthog.com": "https://us.posthog.com",
    "https://eu.i.posthog.com": "https://eu.posthog.com",
}

#: The environment variable of each setting.
ENV = {
    "api_key": "TSMETER_POSTHOG_API_KEY",
    "host": "TSMETER_POSTHOG_HOST",
    "event_prefix": "TSMETER_POSTHOG_EVENT_PREFIX",
    "groups": "TSMETER_POSTHOG_GROUPS",
    "include_metadata": "TSMETER_POSTHOG_INCLUDE_METADATA",
    "gzip": "TSMETER_POSTHOG_GZIP",
    "flush_interval": "TSMETER_POSTHOG_FLUSH_INTERVAL",
    "batch_size": "TSMETER_POSTHOG_BATCH_SIZE",
    "timeout": "TSMETER_POSTHOG_TIMEOUT",
    "sdk_retries": "TSMETER_POSTHOG_SDK_RETRIES",
    "retries": "TSMETER_POSTHOG_RETRIES",
    "backoff_base": "TSMETER_POSTHOG_BACKOFF_BASE",
    "backoff_max": "TSMETER_POSTHOG_BACKOFF_MAX",
    "buffer_size": "TSMETER_POSTHOG_BUFFER_SIZE",
    "queue_size": "TSMETER_POSTHOG_QUEUE_SIZE",
    "state_path": "TSMETER_POSTHOG_STATE",
    "personal_api_key": "TSMETER_POSTHOG_PERSONAL_API_KEY",
    "project_id": "TSMETER_POSTHOG_PROJECT_ID",
}

_SECRETS = ("api_key", "personal_api_key")


def _default_groups() -> Mapping[str, str]:
    return MappingProxyType({"org": "company"})


@dataclass(frozen=True, kw_only=True)
class PostHogSettings:
    """Where and how usage is mirrored to PostHog (and read back); validated on construction.

    ``api_key`` is the project API key (``phc_...``): without it the mirror is off.
    ``host`` is the ingestion host as given (a self-hosted URL is used unchanged).
    ``event_prefix`` starts every event name (``metering.usage_recorded``). ``groups``
    maps a subject type (and, for records of an org-scoped metric, ``org``) to a PostHog
    group type. The mirror buffers at most ``buffer_size`` events, sends them in batches
    of ``batch_size`` every ``flush_interval`` seconds, lets the SDK retry an upload
    ``sdk_retries`` times, then re-sends a failed event up to ``retries`` times after
    ``backoff_base * 2**(n-1)`` seconds (at most ``backoff_max``). ``state_path`` is the
    SQLite file of the mirror's journal (default: the Meter's state file).
    ``personal_api_key`` and ``project_id`` are for the query API (the reader).
    Example: ``PostHogSettings(api_key="phc_...", host="https://eu.i.posthog.com")``.
    """

    api_key: str | None = None
    host: str = DEFAULT_HOST
    event_prefix: str = "metering"
    groups: Mapping[str, str] = field(default_factory=_default_groups)
    include_metadata: bool = False
    gzip: bool = True
    flush_interval: float = 1.0
    batch_size: int = 500
    timeout: float = 10.0
    sdk_retries: int = 2
    retries: int = 10
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    buffer_size: int = 100_000
    queue_size: int = 10_000
    state_path: str | None = None
    personal_api_key: str | None = None
    project_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("api_key", "personal_api_key"):
            value = getattr(self, name)
            if value is not None and (not value or _CONTROL.search(value)):
                raise _bad(name, "must be non-empty, without spaces or control characters")
        object.__setattr__(self, "host", _check_host(self.host))
        if not isinstance(self.event_prefix, str) or not PREFIX_PATTERN.match(self.event_prefix):
            raise _bad(
                "event_prefix", f"must match {PREFIX_PATTERN.pattern}, got {self.event_prefix!r}"
            )
        object.__setattr__(self, "groups", MappingProxyType(_check_groups(dict(self.groups))))
        for name in ("flush_interval", "timeout", "backoff_base", "backoff_max"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise _bad(name, f"must be a number of seconds greater than 0, got {value!r}")
        if self.backoff_max < self.backoff_base:
            raise _bad("backoff_max", "must be at least TSMETER_POSTHOG_BACKOFF_BASE")
        for name, low in (
            ("batch_size", 1),
            ("buffer_size", 1),
            ("queue_size", 1),
            ("sdk_retries", 0),
            ("retries", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise _bad(name, f"must be an integer of at least {low}, got {value!r}")
        if self.state_path is not None and not self.state_path.strip():
            raise _bad("state_path", "must not be empty")
        if self.project_id is not None and not _PROJECT_ID.match(self.project_id):
            raise _bad("project_id", f"must be a number (or @current), got {self.project_id!r}")

    @property
    def enabled(self) -> bool:
        """Whether a project API key is configured (the mirror is off without one)."""
        return self.api_key is not None

    @property
    def app_host(self) -> str:
        """The host of PostHog's app API (the query API): PostHog Cloud's ingestion hosts
        map to their app host (``us.i.posthog.com`` → ``us.posthog.com``), others as given."""
        return _APP_HOSTS.get(self.host, self.host)

    def event_name(self, kind: str) -> str:
        """``{prefix}.{kind}``, e.g. ``metering.usage_recorded``."""
        return f"{self.event_prefix}.{kind}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> PostHogSettings:
        """Settings from ``TSMETER_POSTHOG_*`` variables (see :data:`ENV`); empty ones count as
        unset. ``overrides`` (field names) win over the environment.
        Example: ``PostHogSettings.from_env(flush_interval=0.2)``.
        """
        env = os.environ if environ is None else environ
        kinds: dict[str, Callable[[str, str], Any]] = {
            "groups": _groups_env,
            "include_metadata": _bool,
            "gzip": _bool,
            "flush_interval": _float,
            "timeout": _float,
            "backoff_base": _float,
            "backoff_max": _float,
            "batch_size": _int,
            "sdk_retries": _int,
            "retries": _int,
            "buffer_size": _int,
            "queue_size": _int,
        }
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV[f.name], "").strip()
            if raw:
                values[f.name] = kinds.get(f.name, _text)(ENV[f.name], raw)
        values.update(overrides)
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict with the keys masked (for ``posthog status``)."""
        shown: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["groups"] = dict(self.groups)
        for secret in _SECRETS:
            if shown[secret] is not None:
                shown[secret] = _mask(shown[secret])
        return shown

    def __repr__(self) -> str:
        """The settings with the API keys masked."""
        shown = self.describe()
        return f"PostHogSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def parse_groups(text: str, env: str = ENV["groups"]) -> dict[str, str]:
    """Parse ``org=company,team=team`` (``none`` for no groups) into a mapping.

    >>> parse_groups("org=company, team=team")
    {'org': 'company', 'team': 'team'}
    >>> parse_groups("none")
    {}
    """
    if text.strip().lower() == "none":
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        subject_type, sep, group_type = part.partition("=")
        if not sep:
            raise ValidationError(env, f"expected SUBJECT_TYPE=GROUP_TYPE, got {part.strip()!r}")
        key = subject_type.strip()
        if key in mapping:
            raise ValidationError(env, f"subject type {key!r} is mapped twice")
        mapping[key] = group_type.strip()
    return _check_groups(mapping, env)


def _check_groups(mapping: dict[str, str], env: str = ENV["groups"]) -> dict[str, str]:
    for subject_type, group_type in mapping.items():
        if not isinstance(subject_type, str) or not _SUBJECT_TYPE.match(subject_type):
            raise ValidationError(env, f"not a subject type: {subject_type!r}")
        if not isinstance(group_type, str) or not _GROUP_TYPE.match(group_type):
            raise ValidationError(
                env, f"group type must match {_GROUP_TYPE.pattern}, got {group_type!r}"
            )
    if len(set(mapping.values())) > MAX_GROUP_TYPES:
        raise ValidationError(env, f"PostHog allows at most {MAX_GROUP_TYPES} group types")
    return mapping


def _check_host(host: object) -> str:
    if not isinstance(host, str):
        raise _bad("host", f"must be an http:// or https:// URL, got {host!r}")
    text = host.strip().rstrip("/")
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or _CONTROL.search(text)
    ):
        raise _bad("host", f"must be an http:// or https:// URL without query, got {host!r}")
    return text


def _mask(secret: str) -> str:
    return f"{secret[:4]}***" if len(secret) > 8 else "***"


def _bad(name: str, problem: str) -> ValidationError:
    return ValidationError(ENV[name], problem)


def _groups_env(env: str, raw: str) -> dict[str, str]:
    return parse_groups(raw, env)
