"""PostHog's query API over HTTP: one HogQL query in, one answer out, every failure translated.

``POST {app_host}/api/projects/{project_id}/query/`` with ``Authorization: Bearer <personal
API key>`` and the body of :meth:`tsmeter.integrations.posthog.hogql.HogQLQuery.request`. Errors,
all
:class:`PostHogError` (a :class:`~tsmeter.errors.StorageUnavailableError`)::

    PostHogError                 unreachable, timed out, 5xx after retries, an odd answer
    ├── PostHogAuthError         401/403 (the personal API key), 404 (the project id)
    ├── PostHogQuotaError        402, or an answer that names a quota: the plan's quota is used
    ├── PostHogRateLimitError    429 still after the retries, or a Retry-After too long to wait
    └── PostHogQueryError        400, or an ``error`` in the answer: PostHog rejected the query

A 429 is retried after its ``Retry-After`` (seconds or an HTTP date; at most
``max_retry_wait`` seconds, at most ``retries`` times); timeouts, connection errors and 5xx
are retried with exponential backoff; other 4xx are not retried.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.integrations.posthog.hogql import HogQLQuery
from tsmeter.integrations.posthog.settings import ENV, PostHogSettings

__all__ = [
    "PostHogAuthError",
    "PostHogError",
    "PostHogQueryError",
    "PostHogQuotaError",
    "PostHogRateLimitError",
    "QueryClient",
    "QueryResult",
    "retry_after_seconds",
]


class PostHogError(StorageUnavailableError):
    """PostHog's query API could not answer (unreachable, timed out, failing, odd answer)."""


class PostHogAuthError(PostHogError):
    """PostHog refused the personal API key (HTTP 401/403) or does not know the project."""


class PostHogQuotaError(PostHogError):
    """PostHog refused the query because a quota of the plan is used up (HTTP 402)."""


class PostHogRateLimitError(PostHogError):
    """PostHog kept answering 429 (too many queries); ``retry_after`` is its last hint."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PostHogQueryError(PostHogError):
    """PostHog rejected the query itself (HTTP 400, or an ``error`` in the answer)."""


@dataclass(frozen=True)
class QueryResult:
    """One answer of the query API: ``columns`` and ``rows`` (lists, in column order).

    ``has_more`` is PostHog's own hint; the reader pages by key whatever it says.

    >>> list(QueryResult(("a", "b"), [[1, 2]]).dicts())
    [{'a': 1, 'b': 2}]
    """

    columns: tuple[str, ...]
    rows: list[list[Any]]
    has_more: bool = False

    def dicts(self) -> Iterator[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=False))


def retry_after_seconds(header: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent.

    >>> retry_after_seconds("2"), retry_after_seconds(None), retry_after_seconds("soon")
    (2.0, None, None)
    """
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _detail(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text.strip()[:300] or str(response.reason or "")
    if isinstance(doc, dict):
        for key in ("detail", "error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])[:300]
    return str(doc)[:300]


class QueryClient:
    """One keep-alive HTTP session to one project's query API.

    ``refresh`` is PostHog's cache mode (``force_blocking``: never a cached answer),
    ``timeout`` the seconds one request may take. Example:
    ``QueryClient(settings).run(HogQLQuery("SELECT 1 LIMIT 1"))``.
    """

    def __init__(
        self,
        settings: PostHogSettings,
        *,
        refresh: str = "force_blocking",
        timeout: float = 120.0,
        retries: int = 5,
        max_retry_wait: float = 60.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.personal_api_key:
            raise ValidationError(
                ENV["personal_api_key"],
                "not set: reading from PostHog needs a personal API key with the query:read scope",
            )
        if not settings.project_id:
            raise ValidationError(ENV["project_id"], "not set: reading from PostHog needs it")
        self.settings = settings
        self.refresh = refresh
        self.timeout = timeout
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.url = f"{settings.app_host}/api/projects/{settings.project_id}/query/"
        self._session = session or requests.Session()
        self._own_session = session is None
        self._sleep = sleep

    def close(self) -> None:
        """Close the HTTP session (if this client made it)."""
        if self._own_session:
            self._session.close()

    def run(self, query: HogQLQuery) -> QueryResult:
        """Send one query; retry 429s, timeouts and 5xx; translate every failure."""
        body = query.request(refresh=self.refresh)
        headers = {"Authorization": f"Bearer {self.settings.personal_api_key}"}
        delay = 1.0
        where = f"PostHog query API at {self.url}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._session.post(
                    self.url, json=body, headers=headers, timeout=self.timeout
                )
            except requests.Timeout as exc:
                failure = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
            except requests.RequestException as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status == 200:
                    return self._result(response)
                if status == 429:
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                    self._rate_limited(where, attempt, last, wait)
                    self._sleep(wait if wait is not None else delay * (1 + random.random()))
                    delay = min(delay * 2, self.max_retry_wait)
                    continue
                if status < 500:
                    raise self._refusal(status, response)
                failure = f"HTTP {status}: {_detail(response)}"
            if last:
                raise PostHogError(f"{where} failed after {attempt + 1} attempts: {failure}")
            self._sleep(min(delay * (1 + random.random()), self.max_retry_wait))
            delay = min(delay * 2, self.max_retry_wait)
        raise AssertionError("unreachable")

    def _rate_limited(self, where: str, attempt: int, last: bool, wait: float | None) -> None:
        """Raise if a 429 should not be waited out (too long a wait, or no attempts left)."""
        if wait is not None and wait > self.max_retry_wait:
            raise PostHogRateLimitError(
                f"{where} is rate limiting queries (HTTP 429) and asks to wait {wait:g} s, "
                f"more than {self.max_retry_wait:g} s: try again later",
                wait,
            )
        if last:
            raise PostHogRateLimitError(
                f"{where} kept rate limiting queries (HTTP 429) after {attempt + 1} attempts "
                "(PostHog allows about 240 queries a minute and 3 at once per project): "
                "try again later",
                wait,
            )

    def _refusal(self, status: int, response: requests.Response) -> PostHogError:
        detail = _detail(response)
        project = self.settings.project_id
        if status in (401, 403):
            return PostHogAuthError(
                f"PostHog refused the personal API key for project {project} (HTTP {status}: "
                f"{detail}); check {ENV['personal_api_key']} (a personal API key with the "
                f"query:read scope, not the phc_ project key) and {ENV['project_id']}"
            )
        if status == 402 or "quota" in detail.lower():
            return PostHogQuotaError(
                f"PostHog refused the query: the project's quota is used up (HTTP {status}: "
                f"{detail})"
            )
        if status == 404:
            return PostHogAuthError(
                f"PostHog does not know project {project} at {self.settings.app_host} "
                f"(HTTP 404); check {ENV['project_id']} and {ENV['host']}"
            )
        if status == 400:
            return PostHogQueryError(f"PostHog rejected the query (HTTP 400): {detail}")
        return PostHogError(f"PostHog query failed (HTTP {status}): {detail}")

    @staticmethod
    def _result(response: requests.Response) -> QueryResult:
        try:
            doc = response.json()
        except ValueError:
            raise PostHogError("PostHog answered the query with text that is not JSON") from None
        if not isinstance(doc, dict):
            raise PostHogError(f"PostHog answered the query with a {type(doc).__name__}")
        if doc.get("error"):
            raise PostHogQueryError(f"PostHog could not run the query: {doc['error']}")
        rows, columns = doc.get("results"), doc.get("columns")
        if not isinstance(rows, list) or not isinstance(columns, list):
            raise PostHogError("PostHog's answer to the query has no 'results' and 'columns'")
        return QueryResult(tuple(str(c) for c in columns), rows, bool(doc.get("hasMore")))
