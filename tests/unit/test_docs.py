"""Every code block in docs/ runs: the documentation cannot say what the code no longer does.

Blocks fenced as ``python`` run in order in one namespace per file; blocks fenced as ``sh``
run in bash with ``set -e`` (``tsmeter`` on the PATH); both in a fresh temporary directory
per file. Blocks fenced as ``text`` (or without a language) show output and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("**/*.md"))
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_RUNNABLE = {"python", "sh"}


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """The (language, code) of each fenced block of a Markdown file, in order."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(path.read_text("utf-8"))]


def test_docs_exist_and_hold_only_known_fences() -> None:
    """There are docs, and every fence names a language this test runs or ``text``."""
    assert DOCS, "docs/ has no Markdown files"
    for path in DOCS:
        for language, _code in code_blocks(path):
            assert language in _RUNNABLE | {"text"}, f"{path.name}: fence {language!r}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each runnable block of the file succeeds, in order, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TSMETER_STORE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for number, (language, code) in enumerate(code_blocks(path), 1):
        if language == "python":
            exec(compile(code, f"{path.name}[block {number}]", "exec"), namespace)
        elif language == "sh":
            done = subprocess.run(
                ["bash", "-e", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{path.name} block {number}:\n{done.stdout}{done.stderr}"
