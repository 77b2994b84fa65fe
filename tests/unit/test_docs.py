"""Every code block in README.md and docs/ runs: the documentation cannot say what the code no
longer does.

Blocks fenced as ``python`` run in order in one namespace per file; blocks fenced as ``sh``
run in bash with ``set -e`` (``tsmeter`` on the PATH); both in a fresh temporary directory
per file. Blocks fenced as ``text`` are not run: they show output, or commands that cannot run
inside a test (``make demo`` and ``make test``, which run this test; a server; Docker). Every
fence names one of these three languages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("**/*.md"))
PAGES = [README, *DOCS]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_RUNNABLE = {"python", "sh"}
# Repository paths named in prose must exist; the changelog and the benchmark diary name
# files as they were when the entry was written.
_HISTORICAL = {"CHANGELOG.md", "RESULTS.md"}
_REPO_PATH = re.compile(r"(?<![\w/.])((?:src/tsmeter|tools|tests|benchmarks)/[\w/.-]*\w)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_WHOLE_LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """The (language, code) of each fenced block of a Markdown file, in order."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(path.read_text("utf-8"))]


def run_blocks(
    path: Path, tmp_path: Path, languages: frozenset[str] = frozenset(_RUNNABLE)
) -> None:
    """Run the file's blocks in ``languages`` in order, in ``tmp_path``; fail on the first
    error."""
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for number, (language, code) in enumerate(code_blocks(path), 1):
        if language not in languages:
            continue
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


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, with tsmeter's default locations inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TSMETER_STORE_URL", raising=False)
    monkeypatch.delenv("TSMETER_OUTBOX", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def test_docs_exist_and_hold_only_known_fences() -> None:
    """There are docs, and every fence names a language this test runs or ``text``."""
    assert DOCS, "docs/ has no Markdown files"
    for path in PAGES:
        for language, _code in code_blocks(path):
            assert language in _RUNNABLE | {"text"}, f"{path.name}: fence {language!r}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path: Path, empty_dir: Path) -> None:
    """Each runnable block of the file succeeds, in order, from an empty directory."""
    run_blocks(path, empty_dir)


def test_readme_runs_twice_in_the_same_directory(empty_dir: Path) -> None:
    """The README's Python example can be run again on the store the first run left."""
    run_blocks(README, empty_dir, frozenset({"python"}))
    run_blocks(README, empty_dir, frozenset({"python"}))


def test_readme_is_short() -> None:
    """The README introduces; the rest lives in docs/."""
    lines = README.read_text("utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines"


def test_docs_are_of_a_readable_size() -> None:
    """No page grows past what a person reads: the generated CLI reference, the longest, is
    about 1,300 lines (an edit that once spliced a paragraph between every character of
    RESULTS.md made it 301,360)."""
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 5_000, f"{path.relative_to(ROOT)} has {lines} lines"


def test_cli_reference_is_the_generators_output() -> None:
    """docs/cli.md is every command's --help: regenerate with
    `.venv/bin/python -m tools.cli_reference docs/cli.md` when this fails."""
    committed = (ROOT / "docs" / "cli.md").read_text("utf-8")
    # in a fresh interpreter: click caches each command's help option on first use, so a test
    # that ran a command under another root would change what --help shows in this process
    fresh = subprocess.run(
        [sys.executable, "-m", "tools.cli_reference"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "TSMETER_STORE_URL"},
    )
    assert fresh.returncode == 0, fresh.stderr
    assert committed == fresh.stdout, "docs/cli.md is stale: run tools.cli_reference"


def test_cli_reference_names_every_command() -> None:
    """The generator walks the whole tree: every group of `tsmeter --help` has a section."""
    from tsmeter.cli.main import cli

    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    for name in cli.commands:
        assert f"\n## tsmeter {name}\n" in text, name


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_exist(path: Path) -> None:
    """Relative links lead to files, and repository paths named in the text exist."""
    text = path.read_text("utf-8")
    for target in _LINK.findall(text):
        if "://" not in target and not target.startswith("mailto:"):
            assert (path.parent / target).exists(), f"{path.name}: link to {target}"
    if path.name in _HISTORICAL:
        return
    for name in _REPO_PATH.findall(_WHOLE_LINK.sub("", text)):
        assert (ROOT / name).exists() or (ROOT / name.rstrip(".")).exists(), (
            f"{path.name}: {name} does not exist"
        )
