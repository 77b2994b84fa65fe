"""The test helper that runs influxd: loopback only, restartable, stopped by PID."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.influx_server import InfluxServer

pytestmark = pytest.mark.influxdb


@pytest.fixture
def own_server(influxd: InfluxServer) -> Iterator[InfluxServer]:
    """A second influxd (same binary as the session's) that a test may stop and restart."""
    server = InfluxServer(influxd.binary).start()
    try:
        yield server
    finally:
        server.stop()


def listening_addresses(pid: int) -> set[str]:
    """The ``address:port`` of every TCP socket ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                address, port = cols[1].split(":")
                ip = (
                    ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                    if len(address) == 8
                    else address
                )
                found.add(f"{ip}:{int(port, 16)}")
    return found


def test_listens_only_on_loopback(own_server: InfluxServer) -> None:
    """influxd listens on exactly its HTTP and RPC ports, both on 127.0.0.1."""
    assert own_server.pid is not None
    assert listening_addresses(own_server.pid) == {
        f"127.0.0.1:{own_server.port}",
        f"127.0.0.1:{own_server.rpc_port}",
    }


def test_restart_keeps_data_and_ports(own_server: InfluxServer) -> None:
    """A restart (even after SIGKILL) brings back acknowledged writes on the same URL."""
    own_server.create_database("keep")
    assert own_server.write("keep", b"m v=1.5 1\n").status_code == 204
    url, first = own_server.url, own_server.pid
    own_server.kill()
    assert own_server.pid is None
    own_server.restart()
    assert own_server.url == url and own_server.pid not in (None, first)
    assert own_server.series("SELECT v FROM m", "keep") == [{"time": 1, "v": 1.5}]


def test_stop_ends_the_process_and_removes_files(own_server: InfluxServer) -> None:
    """stop() ends influxd by its PID and deletes its temporary directory."""
    pid, root = own_server.pid, own_server.root
    assert pid is not None and root is not None and root.exists()
    own_server.stop()
    assert own_server.pid is None and not root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_query_binds_parameters(influx_db: tuple[InfluxServer, str]) -> None:
    """Bind parameters travel as JSON, so a quote in a value is data, not InfluxQL."""
    server, db = influx_db
    assert server.write(db, b"m,t=a'\\ b\" v=2 1\n").status_code == 204
    rows = server.series("SELECT v FROM m WHERE t = $t", db, params={"t": "a' b\""})
    assert rows == [{"time": 1, "v": 2}]
