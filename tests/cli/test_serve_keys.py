"""``tsmeter serve`` never answers without checking keys unless told to (--no-auth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tsmeter.cli.context as context
from tsmeter.cli.main import cli


def test_serve_refuses_a_store_without_keys_unless_no_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Meter wired without a key store (no bootstrap path does that today) must not turn
    into a server that lets every request through: serve stops with one line instead."""
    real = context.connect

    def keyless(*args: Any, **kwargs: Any) -> Any:
        meter = real(*args, **kwargs)
        meter.api_keys = None
        return meter

    monkeypatch.setattr(context, "connect", keyless)
    store = str(tmp_path / "s.db")
    result = CliRunner().invoke(cli, ["--store", store, "--create", "serve", "--port", "1"])
    assert result.exit_code == 1, result.output
    assert "keeps no API keys" in result.output
