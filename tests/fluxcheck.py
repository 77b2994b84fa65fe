"""Flux syntax checks without a server: Flux's own parser (npm ``@influxdata/flux``, WebAssembly)
run by ``tests/flux_parse.cjs`` under Node.js.

``make test`` installs the package (``npm ci``). Where Node.js or the package is missing the
tests that need it skip with a one-line reason, except in CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "flux_parse.cjs"
PACKAGE = ROOT / "node_modules" / "@influxdata" / "flux" / "flux_bg.wasm"


@dataclass(frozen=True)
class Parsed:
    """What Flux's parser made of one source: its errors, and every string literal's value."""

    errors: list[str]
    strings: list[str]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(f"CI needs the Flux parser: {reason}", pytrace=False)
    pytest.skip(reason=reason)


def parse(sources: list[str]) -> list[Parsed]:
    """Parse each source with Flux's parser (one Node.js process for all of them)."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node not found (the Flux syntax check needs Node.js)")
    if not PACKAGE.exists():
        _unavailable("@influxdata/flux is not installed (run `npm ci` or `make test`)")
    done = subprocess.run(
        [str(node), str(SCRIPT)],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the Flux parser failed: {done.stderr.strip()[-2000:]}")
    return [Parsed(r["errors"], r["strings"]) for r in json.loads(done.stdout)]


def assert_valid(*sources: str) -> list[Parsed]:
    """Fail the test unless Flux's parser accepts every source."""
    results = parse(list(sources))
    for source, result in zip(sources, results, strict=True):
        assert not result.errors, f"invalid Flux: {result.errors}\n--- source ---\n{source}"
    return results
