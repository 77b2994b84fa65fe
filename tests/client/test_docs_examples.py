"""The curl, Python and Node examples of docs/clients.md, run against a real ``tsmeter
serve`` started here. The page fences them as text (tests/unit/test_docs.py runs blocks
without a server); this test takes each block after its ``<!-- example: NAME -->`` marker,
so the page cannot drift from what runs. Node runs where ``node`` is on the PATH; in CI it
must be."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.live import ROOT, LiveServer
from tests.conftest import in_ci
from tsmeter.client import Client

PAGE = ROOT / "docs" / "clients.md"
_EXAMPLE = re.compile(r"^<!-- example: ([\w-]+) -->\n```text\n(.*?)^```", re.M | re.S)


def examples() -> dict[str, str]:
    """Each marked example of the page by name."""
    return {m.group(1): m.group(2) for m in _EXAMPLE.finditer(PAGE.read_text("utf-8"))}


def test_the_page_marks_every_example() -> None:
    assert set(examples()) == {"curl", "python", "python-async", "node", "python-breakdown"}


@dataclass(frozen=True)
class Docs:
    """A server of the examples' own (their totals build on one another) that wants keys,
    and a key with the scopes the page asks for."""

    server: LiveServer
    key: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    with LiveServer(tmp_path_factory.mktemp("docs-serve"), auth=True) as live:
        live.tsmeter("metric", "define", "api_calls", "--aggregation-type", "count")
        yield Docs(live, live.create_key("ingest", "read"))


def _run(argv: list[str], server: Docs, cwd: Path) -> str:
    env = {
        **os.environ,
        "TSMETER_URL": server.url,
        "TSMETER_API_KEY": server.key,
        "PYTHONPATH": str(ROOT / "src"),
    }
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _documents(text: str) -> list[dict[str, object]]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def _total(server: Docs) -> int:
    with Client(server.url, server.key) as client:
        summary = client.get_usage_summary(
            "api_calls", "org", "org-1", "MONTHLY", at="2026-01-20T00:00:00Z"
        )
    return int(summary.total_quantity)


def test_curl(server: Docs, tmp_path: Path) -> None:
    if shutil.which("curl") is None and not in_ci():
        pytest.skip("curl is not installed")
    before = _total(server)
    out = _run(["bash", "-e", "-c", examples()["curl"]], server, tmp_path)
    summary = _documents(out)[-1]  # curl prints the two answers one after the other
    assert summary["totalQuantity"] == str(before + 1)
    _run(["bash", "-e", "-c", examples()["curl"]], server, tmp_path)  # the same id again
    assert _total(server) == before + 1


@pytest.mark.parametrize("name", ["python", "python-async"])
def test_python(server: Docs, tmp_path: Path, name: str) -> None:
    before = _total(server)
    script = tmp_path / "example.py"
    script.write_text(examples()[name])
    assert _run([sys.executable, str(script)], server, tmp_path).strip() == str(before + 1)


def test_python_breakdown(server: Docs, tmp_path: Path) -> None:
    """The breakdown and correction example, with an admin key, prints what it says; run
    again, the amend is the same correction (nothing changes)."""
    admin = Docs(server.server, server.server.create_key("admin"))
    script = tmp_path / "breakdown.py"
    script.write_text(examples()["python-breakdown"])
    for _ in range(2):
        lines = _run([sys.executable, str(script)], admin, tmp_path).splitlines()
        assert lines[0] == "AMEND 1200 1000"
        assert sorted(lines[1:-1]) == ["gpt-4o 1000", "gpt-4o-mini 300"]
        assert lines[-1] == "1"


def test_node(server: Docs, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        if in_ci():
            pytest.fail("CI needs node for the Node example of docs/clients.md")
        pytest.skip("node is not installed")
    before = _total(server)
    script = tmp_path / "record.mjs"
    script.write_text(examples()["node"])
    assert _run([node, str(script)], server, tmp_path).strip() == str(before + 1)
