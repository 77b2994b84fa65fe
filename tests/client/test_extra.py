"""Without httpx, importing tsmeter.client says which extra to install. Runs in a fresh
interpreter whose import system makes httpx missing (as tests/cli/test_extras.py does: httpx
is installed here and already imported by this process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.test_extras import _SHIM
from tests.client.live import ROOT


def test_importing_the_client_without_httpx_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(_SHIM, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}",
        "TSMETER_TEST_ABSENT": "httpx",
    }
    code = (
        "from tsmeter.errors import MissingExtraError\n"
        "try:\n"
        "    import tsmeter.client\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "the HTTP client needs the package 'httpx' (not installed): pip install 'tsmeter[client]'"
    )
