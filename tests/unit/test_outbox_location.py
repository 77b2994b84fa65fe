"""The default outbox file of a store: one per server, database, writer and state, named
without credentials, readable, and safe whatever the database is called."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.hostile import NASTY_NAMES, PIECES
from tsmeter.outbox.location import default_outbox_path, outbox_disabled


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$XDG_DATA_HOME in the test's directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    return tmp_path


def path(url: str) -> Path:
    """The default outbox of ``url``, which must have one."""
    found = default_outbox_path(url)
    assert found is not None
    return found


def test_a_network_store_has_a_readable_file_of_its_own(data_home: Path) -> None:
    """The name starts with server, port and database, under $XDG_DATA_HOME/tsmeter/outbox."""
    found = path("influxdb://u:pw@DB.Example:8086/metering?writer=web-1")
    assert found.parent == data_home / "tsmeter" / "outbox"
    assert found.name.startswith("db.example-8086-metering-") and found.suffix == ".db"


def test_two_databases_writers_or_servers_never_share_an_outbox() -> None:
    """Whatever names where the records go gives a file of its own."""
    urls = [
        "influxdb://h:8086/a", "influxdb://h:8086/b", "influxdb://h:8087/a",
        "influxdb://g:8086/a", "influxdbs://h:8086/a", "influxdb://h:8086/a?writer=w2",
        "influxdb://h:8086/a?state=/x/s.db", "influxdb://h:8086/a?rp=short",
        "influxdb2://h:8086/a?org=o1", "influxdb2://h:8086/a?org=o2",
    ]  # fmt: skip
    assert len({path(u) for u in urls}) == len(urls)


def test_credentials_and_connection_settings_do_not_move_the_file() -> None:
    """A new password or token, another timeout, or reordered parameters: the same file, so
    what the old settings left is delivered."""
    base = path("influxdb://h:8086/a?writer=w1&state=/x/s.db")
    for other in (
        "influxdb://user:secret@h:8086/a?writer=w1&state=/x/s.db",
        "influxdb://other:pw2@h:8086/a?state=/x/s.db&writer=w1&token=T&timeout=5&retries=1",
        "influxdb://H:8086/a?writer=w1&state=/x/s.db",
    ):
        assert path(other) == base
    assert "secret" not in str(path("influxdb://user:secret@h:8086/a?token=secret"))


@pytest.mark.parametrize("name", [*NASTY_NAMES, *PIECES, "../../etc/passwd", "a/b", "\n"])
def test_hostile_database_names_give_a_plain_file_name(name: str, data_home: Path) -> None:
    """Slashes, dots, quotes, newlines, unicode: the name is plain characters, in the folder."""
    found = path(f"influxdb://h:8086/{quote(name, safe='')}")
    assert found.parent == data_home / "tsmeter" / "outbox"
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in found.name)


def test_the_embedded_store_has_no_default_outbox() -> None:
    """The embedded store writes to a local file already: no outbox unless given a path."""
    for url in ("sqlite:///usage.db", "usage.db", "sqlite:///:memory:"):
        assert default_outbox_path(url) is None


def test_off_values() -> None:
    """False and "off" (any case) and its synonyms turn the outbox off; paths do not."""
    assert all(outbox_disabled(v) for v in (False, "off", "OFF", " none ", "false", "0", "no"))
    assert not any(outbox_disabled(v) for v in (None, True, "outbox.db", "offline.db", ""))
