"""The demo's HTML report opened in headless Chromium (Debian's ``chromium``): every chart is
drawn, there are as many as the data calls for, and the page asks nothing of any network.

Chromium is driven over the DevTools protocol by playwright's Python package, pointed at
/usr/bin/chromium (playwright's own browser builds are never downloaded). Without Chromium
the test skips with the reason, except in CI (``CI=true``), where it fails.

``TSMETER_REPORT_SCREENSHOT=1`` also writes the screenshot kept in the docs,
docs/images/report.png (the header and the first metric's section); otherwise the
screenshot goes to the test's temporary directory only.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import in_ci
from tsmeter import connect
from tsmeter.cli.main import cli

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "report.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARCH, APRIL = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)

# per chart: the number of <path> elements with a non-empty d and a drawn (non-zero) box,
# the number of <text> elements with text, and the SVG's size on the page
_CHARTS_JS = """
() => [...document.querySelectorAll('figure.chart')].map(figure => {
  const svg = figure.querySelector('svg');
  if (!svg) return {kind: figure.dataset.chart, svg: false};
  const drawn = [...svg.querySelectorAll('path')].filter(p => {
    if (!(p.getAttribute('d') || '').trim()) return false;
    const box = p.getBBox();
    return box.width > 0 && box.height > 0;
  });
  const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim());
  const rect = svg.getBoundingClientRect();
  return {kind: figure.dataset.chart, svg: true, paths: drawn.length, texts: texts.length,
          width: rect.width, height: rect.height};
})
"""


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI needs Chromium for the report test: {reason}", pytrace=False)
    pytest.skip(reason)


def _expected_charts(url: str) -> dict[str, int]:
    """The charts the demo's data calls for, counted from the store directly: usage and top
    subjects for each metric with records in March, one per threshold whose windows have
    usage, one alert timeline per metric with alerts."""
    counts = {"usage": 0, "subjects": 0, "threshold": 0, "alerts": 0}
    with connect(url, mirror=False) as meter:
        for metric in meter.list_metrics():
            if meter.get_usage(metric.key, start=MARCH, end=APRIL, limit=1):
                counts["usage"] += 1
                counts["subjects"] += 1
            for rule in meter.list_thresholds(metric.key):
                subject = None if rule.subject_id == "*" else rule.subject_id
                if meter.get_usage(metric.key, rule.subject_type, subject, limit=1):
                    counts["threshold"] += 1
            if meter.list_alerts(metric_key=metric.key):
                counts["alerts"] += 1
    return counts


def test_the_demo_report_draws_in_chromium(tmp_path: Path) -> None:
    """Run the demo on an embedded store, write its report, open it in headless Chromium:
    each chart's SVG has drawn paths and text, the chart count per kind matches the data,
    no request leaves the file, and a screenshot is taken."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found (install Debian's chromium: make chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed ({exc}): pip install -e '.[dev]'")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    connect(url, mirror=False).close()
    runner = CliRunner()
    demo = runner.invoke(cli, ["--store", url, "demo", "--records", "20000", "--month", "2026-03"])
    assert demo.exit_code == 0, demo.output
    page_file = tmp_path / "report.html"
    made = runner.invoke(
        cli,
        ["--store", url, "report", "--from", "2026-03-01", "--to", "2026-04-01",
         "-o", str(page_file)],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    expected = _expected_charts(url)
    assert expected["usage"] == 5 and expected["threshold"] >= 3 and expected["alerts"] >= 2

    requests: list[str] = []
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1100, "height": 1400},
        )
        try:
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()
            page.goto(page_file.as_uri(), wait_until="load")
            charts: list[dict[str, Any]] = page.evaluate(_CHARTS_JS)
            resources = page.evaluate("performance.getEntriesByType('resource').length")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            if os.environ.get("TSMETER_REPORT_SCREENSHOT") == "1":
                first = page.locator("#metric-1").bounding_box()
                assert first is not None
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(
                    path=str(DOCS_SCREENSHOT),
                    full_page=True,
                    clip={"x": 0, "y": 0, "width": 1100,
                          "height": first["y"] + first["height"] + 16},
                )  # fmt: skip
        finally:
            context.close()

    kinds: dict[str, int] = {}
    for chart in charts:
        kinds[chart["kind"]] = kinds.get(chart["kind"], 0) + 1
    assert kinds == {k: v for k, v in expected.items() if v}
    for chart in charts:
        assert chart["svg"], chart
        assert chart["paths"] > 0, chart  # bars, lines, markers, axes: drawn with a size
        assert chart["texts"] > 2, chart  # a title and tick labels
        assert chart["width"] > 300 and chart["height"] > 100, chart
    assert requests == [page_file.as_uri()], requests  # the document itself, nothing else
    assert resources == 0
    assert (tmp_path / "report.png").stat().st_size > 50_000
