"""Fixtures of the API tests: a real ``tsmeter serve`` over the embedded store or influxd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.server import Served


@pytest.fixture(params=["embedded", "influxdb"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """``tsmeter serve --no-auth`` on a new embedded store, or on a fresh influxd database
    (with its outbox and state file in ``tmp_path``)."""
    if request.param == "embedded":
        server = Served(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path, create=True)
    else:
        influxd, db = request.getfixturevalue("influx_db")
        url = f"influxdb://127.0.0.1:{influxd.port}/{db}?state={tmp_path / 'state.db'}"
        server = Served(url, tmp_path, root_args=("--outbox", str(tmp_path / "outbox.db")))
    with server:
        yield server
