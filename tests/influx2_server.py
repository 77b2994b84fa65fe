"""A real InfluxDB 2.x for tests: the server named by ``TSMETER_TEST_INFLUXDB2_URL`` (with
``TSMETER_TEST_INFLUXDB2_TOKEN`` and ``TSMETER_TEST_INFLUXDB2_ORG``, a token allowed to create
buckets and tasks), else a testcontainers ``InfluxDb2Container("influxdb:2.7")``.

Where neither exists (no Docker daemon) the tests that need it skip with a one-line reason,
in CI too: there only the InfluxDB 1.x tests must run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["Influx2Server", "Unavailable", "influxdb2_server"]

IMAGE = "influxdb:2.7"  # pinned: `latest` is InfluxDB 3 now
ENV_URL = "TSMETER_TEST_INFLUXDB2_URL"


class Unavailable(Exception):
    """No InfluxDB 2.x server can be had here; the message says why, in one line."""


@dataclass(frozen=True)
class Influx2Server:
    """Where a test InfluxDB 2.x is and how to reach it."""

    url: str
    token: str = field(repr=False)
    org: str

    def store_url(self, bucket: str, **options: str) -> str:
        """The ``influxdb2://`` store URL of ``bucket`` on this server."""
        parts = urlsplit(self.url)
        query: dict[str, str] = {"org": self.org, "token": self.token}
        if parts.scheme == "https":
            query["https"] = "1"
        path = quote(bucket, safe="")
        return f"influxdb2://{parts.netloc}/{path}?{urlencode({**query, **options})}"

    def client(self) -> Any:
        """An influxdb-client InfluxDBClient for this server (close it after use)."""
        from influxdb_client.client.influxdb_client import InfluxDBClient

        return InfluxDBClient(url=self.url, token=self.token, org=self.org, timeout=60_000)

    def create_bucket(self, name: str) -> None:
        """Create a bucket with infinite retention."""
        with self.client() as client:
            client.buckets_api().create_bucket(bucket_name=name, org=self.org)

    def drop_bucket(self, name: str) -> None:
        """Delete a bucket and the tasks named after it (``tsmeter <bucket> ...``)."""
        with self.client() as client:
            tasks = client.tasks_api()
            for task in tasks.find_tasks(org=self.org) or []:
                if str(task.name).startswith(f"tsmeter {name} "):
                    tasks.delete_task(task.id)
            buckets = client.buckets_api()
            found = buckets.find_bucket_by_name(name)
            if found is not None:
                buckets.delete_bucket(found)


@contextmanager
def influxdb2_server() -> Iterator[Influx2Server]:
    """The server from the environment, else a container for the duration (raises
    :class:`Unavailable` when neither can be had)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield Influx2Server(
            url.rstrip("/"),
            os.environ.get("TSMETER_TEST_INFLUXDB2_TOKEN", ""),
            os.environ.get("TSMETER_TEST_INFLUXDB2_ORG", ""),
        )
        return
    try:
        from docker.errors import DockerException

        with warnings.catch_warnings():  # its readiness check warns about its own decorator
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.community.influxdb import InfluxDb2Container
    except ImportError as exc:
        raise Unavailable(f"no InfluxDB 2.x: set {ENV_URL}, or install testcontainers") from exc
    token, org = "tsmeter-test-token", "tsmeter"
    try:
        container = InfluxDb2Container(
            IMAGE, init_mode="setup", username="tsmeter", password="tsmeter-password",
            org_name=org, bucket="default", admin_token=token,
        )  # fmt: skip
        container.start()
    except DockerException as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise Unavailable(f"no InfluxDB 2.x: set {ENV_URL}, or run Docker ({first})") from exc
    try:
        yield Influx2Server(container.get_url(), token, org)
    finally:
        container.stop()
