"""Fixtures shared by the Meter unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tsmeter
from tsmeter import Meter


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Meter]:
    """A meter on a fresh file with a COUNT metric ``api_calls`` and a SUM metric ``storage``."""
    with tsmeter.connect(f"sqlite:///{tmp_path / 'x.db'}", timezone="Europe/Paris") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.define_metric("storage", aggregation_type="SUM", unit="GB")
        yield meter
