"""Every dashboard query, as Grafana would send it, against a real InfluxDB holding summaries
with the integer fields (``count``, ``units_sum``, ``units_min``, ``units_max``, ``units_last``)
written by line protocol, in UTC and in a meter's zone; the numbers each panel shows are
checked against Python's ``decimal`` over the same summaries.

InfluxQL runs against the session's influxd 1.x; Flux against InfluxDB 2.x where one is
available (skips with the reason otherwise)."""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests import grafana_macros
from tests.influx2_server import Influx2Server
from tests.influx_server import InfluxServer
from tools import grafana
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder, decode_tag, encode_point
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.domain import AggregationType, MetricDefinition, RecordRow
from tsmeter.ports import EventRow

A = AggregationType
# every aggregation type, precisions 0 to 12, a hostile key, and one key in two scopes
TIER = [{"name": "tier"}]
METRICS = [
    MetricDefinition(key="api_calls", aggregation_type=A.COUNT, unit="calls", precision=0,
                     dimensions=[*TIER, {"name": "region"}]),
    MetricDefinition(key="cents", aggregation_type=A.SUM, unit="EUR", precision=2,
                     dimensions=TIER),
    MetricDefinition(key="corrections", aggregation_type=A.SUM, unit="min", precision=6),
    MetricDefinition(key="latency", aggregation_type=A.AVG, unit="ms", precision=3,
                     dimensions=TIER),
    MetricDefinition(key="storage_gb", aggregation_type=A.MAX, unit="GB", precision=0),
    MetricDefinition(key="temperature", aggregation_type=A.MIN, unit="°C", precision=1,
                     dimensions=TIER),
    MetricDefinition(key="balance", aggregation_type=A.LAST, unit="credits", precision=4,
                     dimensions=TIER),
    MetricDefinition(key="o'k $summaries/[[x]] \\", aggregation_type=A.SUM, unit="u",
                     precision=12, dimensions=TIER),
    MetricDefinition(key="cents", aggregation_type=A.MAX, unit="EUR", precision=2, org_id="o2",
                     dimensions=TIER),
]  # fmt: skip
#: dimension values that are syntax in line protocol, InfluxQL or Grafana, and no value
TIERS = ["gold", "a b,c=d", 'say "hi"', "back\\", "⧵x", "$tier [[y]]", None]
SUBJECTS = [("org", "acme"), ("org", "globex"), ("user", "o'hara $x")]
ZONES = {"usage_daily": timedelta(0), "usage_daily.Europe/Paris": timedelta(hours=-1)}
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 6
NS = 1_000_000_000


@dataclass(frozen=True)
class Summary:
    measurement: str
    metric: MetricDefinition
    subject: tuple[str, str]
    start: datetime
    count: int
    units: list[int]  # the records' units (sum, min, max, last are derived from them)


def make_summaries() -> list[Summary]:
    rng = random.Random(21)
    out = []
    for measurement, offset in ZONES.items():
        for metric in METRICS:
            for subject in SUBJECTS:
                for day in range(DAYS):
                    if rng.random() < 0.2:
                        continue  # no records that day
                    n = rng.randint(1, 40)
                    top = 10 ** (metric.precision + 3)
                    units = [rng.randint(-top // 10, top) for _ in range(n)]
                    start = DAY0 + timedelta(days=day) + offset
                    out.append(Summary(measurement, metric, subject, start, n, units))
    return out


SUMMARIES = make_summaries()


@dataclass(frozen=True)
class Raw:
    """A raw record written for the "usage by dimension" panels."""

    metric: MetricDefinition
    subject: tuple[str, str]
    at: datetime
    tier: str | None
    units: int


def make_raw() -> list[Raw]:
    rng = random.Random(24)
    out = []
    tick = 0
    for metric in METRICS:
        if not metric.dimensions:
            continue
        for subject in SUBJECTS:
            for _ in range(25):
                tick += 1  # every point at its own time: none collapses
                at = DAY0 + timedelta(hours=rng.randint(0, 24 * DAYS - 1),
                                      microseconds=tick)  # fmt: skip
                top = 10 ** (metric.precision + 3)
                out.append(Raw(metric, subject, at, rng.choice(TIERS),
                               rng.randint(-top // 10, top)))  # fmt: skip
    return out


RAW_RECORDS = make_raw()


def raw_lines(raw: list[Raw]) -> bytes:
    """The raw records as the store's encoder writes them (tags dim.<name>)."""
    encoder = UsageEncoder("usage", writer="w1")
    for metric in METRICS:
        encoder.know(metric.key, metric.org_id, metric.dimension_names)
    rows = [
        RecordRow(f"raw-{i}", r.metric.key, *r.subject, r.metric.org_id, r.units,
                  int(r.at.timestamp()) * NS + r.at.microsecond * 1000,
                  json.dumps({} if r.tier is None else {"tier": r.tier, "region": "eu"}), None)
        for i, r in enumerate(raw)
    ]  # fmt: skip
    return encoder.encode(rows)


def lines(summaries: list[Summary]) -> bytes:
    points = []
    for s in summaries:
        tags = {"metric": s.metric.key, "subject_type": s.subject[0], "subject_id": s.subject[1],
                "org": s.metric.org_id or ""}  # fmt: skip
        ts = int(s.start.timestamp()) * NS
        fields = {"count": s.count, "units_sum": sum(s.units), "units_min": min(s.units),
                  "units_max": max(s.units), "units_last": s.units[-1],
                  "last_ts": ts + 1}  # fmt: skip
        points.append(encode_point(s.measurement, tags, fields, ts))
    # threshold events: evaluated long after the window they concern
    for i, (subject_type, subject_id) in enumerate(SUBJECTS):
        data = {"level": "EXCEEDED", "actualValue": "12.50", "thresholdValue": "10.00",
                "percentage": 125.0, "periodStart": "2026-03-01T00:00:00Z",
                "periodEnd": "2026-04-01T00:00:00Z", "action": "NOTIFY"}  # fmt: skip
        for metric in METRICS:
            tags = {"event": "threshold.exceeded", "metric": metric.key,
                    "subject_type": subject_type, "subject_id": subject_id,
                    "org": metric.org_id or ""}  # fmt: skip
            ts = int(datetime(2026, 4, 3, tzinfo=UTC).timestamp()) * NS + i
            points.append(encode_point("metering_events", tags, {"data": json.dumps(data)}, ts))
    return "".join(p + "\n" for p in points).encode()


# -- the expected numbers: Python's decimal over the same records ----------------------------
def usage(metric: MetricDefinition, group: list[Summary]) -> Decimal:
    """The metric's usage over summaries, from the records' units, in exact decimals."""
    one = Decimal(10) ** -metric.precision
    records = [u for s in sorted(group, key=lambda s: s.start) for u in s.units]
    agg = metric.aggregation_type
    if agg is A.COUNT:
        return Decimal(len(records))
    if agg is A.SUM:
        return sum((Decimal(u) for u in records), Decimal(0)) * one
    if agg is A.AVG:
        return sum((Decimal(u) for u in records), Decimal(0)) * one / len(records)
    if agg is A.MAX:
        return Decimal(max(records)) * one
    if agg is A.MIN:
        return Decimal(min(records)) * one
    return Decimal(records[-1]) * one  # LAST: one subject's group, by time


def assert_shows(value: Any, expected: Decimal, metric: MetricDefinition, where: object) -> None:
    """A number as InfluxDB returned it equals the exact decimal: exactly for integers and
    for one division of an integer by 10**precision (correctly rounded) while the units fit a
    float's 53 bits; within a few ulps for an average (two divisions) or more units (a float
    shows at most 17 digits: Grafana displays floats)."""
    units = abs(expected) * 10**metric.precision
    if metric.aggregation_type is A.AVG or units >= 2**53:
        assert math.isclose(value, float(expected), rel_tol=1e-13), (where, value, expected)
    else:
        assert value == float(expected), (where, value, expected)
        if expected == expected.to_integral_value() and metric.precision == 0:
            assert isinstance(value, int), (where, value)


def matching(measurement: str, metric: MetricDefinition, subjects: list[tuple[str, str]]
             ) -> list[Summary]:  # fmt: skip
    return [
        s for s in SUMMARIES
        if s.measurement == measurement and s.metric is metric and s.subject in subjects
    ]  # fmt: skip


def metric_of(panel: dict[str, Any]) -> MetricDefinition | None:
    """The catalog metric a summaries panel reads (panels are generated in catalog order, 3
    per metric; the "by dimension" panels follow them)."""
    if panel["id"] > 3 * len(METRICS):
        return None
    return METRICS[(panel["id"] - 1) // 3] if "units" in json.dumps(panel["targets"]) or (
        "count" in panel["targets"][0]["query"] and "summaries" in panel["targets"][0]["query"]
    ) else None  # fmt: skip


GENERATED = grafana.dashboards(METRICS)


def names(kind: str) -> list[str]:
    return [n for n, d in GENERATED.items() if grafana_macros.language(d) == kind]


# -- InfluxQL on influxd 1.x -----------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded_db(influxd: InfluxServer) -> Iterator[tuple[InfluxServer, str]]:
    name = f"grafana{os.getpid()}"
    influxd.create_database(name)
    try:
        answer = influxd.write(name, lines(SUMMARIES) + raw_lines(RAW_RECORDS))
        assert answer.status_code == 204, answer.text
        yield influxd, name
    finally:
        influxd.drop_database(name)


def influxql_series(server: InfluxServer, db: str, query: str) -> list[dict[str, Any]]:
    answer = server.query(query, db=db)
    found = []
    for result in answer["results"]:
        for series in result.get("series", []):
            for values in series["values"]:
                found.append({**series.get("tags", {}),
                              **dict(zip(series["columns"], values, strict=True))})  # fmt: skip
    return found


@pytest.mark.parametrize("name", names("influxql"))
@pytest.mark.parametrize("measurement", list(ZONES))
def test_influxql_panels_show_each_metrics_own_aggregation(
    loaded_db: tuple[InfluxServer, str], name: str, measurement: str
) -> None:
    """The summaries variable lists the UTC and the zone's measurements; with either chosen,
    every panel's numbers are its metric's aggregation over exactly those summaries, scaled to
    the metric's precision: per day, per subject (top ten) and over the range (one subject)."""
    server, db = loaded_db
    dashboard = GENERATED[name]
    multi = grafana_macros.multi_flags(dashboard)

    def run_variable(query: str, values: grafana_macros.Values) -> list[str]:
        rows = influxql_series(server, db, grafana_macros.influxql(query, values, multi))
        return sorted({str(row.get("name", row.get("value", row.get("tagKey"))))
                       for row in rows})  # fmt: skip

    values = grafana_macros.resolve(dashboard, run_variable)
    listed = run_variable(grafana_macros.variables(dashboard)["summaries"]["query"], values)
    assert set(ZONES) <= set(listed)
    values["summaries"] = [measurement]
    chosen = SUBJECTS if multi["subject"] else [SUBJECTS[0]]
    if not multi["subject"]:
        values["subject_type"], values["subject"] = [SUBJECTS[0][0]], [SUBJECTS[0][1]]
    else:
        values["subject_type"] = sorted({t for t, _ in SUBJECTS})
        values["subject"] = sorted({s for _, s in SUBJECTS})
    checked = 0
    for panel in dashboard["panels"]:
        (target,) = panel["targets"]
        sent = grafana_macros.influxql(target["query"], values, multi)
        rows = influxql_series(server, db, sent)
        assert rows, f"{name} panel {panel['title']!r}: no rows for\n{sent}"
        metric = metric_of(panel)
        if metric is None:
            continue
        group = matching(measurement, metric, chosen)
        if panel["type"] == "timeseries":
            by_time: dict[tuple[Any, ...], list[Summary]] = defaultdict(list)
            for s in group:
                day = s.start.astimezone(UTC).replace(hour=0, minute=0, second=0)
                per = s.subject if metric.aggregation_type is A.LAST else ()
                by_time[(int(day.timestamp()) * NS, *per)].append(s)
            shown = {
                (r["time"], *((r["subject_type"], r["subject_id"])
                              if metric.aggregation_type is A.LAST else ())): r["usage"]
                for r in rows
            }  # fmt: skip
            assert set(shown) == set(by_time), (name, panel["title"])
            for key, summaries in by_time.items():
                assert_shows(shown[key], usage(metric, summaries), metric, panel["title"])
        elif panel["type"] == "table":  # top subjects
            per_subject: dict[tuple[str, str], list[Summary]] = defaultdict(list)
            for s in group:
                per_subject[s.subject].append(s)
            assert len(rows) == len(per_subject)
            for r in rows:
                subject = (r["subject_type"], r["subject_id"])
                assert_shows(r["usage"], usage(metric, per_subject[subject]), metric, subject)
        else:  # stat: the one subject over the range
            (row,) = rows
            assert_shows(row["usage"], usage(metric, group), metric, panel["title"])
        checked += 1
    assert checked == 2 * len(METRICS)


def raw_usage(metric: MetricDefinition, records: list[Raw]) -> Decimal:
    """The metric's usage over raw records, in exact decimals (AVG: their mean)."""
    one = Decimal(10) ** -metric.precision
    units = [r.units for r in sorted(records, key=lambda r: r.at)]
    agg = metric.aggregation_type
    if agg is A.COUNT:
        return Decimal(len(units))
    if agg is A.SUM:
        return sum((Decimal(u) for u in units), Decimal(0)) * one
    if agg is A.AVG:
        return sum((Decimal(u) for u in units), Decimal(0)) * one / len(units)
    return Decimal({A.MAX: max, A.MIN: min}.get(agg, lambda u: u[-1])(units)) * one


def test_influxql_usage_by_dimension_panels(loaded_db: tuple[InfluxServer, str]) -> None:
    """The overview's "usage by dimension" panels on raw records the store's encoder wrote:
    the variable offers the dim.* tag keys only; with ``dim.tier`` chosen each panel shows,
    per day and tier value (hostile ones read back exactly; records without one under the
    empty value; LAST per subject too), its metric's aggregation of the records, as
    ``decimal`` computes it; with ``dim.region`` (declared by one metric only) the records of
    that metric with a region are one series, and every other metric's are one series."""
    server, db = loaded_db
    dashboard = GENERATED["influxql/usage-overview.json"]
    multi = grafana_macros.multi_flags(dashboard)

    def run_variable(query: str, values: grafana_macros.Values) -> list[str]:
        rows = influxql_series(server, db, grafana_macros.influxql(query, values, multi))
        return sorted({str(row.get("name", row.get("value", row.get("tagKey"))))
                       for row in rows})  # fmt: skip

    values = grafana_macros.resolve(dashboard, run_variable)
    assert values["dimension"] == ["dim.region"]  # the first of the dim.* keys
    keys = run_variable(grafana_macros.variables(dashboard)["dimension"]["query"], values)
    assert {"dim.tier", "dim.region", "metric", "w"} <= set(keys)
    values["subject_type"] = sorted({t for t, _ in SUBJECTS})
    values["subject"] = sorted({s for _, s in SUBJECTS})
    panels = [p for p in dashboard["panels"] if p["id"] > 3 * len(METRICS)]
    dimensioned = [m for m in METRICS if m.dimensions]
    assert len(panels) == len(dimensioned)
    for key, value_of in (
        ("dim.tier", lambda r: r.tier or ""),
        # a metric that does not declare region has no such tag, whatever its metadata
        ("dim.region", lambda r: "eu" if r.tier and "region" in r.metric.dimension_names
         else ""),
    ):  # fmt: skip
        values["dimension"] = [key]
        for panel, metric in zip(panels, dimensioned, strict=True):
            sent = grafana_macros.influxql(panel["targets"][0]["query"], values, multi)
            rows = influxql_series(server, db, sent)
            last = metric.aggregation_type is A.LAST
            expected: dict[tuple[Any, ...], list[Raw]] = defaultdict(list)
            for r in RAW_RECORDS:
                if r.metric is metric:
                    day = r.at.replace(hour=0, minute=0, second=0, microsecond=0)
                    per = r.subject if last else ()
                    expected[(int(day.timestamp()) * NS, value_of(r), *per)].append(r)
            shown = {
                (r["time"], decode_tag(r.get(key) or ""),
                 *((r["subject_type"], r["subject_id"]) if last else ())): r["usage"]
                for r in rows
            }  # fmt: skip
            assert set(shown) == set(expected), (key, panel["title"])
            for k, records in expected.items():
                assert_shows(shown[k], raw_usage(metric, records), metric, (key, k))


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def threshold_event(
    at: datetime, name: str, metric: MetricDefinition, subject: tuple[str, str],
    window: tuple[datetime | None, datetime | None], threshold: str = "t1",
) -> EventRow:  # fmt: skip
    """A threshold event as tsmeter's event log writes it (window ends in its JSON)."""
    iso = [w.isoformat().replace("+00:00", "Z") if w else None for w in window]
    data = {"alertId": f"a-{threshold}", "thresholdId": threshold,
            "level": "WARNING" if name == "threshold.approaching" else "EXCEEDED",
            "status": "OPEN", "actualValue": "11", "thresholdValue": "10", "percentage": 110.0,
            "periodStart": iso[0], "periodEnd": iso[1], "action": "NOTIFY"}  # fmt: skip
    return EventRow(int(at.timestamp()) * NS, name, metric.key, *subject, metric.org_id,
                    json.dumps(data))  # fmt: skip


def test_influxql_annotations_are_regions_over_the_events_window(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    """Threshold events written by the store: the annotation query returns, for each event
    whose window overlaps the time range, the window's start as its time and the window's end
    (epoch ms) as its time end, however long after the window it was evaluated; windows
    that began before the range are found, two levels and two thresholds of one subject and
    window stay apart, hostile keys and subjects stay data."""
    db = f"annotations{os.getpid()}"
    influxd.create_database(db)
    start, stop = utc(2026, 1, 1), utc(2026, 4, 30)
    march = (utc(2026, 3, 1), utc(2026, 4, 1))
    shown, hidden = [], []
    for subject in SUBJECTS:
        for metric in METRICS:
            shown += [
                threshold_event(utc(2026, 4, 3), "threshold.exceeded", metric, subject, march),
                threshold_event(utc(2026, 3, 20), "threshold.approaching", metric, subject,
                                march),
                threshold_event(utc(2026, 4, 3), "threshold.exceeded", metric, subject, march,
                                "t2"),
            ]  # fmt: skip
        metric = METRICS[0]
        shown += [  # began before the range; a year that began 11 months before; lifetime
            threshold_event(utc(2026, 2, 2), "threshold.exceeded", metric, subject,
                            (utc(2025, 12, 15), utc(2026, 1, 15)), "t3"),
            threshold_event(utc(2026, 3, 2), "threshold.exceeded", metric, subject,
                            (utc(2025, 2, 1), utc(2026, 2, 1)), "t4"),
            threshold_event(utc(2026, 3, 10), "threshold.exceeded", metric, subject,
                            (None, None), "t5"),
        ]  # fmt: skip
        hidden += [  # ended when the range begins; begins after it
            threshold_event(utc(2026, 3, 2), "threshold.exceeded", metric, subject,
                            (utc(2025, 1, 1), utc(2026, 1, 1)), "t6"),
            threshold_event(utc(2026, 3, 2), "threshold.exceeded", metric, subject,
                            (utc(2026, 5, 1), utc(2026, 6, 1)), "t7"),
        ]  # fmt: skip
    url = f"influxdb://127.0.0.1:{influxd.port}/{db}?writer=w1"
    store = InfluxStore.from_url(url, ledger=str(tmp_path / "ledger.db"))
    try:
        store.append_events(shown + hidden)
        assert len(store.list_events()) == len(shown + hidden)  # the events themselves
        for name, chosen in (("influxql/usage-overview.json", SUBJECTS),
                             ("influxql/subject-detail.json", SUBJECTS[2:])):  # fmt: skip
            dashboard = GENERATED[name]
            values = {"summaries": ["usage_daily"],
                      "subject_type": sorted({t for t, _ in chosen}),
                      "subject": sorted({s for _, s in chosen})}  # fmt: skip
            (annotation,) = [a for a in dashboard["annotations"]["list"] if "target" in a]
            sent = grafana_macros.influxql(annotation["target"]["query"], values,
                                           grafana_macros.multi_flags(dashboard),
                                           start=start, stop=stop)  # fmt: skip
            rows = influxql_series(influxd, db, sent)
            found = sorted(
                (r["time"], r["end_ms"], r["event"], decode_tag(r["metric"]),
                 decode_tag(r["subject_id"]), r["text"])
                for r in rows
            )  # fmt: skip
            expected = []
            for e in shown:
                if (e.subject_type, e.subject_id) not in chosen:
                    continue
                data = json.loads(e.data)
                first, last = (
                    int(datetime.fromisoformat(data[k]).timestamp()) * NS if data[k] else e.ts
                    for k in ("periodStart", "periodEnd")
                )
                text = (f"{e.metric_key} {e.name.split('.')[1]} for {e.subject_type}"
                        f" {e.subject_id}: 11 of 10")  # fmt: skip
                expected.append((first, last // 1_000_000, e.name, e.metric_key, e.subject_id,
                                 text))  # fmt: skip
            assert found == sorted(expected), name
        march_rows = [f for f in found if f[0] == int(march[0].timestamp()) * NS]
        assert {f[1] for f in march_rows} == {int(march[1].timestamp()) * 1000}
        assert "api_calls exceeded for user o'hara $x: 11 of 10" in {f[5] for f in found}
    finally:
        store.close()
        influxd.drop_database(db)


# -- Flux on InfluxDB 2.x --------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded_bucket(influxdb2: Influx2Server) -> Iterator[tuple[Influx2Server, str]]:
    name = f"grafana{os.getpid()}"
    influxdb2.create_bucket(name)
    try:
        with influxdb2.client() as client:
            client.write_api().write(
                bucket=name, record=(lines(SUMMARIES) + raw_lines(RAW_RECORDS)).decode()
            )
        yield influxdb2, name
    finally:
        influxdb2.drop_bucket(name)


@pytest.mark.parametrize("name", names("flux"))
def test_flux_panels_show_each_metrics_own_aggregation(
    loaded_bucket: tuple[Influx2Server, str], name: str
) -> None:
    """Against InfluxDB 2.x: the panels over the zone's summaries, each checked against
    ``decimal`` over the range (top subjects and stat panels); annotations are regions over
    the window of each event."""
    server, bucket = loaded_bucket
    dashboard = GENERATED[name]
    measurement = "usage_daily.Europe/Paris"
    with server.client() as client:
        api = client.query_api()

        def records(query: str) -> list[dict[str, Any]]:
            return [dict(r.values) for table in api.query(query) for r in table.records]

        run: Callable[[str, grafana_macros.Values], list[str]] = lambda q, v: sorted(  # noqa: E731
            {str(r["_value"]) for r in records(grafana_macros.flux(q, v, bucket))}
        )
        values = grafana_macros.resolve(dashboard, run)
        assert measurement in run(grafana_macros.variables(dashboard)["summaries"]["query"], values)
        values["summaries"] = [measurement]
        one = not grafana_macros.multi_flags(dashboard)["subject"]
        chosen = [SUBJECTS[0]] if one else SUBJECTS
        values["subject_type"] = sorted({t for t, _ in chosen})
        values["subject"] = sorted({s for _, s in chosen})
        for panel in dashboard["panels"]:
            sent = grafana_macros.flux(panel["targets"][0]["query"], values, bucket)
            rows = records(sent)
            assert rows, f"{name} {panel['title']!r}: no rows for\n{sent}"
            metric = metric_of(panel)
            if metric is None or panel["type"] == "timeseries":
                continue
            per_subject: dict[tuple[str, str], list[Summary]] = defaultdict(list)
            for s in matching(measurement, metric, chosen):
                per_subject[s.subject].append(s)
            if panel["type"] == "stat":
                (row,) = rows
                assert_shows(row["usage"], usage(metric, per_subject[SUBJECTS[0]]), metric, "")
                continue
            for r in rows:
                subject = (r["subject_type"], r["subject_id"])
                assert_shows(r["usage"], usage(metric, per_subject[subject]), metric, subject)
        (annotation,) = [a for a in dashboard["annotations"]["list"] if "target" in a]
        found = records(grafana_macros.flux(annotation["target"]["query"], values, bucket))
        assert found
        for r in found:
            assert r["time"] == datetime(2026, 3, 1, tzinfo=UTC)
            assert r["timeEnd"] == datetime(2026, 4, 1, tzinfo=UTC)
