"""Cancelling and amending stored records, on every usage store: summaries, reads, the audit
trail, idempotency, the correction window, resurrection and thresholds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.contract.stores import Store
from tests.hostile import NASTY_NAMES
from tsmeter.domain import AlertStatus
from tsmeter.domain.corrections import CorrectionKind
from tsmeter.domain.events import ThresholdResolved, UsageCorrected
from tsmeter.errors import ConflictError, NotFoundError, ValidationError
from tsmeter.metering.meter import Meter

PARIS = ZoneInfo("Europe/Paris")
#: 2026-10-24 to 2026-10-27 spans the end of summer time in Paris (a 25-hour day)
BASE = datetime(2026, 10, 24, 20, tzinfo=UTC)
FOREVER = timedelta(days=365 * 200)
SUBJECTS = ("acme", "globex", "initech")


@pytest.fixture
def meter(open_same: Callable[[], Store]) -> Iterator[Meter]:
    """A Meter on the store under test in Europe/Paris, accepting corrections of any age (the
    window is tested on its own)."""
    store = open_same()
    with Meter(store, store, timezone="Europe/Paris", capabilities=store.capabilities(),
               correction_window=FOREVER) as meter:  # fmt: skip
        yield meter


def _records() -> list[dict[str, object]]:
    """48 records of three subjects over four Paris days, quantities with two places."""
    out = []
    for i in range(48):
        out.append({
            "id": f"r-{i:03d}", "metricKey": "storage", "subjectType": "org",
            "subjectId": SUBJECTS[i % 3], "quantity": f"{(i * 37) % 101}.{i % 100:02d}",
            "timestamp": BASE + timedelta(hours=2 * i, minutes=i % 7),
        })  # fmt: skip
    return out


def _brute(
    records: list[dict[str, object]], cancelled: set[str], amended: dict[str, Decimal]
) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(Paris day, subject) -> (record count, exact sum) of the surviving records."""
    out: dict[tuple[str, str], list[object]] = defaultdict(lambda: [0, Decimal(0)])
    for r in records:
        if r["id"] in cancelled:
            continue
        ts = r["timestamp"]
        assert isinstance(ts, datetime)
        key = (ts.astimezone(PARIS).date().isoformat(), str(r["subjectId"]))
        quantity = amended.get(str(r["id"]), Decimal(str(r["quantity"])))
        cell = out[key]
        cell[0] = int(cell[0]) + 1  # type: ignore[call-overload]
        cell[1] = Decimal(cell[1]) + quantity  # type: ignore[arg-type]
    return {k: (int(v[0]), Decimal(v[1])) for k, v in out.items()}  # type: ignore[call-overload,arg-type]


def _daily(meter: Meter) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(Paris day, subject) -> (record count, total) as the Meter reads them."""
    rows = meter.get_usage_summaries(
        "storage", "DAILY", start=BASE - timedelta(days=1), end=BASE + timedelta(days=6)
    )
    return {
        (r.period_start.astimezone(PARIS).date().isoformat(), r.subject_id):
            (r.record_count, r.total_quantity)
        for r in rows
    }  # fmt: skip


def _monthly_total(meter: Meter, subject: str) -> Decimal:
    return meter.get_usage_summary("storage", "org", subject, "MONTHLY",
                                   at=BASE + timedelta(days=1)).total_quantity  # fmt: skip


def test_cancel_and_amend_change_reads_at_once_and_summaries_after_aggregation(
    meter: Meter,
) -> None:
    """Cancels and amends over aggregated periods (one emptying a subject's day) show in fresh
    reads at once and in the stored summaries after the next incremental run, equal to a
    Decimal brute force over the surviving records; re-running aggregation changes nothing."""
    meter.define_metric("storage", aggregation_type="SUM", precision=2)
    records = _records()
    # a subject with a single record on a day of its own: its cancel empties that day
    lonely = {"id": "lonely", "metricKey": "storage", "subjectType": "org",
              "subjectId": "umbrella", "quantity": "9.99",
              "timestamp": BASE + timedelta(days=5)}  # fmt: skip
    records.append(lonely)
    meter.record_batch(records)
    for period in ("HOURLY", "DAILY", "MONTHLY"):
        meter.aggregate(period)
    assert _daily(meter) == _brute(records, set(), {})
    cancelled = {"r-004", "r-017", "r-030", "lonely"}
    amended = {"r-001": Decimal("0.01"), "r-020": Decimal("1234.5"), "r-047": Decimal("-3")}
    for rid in sorted(cancelled):
        c = meter.cancel_record(rid, reason="duplicate import", actor="ops@example.com")
        assert (c.kind, c.applied, c.quantity_after) == (CorrectionKind.CANCEL, True, 0)
    for rid, quantity in amended.items():
        c = meter.amend_record(rid, quantity, reason="meter misread", actor="billing")
        assert c.quantity_after == quantity and c.applied
    expected = _brute(records, cancelled, amended)
    assert _daily(meter) == expected  # fresh reads, before any aggregation
    for subject in SUBJECTS:
        assert _monthly_total(meter, subject) == sum(
            (v[1] for k, v in expected.items() if k[1] == subject), Decimal(0)
        )
    for period in ("HOURLY", "DAILY", "MONTHLY"):
        meter.aggregate(period)
    assert _daily(meter) == expected  # stored summaries, recomputed
    assert not any(k[1] == "umbrella" for k in _daily(meter))
    for period in ("HOURLY", "DAILY", "MONTHLY"):
        meter.aggregate(period)
    assert _daily(meter) == expected
    usage = meter.get_usage("storage", start=BASE - timedelta(days=1), end=BASE + timedelta(days=6))
    assert {u.id for u in usage} == {str(r["id"]) for r in records} - cancelled
    assert {u.id: u.quantity for u in usage if u.id in amended} == amended


def test_the_same_correction_twice_changes_nothing(meter: Meter) -> None:
    """A correction applied again (by its derived id, or the id given) returns
    ``applied=False``; the store, the audit trail and the events are as after the first."""
    meter.define_metric("storage", aggregation_type="SUM", precision=2)
    records = _records()[:6]
    meter.record_batch(records)
    seen: list[UsageCorrected] = []
    meter.subscribe(UsageCorrected, seen.append)
    first = meter.amend_record("r-001", "2.50", reason="typo", actor="a")
    again = meter.amend_record("r-001", "2.5", reason="typo, retried", actor="b")
    assert first.applied and not again.applied
    assert again.id == first.id and again.reason == "typo"
    given = meter.cancel_record("r-002", reason="test", actor="a", correction_id="ticket-9")
    repeat = meter.cancel_record("r-002", reason="test", actor="a", correction_id="ticket-9")
    other = meter.cancel_record("r-002", reason="again", actor="c")  # another id: cancelled already
    assert given.applied and not repeat.applied and not other.applied
    assert other.id == "ticket-9"
    assert len(meter.list_corrections("storage")) == 2
    assert [e.correction.id for e in seen] == [first.id, "ticket-9"]
    assert len(meter.list_events(name="usage.corrected")) == 2
    expected = _brute(records, {"r-002"}, {"r-001": Decimal("2.5")})
    assert _daily(meter) == expected


def test_window_unknown_ids_and_cancelled_records(open_same: Callable[[], Store]) -> None:
    """The window (default 90 days after the record's time) refuses naming ``recordId``; an
    unknown id is NotFoundError; a cancelled record cannot be amended (ConflictError); bad
    input names its field."""
    store = open_same()
    now = datetime.now(UTC)
    with Meter(store, store, capabilities=store.capabilities()) as meter:
        meter.define_metric("storage", aggregation_type="SUM")
        meter.record("storage", "org", "acme", 5, id="old", timestamp=now - timedelta(days=91))
        meter.record("storage", "org", "acme", 5, id="new", timestamp=now - timedelta(days=89))
        with pytest.raises(ValidationError) as refused:
            meter.cancel_record("old", reason="late", actor="ops")
        assert refused.value.field == "recordId" and "correction window" in str(refused.value)
        assert meter.cancel_record("new", reason="ok", actor="ops").applied
        with pytest.raises(NotFoundError, match="nope"):
            meter.cancel_record("nope", reason="x", actor="ops")
        with pytest.raises(NotFoundError):
            meter.amend_record("nope", 3, reason="x", actor="ops")
        with pytest.raises(ConflictError, match="cancelled"):
            meter.amend_record("new", 3, reason="x", actor="ops")
        for kwargs, field in (({"reason": "", "actor": "a"}, "reason"),
                              ({"reason": "x\n", "actor": "a"}, "reason"),
                              ({"reason": "x", "actor": ""}, "actor")):  # fmt: skip
            with pytest.raises(ValidationError) as bad:
                meter.cancel_record("old", **kwargs)  # type: ignore[arg-type]
            assert bad.value.field == field
        with pytest.raises(ValidationError) as bad:
            meter.amend_record("old", "1.0000001", reason="x", actor="a")
        assert bad.value.field == "quantity"
    store = open_same()
    with Meter(store, store, capabilities=store.capabilities(),
               correction_window=timedelta(days=100)) as wider:  # fmt: skip
        assert wider.cancel_record("old", reason="within 100 days", actor="ops").applied
    store = open_same()
    with pytest.raises(ValidationError) as bad_window:
        Meter(store, store, correction_window=0)
    assert bad_window.value.field == "correction_window"


def test_a_cancelled_id_recorded_again_counts_nothing(
    meter: Meter, open_same: Callable[[], Store]
) -> None:
    """Recording a cancelled id again (one record, a batch, through another store object)
    stores nothing and changes no summary."""
    meter.define_metric("storage", aggregation_type="SUM", precision=2)
    records = _records()[:9]
    meter.record_batch(records)
    meter.aggregate("DAILY")
    meter.cancel_record("r-003", reason="x", actor="y")
    expected = _brute(records, {"r-003"}, {})
    meter.record("storage", "org", "acme", "5", id="r-003", timestamp=BASE)
    meter.record_batch(records)
    other = open_same()
    with Meter(other, other, timezone="Europe/Paris", capabilities=other.capabilities()) as m2:
        m2.record_batch([{**records[3], "timestamp": BASE + timedelta(days=2)}])
        assert m2.record_batch([records[3]]).recorded == 0
    assert _daily(meter) == expected
    meter.aggregate("DAILY")
    assert _daily(meter) == expected
    ids = [u.id for u in meter.get_usage("storage", start=BASE - timedelta(days=1),
                                         end=BASE + timedelta(days=6))]  # fmt: skip
    assert sorted(ids) == sorted(str(r["id"]) for r in records if r["id"] != "r-003")


def test_an_exceeded_threshold_resolves_after_a_cancel(meter: Meter) -> None:
    """A subject over its limit whose record is cancelled falls back: the next evaluation
    resolves the open alert (a ``threshold.resolved`` event)."""
    meter.define_metric("calls", aggregation_type="SUM", reset_period="MONTHLY")
    meter.create_threshold("calls", "org", 10, subject_id="acme", action="ALERT")
    for i, quantity in enumerate((5, 5, 2)):  # 12 of 10; 7 (below the 80 % warn level) after
        meter.record("calls", "org", "acme", quantity, id=f"c{i}",
                     timestamp=BASE + timedelta(hours=i))  # fmt: skip
    now = BASE + timedelta(days=1)
    first = meter.evaluate_thresholds(now=now)
    assert first.exceeded
    opened = sorted(a.id for a in meter.list_alerts(AlertStatus.PENDING))
    assert opened
    resolved: list[ThresholdResolved] = []
    meter.subscribe(ThresholdResolved, resolved.append)
    meter.cancel_record("c1", reason="retried request counted twice", actor="support")
    meter.evaluate_thresholds(now=now + timedelta(minutes=1))
    assert sorted(e.alert.id for e in resolved) == opened
    assert all(e.alert.status is AlertStatus.RESOLVED for e in resolved)
    assert not meter.list_alerts(AlertStatus.PENDING)
    assert meter.check("calls", "org", "acme", 2).allowed


def test_a_quota_opens_at_once_after_a_cancel(open_same: Callable[[], Store]) -> None:
    """A BLOCK quota reached this month refuses more; a cancel frees its room at once (the
    quota view reads the series again, without waiting for its refresh)."""
    store = open_same()
    with Meter(store, store, capabilities=store.capabilities(), quota_refresh=3600) as meter:
        meter.define_metric("gb", aggregation_type="SUM", reset_period="MONTHLY")
        meter.create_threshold("gb", "org", 10, subject_id="acme", action="BLOCK")
        now = datetime.now(UTC)
        meter.record("gb", "org", "acme", 6, id="g1", timestamp=now, enforce=True)
        meter.record("gb", "org", "acme", 4, id="g2", timestamp=now, enforce=True)
        decision = meter.check("gb", "org", "acme", 3)
        assert not decision.allowed and decision.used == 10
        meter.amend_record("g1", 5, reason="overcounted", actor="ops")
        assert meter.check("gb", "org", "acme", 1).used == 9
        meter.cancel_record("g2", reason="refunded", actor="ops")
        decision = meter.check("gb", "org", "acme", 3)
        assert decision.allowed and decision.used == 5


def test_the_audit_trail_lists_who_when_why(meter: Meter) -> None:
    """Each correction is listed with its actor, reason, time, record and series, filtered by
    metric, org, record and the records' time; a stored ``usage.corrected`` event each."""
    meter.define_metric("storage", aggregation_type="SUM", precision=2)
    meter.define_metric("storage", aggregation_type="SUM", precision=2, org_id="org-9")
    records = _records()[:4]
    meter.record_batch(records)
    meter.record("storage", "org", "acme", "1.25", id="scoped", org_id="org-9", timestamp=BASE)
    before = datetime.now(UTC) - timedelta(seconds=1)
    meter.cancel_record("r-000", reason="test data", actor="alice")
    meter.amend_record("r-002", "7.5", reason="wrong unit", actor="bob")
    meter.amend_record("scoped", 2, reason="org fix", actor="carol")
    after = datetime.now(UTC) + timedelta(seconds=1)
    listed = meter.list_corrections("storage")
    assert [(c.record_id, c.kind, c.actor, c.reason) for c in listed] == [
        ("r-000", CorrectionKind.CANCEL, "alice", "test data"),
        ("r-002", CorrectionKind.AMEND, "bob", "wrong unit"),
    ]
    assert all(before <= c.corrected_at <= after for c in listed)
    assert listed[1].quantity_before == Decimal(str(records[2]["quantity"]))
    assert listed[1].quantity_after == Decimal("7.50")
    assert listed[0].record_timestamp == records[0]["timestamp"]
    assert (listed[0].subject_type, listed[0].subject_id, listed[0].org_id) == ("org", "acme", None)
    scoped = meter.list_corrections("storage", org_id="org-9")
    assert [(c.record_id, c.org_id, c.quantity_after) for c in scoped] == [
        ("scoped", "org-9", Decimal("2.00"))
    ]
    assert len(meter.list_corrections()) == 3
    assert [c.record_id for c in meter.list_corrections(org_id="org-9")] == ["scoped"]
    assert [c.actor for c in meter.list_corrections(record_id="r-002")] == ["bob"]
    window = meter.list_corrections("storage", start=BASE + timedelta(hours=1),
                                    end=BASE + timedelta(hours=5))  # fmt: skip
    assert [c.record_id for c in window] == ["r-002"]
    events = meter.list_events(name="usage.corrected")
    assert [(e.data["recordId"], e.data["actor"], e.data["kind"]) for e in events] == [
        ("r-000", "alice", "CANCEL"), ("r-002", "bob", "AMEND"), ("scoped", "carol", "AMEND")
    ]  # fmt: skip
    assert events[1].data["quantityBefore"] == str(records[2]["quantity"])


HOSTILE_REASONS = (
    "' OR 1=1; DROP SERIES FROM usage --",
    'quote " and backslash \\ and \\" both',
    "comma, space = equals",
    "\\",
    "trailing backslash \\",
    "émoji \U0001f600 and ⧵ and \u202e",
    '"); DELETE FROM "usage" WHERE time > 0; --',
)


def test_hostile_record_ids_and_reasons_are_data(meter: Meter) -> None:
    """Record ids, actors and reasons with quotes, backslashes, separators, query syntax and
    non-BMP text are corrected and listed exactly; no other record is touched."""
    meter.define_metric("storage", aggregation_type="SUM", precision=2)
    ids = [*NASTY_NAMES[:12], "' OR ''='", '" OR 1=1 --']
    rows = [{"id": rid, "metricKey": "storage", "subjectType": "org", "subjectId": f"s{n % 2}",
             "quantity": n + 1, "timestamp": BASE + timedelta(minutes=n)}
            for n, rid in enumerate(ids)]  # fmt: skip
    keep = {"id": "innocent", "metricKey": "storage", "subjectType": "org",
            "subjectId": "s0", "quantity": 100, "timestamp": BASE}  # fmt: skip
    meter.record_batch([*rows, keep])
    cancelled, amended = set(), {}
    for n, rid in enumerate(ids):
        reason = HOSTILE_REASONS[n % len(HOSTILE_REASONS)]
        if n % 2:
            c = meter.cancel_record(rid, reason=reason, actor=ids[-1 - n])
            cancelled.add(rid)
        else:
            c = meter.amend_record(rid, Decimal(n) + Decimal("0.5"), reason=reason, actor=rid)
            amended[rid] = Decimal(n) + Decimal("0.5")
        assert c.applied and c.record_id == rid and c.reason == reason
    listed = meter.list_corrections("storage")
    assert sorted(c.record_id for c in listed) == sorted(ids)
    assert {c.record_id: c.reason for c in listed} == {
        rid: HOSTILE_REASONS[n % len(HOSTILE_REASONS)] for n, rid in enumerate(ids)
    }
    for rid in ids:
        assert [c.record_id for c in meter.list_corrections(record_id=rid)] == [rid]
    usage = {u.id: u.quantity for u in meter.get_usage("storage", start=BASE,
                                                        end=BASE + timedelta(days=1))}  # fmt: skip
    assert usage == {**amended, "innocent": Decimal("100.00")}
    assert sum(usage.values()) == meter.get_usage_summary(
        "storage", "org", "s0", "MONTHLY", at=BASE
    ).total_quantity + meter.get_usage_summary("storage", "org", "s1", "MONTHLY",
                                               at=BASE).total_quantity  # fmt: skip


def test_records_with_dimension_values(meter: Meter) -> None:
    """A metric with a dimension (tags of their own on InfluxDB): the point with exactly the
    record's tag set is cancelled or amended, its neighbours of the same subject and time
    with other values are not, and the values stay as recorded."""
    meter.define_metric("tokens", aggregation_type="SUM", dimensions=[{"name": "model"}])
    rows = [{"id": f"t{i}", "metricKey": "tokens", "subjectType": "org", "subjectId": "acme",
             "quantity": 10 + i, "timestamp": BASE, "metadata": {"model": f"m {i % 2},=\\"}}
            for i in range(4)]  # fmt: skip
    meter.record_batch(rows)
    meter.aggregate("DAILY")
    meter.cancel_record("t1", reason="x", actor="y")
    meter.amend_record("t2", 100, reason="x", actor="y")
    meter.record_batch(rows)
    got = {u.id: (u.quantity, u.metadata) for u in meter.get_usage(
        "tokens", start=BASE, end=BASE + timedelta(days=1))}  # fmt: skip
    assert got == {"t0": (10, {"model": "m 0,=\\"}), "t2": (100, {"model": "m 0,=\\"}),
                   "t3": (13, {"model": "m 1,=\\"})}  # fmt: skip
    meter.aggregate("DAILY")
    summary = meter.get_usage_summary("tokens", "org", "acme", "DAILY", at=BASE)
    assert (summary.record_count, summary.total_quantity) == (3, Decimal(123))


def test_a_correction_cut_short_is_finished_by_its_retry(
    meter: Meter, store: Store, adapter: str
) -> None:
    """On InfluxDB the audit point is written before the point is changed: a process that
    stopped in between left the audit without the change, and the same correction id applied
    again finishes it (applied, the summary follows); meanwhile the id was never written
    anew."""
    if not adapter.startswith("influxdb"):
        pytest.skip("the embedded store applies a correction in one transaction")
    from tsmeter.adapters.influxdb import corrections
    from tsmeter.domain.corrections import CorrectionRow
    from tsmeter.domain.validation import to_ns

    meter.define_metric("storage", aggregation_type="SUM", precision=2)
    records = _records()[:6]
    meter.record_batch(records)
    at = to_ns(BASE)
    ts = to_ns(records[1]["timestamp"])  # type: ignore[arg-type]
    for cid, kind, after in (("cut-1", CorrectionKind.CANCEL, 0),
                             ("cut-2", CorrectionKind.AMEND, 4200)):  # fmt: skip
        rid = "r-001" if kind is CorrectionKind.CANCEL else "r-002"
        rts = ts if rid == "r-001" else to_ns(records[2]["timestamp"])  # type: ignore[arg-type]
        before = int(Decimal(str(records[int(rid[-1])]["quantity"])) * 100)
        row = CorrectionRow(cid, rid, kind, before, after, "ops", "cut short", at, "storage",
                            "org", SUBJECTS[int(rid[-1]) % 3], None, rts)  # fmt: skip
        store.transport.write(f"{corrections.audit_line(row)}\n".encode())  # type: ignore[attr-defined]
    assert _daily(meter) == _brute(records, set(), {})  # audit only: nothing changed yet
    meter.record_batch(records)  # r-001 is stored: counted once, cancelled or not
    done = meter.cancel_record("r-001", reason="cut short", actor="ops", correction_id="cut-1")
    fixed = meter.amend_record(
        "r-002", "42", reason="cut short", actor="ops", correction_id="cut-2"
    )
    assert done.applied and fixed.applied and done.corrected_at == BASE
    assert not meter.cancel_record("r-001", reason="x", actor="y", correction_id="cut-1").applied
    assert _daily(meter) == _brute(records, {"r-001"}, {"r-002": Decimal(42)})
