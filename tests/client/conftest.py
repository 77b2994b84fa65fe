"""One real ``tsmeter serve`` process for the client tests (see tests/client/live.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.client.live import LiveServer


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The server, on an embedded store of its own, for the whole session."""
    with LiveServer(tmp_path_factory.mktemp("serve")) as server:
        yield server


@pytest.fixture
def key() -> str:
    """A metric key no other test uses (the server is shared), hostile on purpose: the
    client escapes it into the path (``/`` as ``%2F``) and the query."""
    return f'calls/{uuid.uuid4().hex[:8]} "é"?#&%2F+'
