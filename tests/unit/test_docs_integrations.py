"""The documented snippets that attach an integration, run as their readers run them.

tests/unit/test_docs.py runs every block without PostHog settings, so a snippet that
attaches a PostHog mirror to a meter from ``tsmeter.connect()`` would pass there and still
send every event twice for a reader whose environment sets ``TSMETER_POSTHOG_API_KEY`` (the
way the mirror is configured: connect() then attaches one itself). Here such pages run with
that environment, against a port nobody listens on; a second mirror is a ConflictError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_docs import PAGES, code_blocks, run_blocks
from tsmeter.errors import ConflictError

#: code that attaches a PostHog mirror by hand (a second Notifier on a meter adds nothing: its
#: delivery log keeps one delivery per alert, event, channel and target)
_ATTACHES = re.compile(r"PostHogMirror\(")


def _attaching_pages() -> list[Path]:
    found = []
    for page in PAGES:
        python = [code for language, code in code_blocks(page) if language == "python"]
        if any(_ATTACHES.search(code) for code in python):
            found.append(page)
    return found


@pytest.fixture
def posthog_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reader's environment with the PostHog mirror configured (an unused local port, short
    timeouts), in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TSMETER_STORE_URL", raising=False)
    monkeypatch.delenv("TSMETER_OUTBOX", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TSMETER_POSTHOG_API_KEY", "phc_reader")
    monkeypatch.setenv("TSMETER_POSTHOG_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("TSMETER_POSTHOG_TIMEOUT", "1")
    return tmp_path


def test_the_attaching_pages_are_found() -> None:
    """The PostHog page attaches a mirror by hand (else the test below checks nothing)."""
    assert any(p.name == "posthog.md" for p in _attaching_pages())


@pytest.mark.parametrize("page", _attaching_pages(), ids=lambda p: p.name)
def test_snippets_attach_nothing_twice_with_the_mirror_configured(
    page: Path, posthog_env: Path
) -> None:
    """Every page whose snippets attach an integration runs, in order, with the PostHog
    mirror configured in the environment: none attaches a second one."""
    run_blocks(page, posthog_env, frozenset({"python"}))


def test_a_snippet_without_mirror_false_would_attach_a_second(posthog_env: Path) -> None:
    """The check above can fail: the PostHog page's snippet without ``mirror=False`` meets
    the mirror connect() attached."""
    page = next(p for p in PAGES if p.name == "posthog.md")
    text = page.read_text("utf-8")
    assert "mirror=False)" in text
    edited = posthog_env / "posthog.md"
    edited.write_text(text.replace('connect("sqlite:///usage.db", mirror=False)',
                                   'connect("sqlite:///usage.db")'))  # fmt: skip
    assert edited.read_text() != text
    with pytest.raises(ConflictError):
        run_blocks(edited, posthog_env, frozenset({"python"}))
