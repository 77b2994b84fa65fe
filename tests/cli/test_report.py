"""``tsmeter report``: its numbers against an independent computation with decimal, hostile
names escaped, the empty cases, and the file it writes."""

from __future__ import annotations

import os
import random
import re
import stat
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from tests.cli.conftest import Cli, one_line_error
from tests.cli.test_extras import run_without
from tsmeter import connect
from tsmeter.cli.main import cli
from tsmeter.domain import PeriodType
from tsmeter.metering.meter import Meter
from tsmeter.reporting import chart_count, gather, render

PARIS = ZoneInfo("Europe/Paris")
# a week across the change to summer time (Sunday 29 March 2026 has 23 hours in Paris)
START = datetime(2026, 3, 26, tzinfo=PARIS)
END = datetime(2026, 4, 2, tzinfo=PARIS)
SUBJECTS = ("acme", "globex", "initech", "hooli")
# key, aggregation, precision
METRICS = (
    ("calls", "COUNT", 0),
    ("spend", "SUM", 2),
    ("latency", "AVG", 1),
    ("peak", "MAX", 3),
    ("low", "MIN", 0),
    ("level", "LAST", 2),
)


@dataclass(frozen=True)
class Rec:
    """A record as the test made it."""

    metric: str
    subject: str
    quantity: Decimal
    at: datetime


def _records(seed: int = 7) -> list[Rec]:
    """Records of every metric at distinct instants, some outside the report's range."""
    rng = random.Random(seed)
    out = []
    begin = (START - timedelta(days=2)).astimezone(UTC)  # instants: arithmetic in UTC
    span = int((END - begin).total_seconds()) + 2 * 86_400
    seconds = rng.sample(range(span), 1200)
    for i, offset in enumerate(seconds):
        key, _, precision = METRICS[i % len(METRICS)]
        scale = Decimal(10) ** -precision
        quantity = Decimal(1) if key == "calls" else Decimal(rng.randint(-500, 90_000)) * scale
        out.append(Rec(key, rng.choice(SUBJECTS), quantity, begin + timedelta(seconds=offset)))
    return out


def _expected(recs: list[Rec], aggregation: str, precision: int) -> Decimal:
    """The aggregation over ``recs`` computed with decimal directly."""
    quantities = [r.quantity for r in recs]
    if aggregation == "COUNT":
        return Decimal(len(recs))
    if aggregation == "SUM":
        return sum(quantities, Decimal(0))
    if aggregation == "AVG":
        with localcontext(prec=80):
            mean = sum(quantities, Decimal(0)) / len(recs)
            return mean.quantize(Decimal(10) ** -precision, rounding=ROUND_HALF_EVEN)
    if aggregation == "MAX":
        return max(quantities)
    if aggregation == "MIN":
        return min(quantities)
    return max(recs, key=lambda r: r.at).quantity  # LAST


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Meter, list[Rec]]:
    """A Paris-time embedded store with six metrics (one per aggregation) and their records."""
    meter = connect(f"sqlite:///{tmp_path / 'report.db'}", timezone="Europe/Paris", mirror=False)
    for key, aggregation, precision in METRICS:
        meter.define_metric(key, aggregation_type=aggregation, precision=precision, unit="u")
    recs = _records()
    meter.record_batch(
        [
            {
                "metric_key": r.metric,
                "subject_type": "org",
                "subject_id": r.subject,
                "quantity": r.quantity,
                "timestamp": r.at,
            }
            for r in recs
        ]
    )
    meter.aggregate("HOURLY")
    yield meter, recs
    meter.close()


def _in(recs: list[Rec], key: str, start: datetime, end: datetime) -> list[Rec]:
    return [r for r in recs if r.metric == key and start <= r.at < end]


@pytest.mark.parametrize(
    ("start", "end", "period"),
    [
        (START, END, None),  # daily buckets from daily summaries
        (START + timedelta(hours=10), END - timedelta(hours=3), PeriodType.DAILY),  # from hours
        (START, END, PeriodType.HOURLY),
        (START, END, PeriodType.WEEKLY),  # weeks cut at the range's ends
    ],
)
def test_report_values_equal_decimal_over_the_records(
    filled: tuple[Meter, list[Rec]], start: datetime, end: datetime, period: PeriodType | None
) -> None:
    """Every bucket, every subject and every total equals the metric's aggregation computed
    with decimal over the test's own records, in local periods (a 23-hour day included)."""
    meter, recs = filled
    report = gather(meter, start, end, period=period, top=len(SUBJECTS))
    assert not report.widened
    assert [m.metric.key for m in report.metrics] == sorted(k for k, _, _ in METRICS)
    page = render(report)
    for item in report.metrics:
        key, aggregation = item.metric.key, item.metric.aggregation_type.value
        precision = item.metric.precision
        mine = _in(recs, key, start, end)
        assert item.records == len(mine)
        assert item.total == _expected(mine, aggregation, precision)
        # buckets: local calendar periods, clipped to the range
        assert item.buckets[0].start == start and item.buckets[-1].end == end
        for bucket in item.buckets:
            inside = _in(recs, key, bucket.start, bucket.end)
            assert bucket.records == len(inside), (key, bucket.start)
            empty_is_zero = aggregation in ("COUNT", "SUM")
            want = _expected(inside, aggregation, precision) if inside or empty_is_zero else None
            assert bucket.value == want, (key, bucket.start)
        if item.period is PeriodType.DAILY:
            days = [b.start.date() for b in item.buckets]
            assert days[0] == start.date() and len(set(days)) == len(days)
        # subjects
        by_subject: dict[str, list[Rec]] = defaultdict(list)
        for r in mine:
            by_subject[r.subject].append(r)
        want_subjects = {s: _expected(rs, aggregation, precision) for s, rs in by_subject.items()}
        assert {s.subject_id: s.value for s in item.subjects} == want_subjects
        values = [s.value for s in item.subjects]
        assert values == sorted(values, reverse=True)
        # the page shows the exact digits of the total and of each subject
        assert item.total is not None
        for value in [item.total, *want_subjects.values()]:
            assert f">{format(value, ',f')}<" in page, (key, value)


def test_the_23_hour_day_is_one_bucket(filled: tuple[Meter, list[Rec]]) -> None:
    """Sunday 29 March 2026 in Paris: one daily bucket of 23 hours, and 167 hourly ones in
    the week."""
    meter, _ = filled
    daily = gather(meter, START, END, metrics=["calls"]).metrics[0].buckets
    lengths = {b.start.date(): b.end.astimezone(UTC) - b.start.astimezone(UTC) for b in daily}
    assert lengths[date(2026, 3, 29)] == timedelta(hours=23)
    hourly = gather(meter, START, END, metrics=["calls"], period=PeriodType.HOURLY)
    assert len(hourly.metrics[0].buckets) == 7 * 24 - 1


def test_a_range_off_whole_hours_is_widened_and_said(filled: tuple[Meter, list[Rec]]) -> None:
    """--from 10:30 starts the report at 10:00, and the page says it was widened."""
    meter, _ = filled
    report = gather(meter, START + timedelta(hours=10, minutes=30), END)
    assert report.widened and report.start == START + timedelta(hours=10)
    assert "was widened" in render(report)


def test_threshold_usage_and_alerts(filled: tuple[Meter, list[Rec]]) -> None:
    """A daily threshold's usage per subject and day equals decimal over the records; the
    limit is drawn; an alert raised in the range is on the timeline and in its table."""
    meter, recs = filled
    limit = Decimal("1234.56")
    threshold = meter.create_threshold("spend", "org", limit, period_type="DAILY")
    meter.evaluate_thresholds(now=datetime(2026, 3, 30, 12, tzinfo=PARIS))
    alerts = meter.list_alerts(metric_key="spend")
    assert alerts, "the seeded data should put someone over 80 % of the limit"
    report = gather(meter, START, END, metrics=["spend"])
    (item,) = report.metrics[0].thresholds
    assert item.threshold.id == threshold.id
    for usage in item.usage:
        assert usage.start is not None and usage.end is not None
        inside = [r for r in _in(recs, "spend", usage.start, usage.end)
                  if r.subject == usage.subject_id]  # fmt: skip
        assert usage.value == _expected(inside, "SUM", 2)
    days = {u.start for u in item.usage}
    assert len(days) == 7
    assert {a.id for a in report.metrics[0].alerts} == {a.id for a in alerts}
    page = render(report)
    assert page.count('data-chart="threshold"') == 1
    assert page.count('data-chart="alerts"') == 1
    assert f"Limit <strong>{format(limit, ',f')}</strong>" in page
    exceeded = [u for u in item.usage if u.value >= limit]
    assert len(item.exceeded) == len(exceeded)
    assert page.count('<span class="exceeded">exceeded</span>') >= len(exceeded)


class _Collect(HTMLParser):
    """Every start tag and every piece of text of a page (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


HOSTILE = (
    '<script>alert("x")</script>',
    "a\"b'c&amp;<b>bold</b>",
    "</svg><img src=x onerror=alert(1)>",
    "line\u2028break\u202eevil",
    "ünïcødé 😀 👨‍👩‍👧 $\\frac{1}{2}$",
    "-->--!><!--",
)


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    """Subject ids, a metric's name and unit with markup, quotes, newlines (names and units
    may hold them; subject ids may not), line separators, bidi marks, emoji and math text
    come out as text: no element they could open, each shown
    whole in the tables and as a visible label in the charts."""
    meter = connect(f"sqlite:///{tmp_path / 'h.db'}", mirror=False)
    meter.define_metric(
        "calls", aggregation_type="COUNT", name="<i>n</i>\nline", unit='"><script>\nu'
    )
    at = datetime(2026, 3, 3, tzinfo=UTC)
    meter.record_batch(
        [
            {"metric_key": "calls", "subject_type": "org<x>", "subject_id": s, "timestamp": at}
            for s in HOSTILE
        ]
    )
    meter.create_threshold("calls", "org<x>", 1, period_type="MONTHLY")
    meter.evaluate_thresholds(now=at)
    page = render(gather(meter, at - timedelta(days=2), at + timedelta(days=2)))
    meter.close()
    parsed = _Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags and "i" not in parsed.tags
    assert "b" not in parsed.tags
    assert re.search(r"<script|<img", page, re.I) is None
    text = "".join(parsed.text)
    for name in HOSTILE:
        assert name in text, name  # in the tables, whole
    assert "<i>n</i>\nline" in text and '"><script>\nu' in text
    # the charts' labels: hidden characters shown as escapes, math text left as it is
    assert "line\\u2028break\\u202eevil" in text
    assert '"><script>\\u000au' in text  # the unit on the usage chart's axis
    assert "$\\frac{1}{2}$" in text


def test_no_metrics_is_a_clear_page(run: Cli) -> None:
    """An empty store: a page that says there is nothing to report, no chart."""
    result = run.ok("report", "--from", "2026-03-01", "--to", "2026-04-01", "-o", "r.html")
    assert "0 metrics, 0 charts" in result.stdout
    page = Path("r.html").read_text("utf-8")
    assert "No metrics are defined in this store" in page
    assert "<svg" not in page


def test_no_records_is_a_clear_page(run: Cli) -> None:
    """A metric and a threshold without usage: each says so, no chart, no crash."""
    run.ok("metric", "define", "api_calls", "--aggregation-type", "count")
    run.ok("threshold", "create", "api_calls", "org", "100")
    run.ok("report", "--from", "2026-03-01", "--to", "2026-04-01", "-o", "r.html")
    page = Path("r.html").read_text("utf-8")
    assert "No usage recorded in this period." in page
    assert "No usage in its windows." in page
    assert "<svg" not in page
    with connect(run.store, mirror=False) as meter:
        assert chart_count(gather(meter, _utc(3), _utc(4))) == 0


def _utc(month: int) -> datetime:
    return datetime(2026, month, 1, tzinfo=UTC)


def test_the_file_is_private_and_replaced_whole(run: Cli) -> None:
    """A new report is 0600; an existing file keeps its mode; no partial file is left."""
    run.ok("report", "-o", "new.html")
    assert stat.S_IMODE(os.stat("new.html").st_mode) == 0o600
    Path("old.html").write_text("old")
    os.chmod("old.html", 0o640)
    run.ok("report", "-o", "old.html")
    assert stat.S_IMODE(os.stat("old.html").st_mode) == 0o640
    assert Path("old.html").read_text("utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in Path().iterdir() if p.name.endswith(".partial")) == []


def test_the_default_range_is_the_current_month(run: Cli) -> None:
    """Without --from/--to the report covers the calendar month containing now."""
    now = datetime.now(UTC)
    doc = run.json("report", "-o", "r.html")
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    assert doc["from"] == first.isoformat()
    assert doc["to"] > now.isoformat()


def test_bad_arguments_are_one_line_errors(run: Cli) -> None:
    """An unknown metric and a reversed range are named in one line."""
    assert "nope" in run.fails("report", "--metric", "nope", "-o", "r.html")
    assert "--to" in run.fails("report", "--from", "2026-04-01", "--to", "2026-03-01")
    assert not Path("r.html").exists()


def test_an_unwritable_output_is_one_line(run: Cli, tmp_path: Path) -> None:
    """A directory that does not exist: one line naming the file."""
    line = one_line_error(
        CliRunner().invoke(cli, ["--store", run.store, "report", "-o", "no/such/dir/r.html"])
    )
    assert "no/such/dir/r.html" in line


def test_the_command_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    """Without the report extra: one Error line naming the install, status 1, no file."""
    done = run_without(
        tmp_path, "matplotlib", ["--store", "u.db", "--create", "report", "-o", "r.html"]
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "Error: tsmeter report needs the package 'matplotlib' (not installed): "
        "pip install 'tsmeter[report]'"
    ]
    assert not (tmp_path / "r.html").exists()


def test_periods_are_those_of_the_timezone_option(run: Cli) -> None:
    """--timezone Asia/Kathmandu (+05:45): the range and the days are Kathmandu's."""
    run.ok("metric", "define", "api_calls", "--aggregation-type", "count")
    for at in ("2026-03-01T18:14:00Z", "2026-03-01T18:15:00Z"):  # 23:59 and 00:00 local
        run.ok("usage", "record", "api_calls", "org", "o", "--timestamp", at)
    options = ["--store", run.store, "--format", "json", "--timezone", "Asia/Kathmandu"]
    result = run.runner.invoke(
        cli,
        [
            *options,
            "report",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-04",
            "--period",
            "daily",
            "-o",
            "k.html",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"from": "2026-03-01T00:00:00+05:45"' in result.stdout
    page = Path("k.html").read_text("utf-8")
    # one record on Sunday 1 March, one on Monday 2 March, local time
    assert "<td>Sun 01 Mar 2026</td><td class=n>1</td>" in page
    assert "<td>Mon 02 Mar 2026</td><td class=n>1</td>" in page
    assert "<td>Tue 03 Mar 2026</td><td class=n>0</td><td class=n>0</td>" in page


def _held_gb_hours(readings: list[tuple[datetime, Decimal]], lo: datetime, hi: datetime,
                   precision: int) -> Decimal:  # fmt: skip
    """A subject's readings held over ``[lo, hi)`` in GB-hours, from first principles: the
    reading in force at each second of the span (the one before ``lo`` carried in)."""
    total = Decimal(0)
    ordered = sorted(readings)
    for i, (at, value) in enumerate(ordered):
        until = ordered[i + 1][0] if i + 1 < len(ordered) else hi
        begin, end = max(at, lo), min(until, hi)
        if end > begin:
            total += value * Decimal((end - begin).total_seconds()) / 3600
    return total.quantize(Decimal(10) ** -precision, rounding=ROUND_HALF_EVEN)


def test_record_level_metrics_are_measured_from_their_records(tmp_path: Path) -> None:
    """A report of UNIQUE_COUNT and TIME_WEIGHTED_SUM metrics: each bucket, subject and the
    total equal a brute force over the records (distinct users per subject, GB-hours held
    with the reading before a bucket carried in), across the 23-hour day in Paris."""
    meter = connect(f"sqlite:///{tmp_path / 'r.db'}", timezone="Europe/Paris", mirror=False)
    meter.define_metric("active_users", aggregation_type="UNIQUE_COUNT", unique_property="user")
    meter.define_metric("storage", aggregation_type="TIME_WEIGHTED_SUM", precision=3, unit="GB")
    rng = random.Random(11)
    begin = (START - timedelta(days=2)).astimezone(UTC)
    users: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    gauges: dict[str, list[tuple[datetime, Decimal]]] = defaultdict(list)
    batch = []
    for offset in rng.sample(range(9 * 86_400), 600):
        at, subject = begin + timedelta(seconds=offset), rng.choice(SUBJECTS)
        if offset % 2:
            user = f"u{rng.randint(1, 12)}"
            users[subject].append((at, user))
            batch.append({"metric_key": "active_users", "subject_type": "org",
                          "subject_id": subject, "timestamp": at,
                          "metadata": {"user": user}})  # fmt: skip
        else:
            gb = Decimal(rng.randint(0, 500_000)) / 1000
            gauges[subject].append((at, gb))
            batch.append({"metric_key": "storage", "subject_type": "org", "subject_id": subject,
                          "quantity": gb, "timestamp": at})  # fmt: skip
    meter.record_batch(batch)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    report = gather(meter, START, END, now=now)
    days = [START + timedelta(days=i) for i in range(8)]
    days = [d.replace(tzinfo=None).replace(tzinfo=PARIS) for d in days]  # local midnights
    by_key = {m.metric.key: m for m in report.metrics}

    unique = by_key["active_users"]
    for bucket, (lo, hi) in zip(unique.buckets, pairwise(days), strict=True):
        want = sum(len({u for at, u in users[s] if lo <= at < hi}) for s in SUBJECTS)
        assert bucket.value == Decimal(want), lo
    per_subject = {s: len({u for at, u in users[s] if START <= at < END}) for s in SUBJECTS}
    got = {u.subject_id: u.value for u in unique.subjects}
    assert got == {s: Decimal(n) for s, n in per_subject.items() if n}
    assert unique.total == Decimal(sum(per_subject.values()))

    storage = by_key["storage"]
    for bucket, (lo, hi) in zip(storage.buckets, pairwise(days), strict=True):
        want = sum((_held_gb_hours(gauges[s], lo, hi, 12) for s in SUBJECTS), Decimal(0)).quantize(
            Decimal("0.001"), rounding=ROUND_HALF_EVEN
        )
        assert bucket.value == want, lo
    total = sum((_held_gb_hours(gauges[s], START, END, 12) for s in SUBJECTS), Decimal(0))
    assert storage.total == total.quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
    assert days[4].astimezone(UTC) - days[3].astimezone(UTC) == timedelta(hours=23)
    page = render(report)
    assert "active_users" in page and "GB × hour" in page
    meter.close()
