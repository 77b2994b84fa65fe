"""``tsmeter serve`` without the ``api`` extra names the install in one line, and the rest of
the CLI (its help included) works without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_extras import run_without


@pytest.mark.parametrize("module", ["fastapi", "uvicorn", "prometheus_client"])
def test_serve_without_the_api_extra_names_it(tmp_path: Path, module: str) -> None:
    """Each package of the extra, missing, is named with ``pip install 'tsmeter[api]'``."""
    done = run_without(tmp_path, module, ["--store", "u.db", "--create", "serve", "--no-auth"])
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"Error: the HTTP API (tsmeter serve) needs the package {module!r} (not installed): "
        "pip install 'tsmeter[api]'"
    ]


def test_the_cli_needs_no_api_extra(tmp_path: Path) -> None:
    """Help and other commands run with fastapi missing."""
    assert run_without(tmp_path, "fastapi", ["serve", "--help"]).returncode == 0
    done = run_without(tmp_path, "fastapi", ["--store", "u.db", "--create", "metric", "list"])
    assert done.returncode == 0, done.stderr
