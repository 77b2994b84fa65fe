"""Fuzzing the intake: generated records through ``record_batch`` and ``record`` on the embedded
store, on the intake's compiled path (where built), its msgspec path and its Python loop,
checked against an oracle written here.

Only ValidationError may escape; a rejected batch stores nothing and names the first bad
record's bad field; an accepted batch is stored exactly as the oracle expects; both intake
paths give the same outcome. The budget is fixed (derandomized, bounded examples).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tsmeter
from tests.hostile import names
from tsmeter.errors import ValidationError
from tsmeter.metering import intake as intake_module

BUDGET = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PATHS = (("compiled",) if intake_module.compiled is not None else ()) + ("msgspec", "python")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ABSENT = object()  # a field left out of the record
PAIRS = {"metricKey": "metric_key", "subjectType": "subject_type", "subjectId": "subject_id",
         "orgId": "org_id"}  # fmt: skip


@contextmanager
def intake_path(path: str) -> Iterator[None]:
    """Run the intake on its compiled path, on its msgspec path (each hands what it cannot
    decide to the loop) or on the Python loop alone."""
    saved = intake_module.compiled_path, intake_module.fast_path
    intake_module.compiled_path = path == "compiled"
    intake_module.fast_path = path != "python"
    try:
        yield
    finally:
        intake_module.compiled_path, intake_module.fast_path = saved


@contextmanager
def fresh_meter() -> Iterator[tsmeter.Meter]:
    """An in-memory embedded store with a SUM metric ``m`` and a COUNT metric ``c``."""
    with tsmeter.connect("sqlite:///:memory:") as meter:
        meter.define_metric("m", aggregation_type="SUM")
        meter.define_metric("c", aggregation_type="COUNT")
        yield meter


# -- the oracle: what a record should become, written apart from tsmeter's checkers -------------


def good_name(value: object) -> bool:
    """1–256 characters, no control characters, no lone surrogates."""
    return (
        isinstance(value, str) and 0 < len(value) <= 256
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
                    for c in value)
    )  # fmt: skip


def depth_of(value: object) -> int:
    """Nesting levels of containers (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in (node.values() if isinstance(node, dict) else node)]
    return deepest


class Expected:
    """What the oracle says of one record: the fields that are wrong, or the stored values."""

    def __init__(self, item: dict[Any, Any]) -> None:
        self.bad: set[str] = set()
        self.row: dict[str, Any] = {}
        value = {camel: self.spelled(item, camel, snake) for camel, snake in PAIRS.items()}
        allowed = {"id", "quantity", "timestamp", "metadata", "source", *PAIRS, *PAIRS.values()}
        for key in item:
            if key not in allowed:
                self.bad.add(key if isinstance(key, str) else repr(key))
        org = value["orgId"]
        if org is not ABSENT and not good_name(org):
            self.bad.add("orgId")
        metric = value["metricKey"]
        if metric is ABSENT or metric not in ("m", "c"):
            self.bad.add("metricKey")
        for field in ("subjectType", "subjectId"):
            if not good_name(value[field]):
                self.bad.add(field)
        self.row.update(metric=metric, subject_type=value["subjectType"],
                        subject_id=value["subjectId"])  # fmt: skip
        rid = item.get("id")
        if rid is not None and not good_name(rid):
            self.bad.add("id")
        self.row["id"] = rid
        self.quantity(item.get("quantity"), metric)
        self.timestamp(item.get("timestamp", ABSENT))
        self.metadata(item.get("metadata"))
        source = item.get("source")
        if source is not None and not good_name(source):
            self.bad.add("source")
        self.row["source"] = source

    def spelled(self, item: dict[Any, Any], camel: str, snake: str) -> Any:
        """The value of a field given in either spelling; two different values are wrong."""
        first, second = item.get(camel), item.get(snake)
        if (
            first is not None
            and second is not None
            and (type(first) is not type(second) or first != second)
        ):
            self.bad.add(camel)
        if first is not None:
            return first
        return ABSENT if second is None else second

    def quantity(self, value: object, metric: object) -> None:
        """A finite number (an int, a float by its shortest repr, a decimal string, a Decimal;
        not a bool) with at most 6 decimal places (the metrics' default precision, no
        rounding), whose micro-units fit a signed 64-bit integer (±(2**63 - 1))."""
        if value is None:
            if metric != "c":
                self.bad.add("quantity")
            self.row["quantity"] = Decimal("1.000000")
            return
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            self.bad.add("quantity")
            return
        text = repr(value) if isinstance(value, float) else str(value).strip()
        try:
            exact = Decimal(text) if "_" not in text and len(text) <= 64 else Decimal("NaN")
            micro = exact.scaleb(6, Context(prec=100)) if exact.is_finite() else exact
        except ArithmeticError:  # not a number, or an exponent beyond any context
            micro = Decimal("NaN")
        if not micro.is_finite() or micro != micro.to_integral_value() or abs(micro) >= 2**63:
            self.bad.add("quantity")
            return
        self.row["quantity"] = Decimal(int(micro)).scaleb(-6)

    def timestamp(self, value: object) -> None:
        """Aware datetimes from 1970 to 2261; strings are ``Stamp`` texts (see below)."""
        if value is ABSENT or value is None:
            self.row["ts"] = None  # now: not compared
            return
        if isinstance(value, Stamp):
            if value.bad:
                self.bad.add("timestamp")
            self.row["ts"] = value.micros
            return
        if not isinstance(value, datetime) or value.tzinfo is None:
            self.bad.add("timestamp")
            return
        utc = value.astimezone(UTC)
        if not datetime(1970, 1, 1, tzinfo=UTC) <= utc < datetime(2262, 1, 1, tzinfo=UTC):
            self.bad.add("timestamp")
            return
        self.row["ts"] = (utc - EPOCH) // timedelta(microseconds=1)

    def metadata(self, value: object) -> None:
        """A JSON object at most 32 levels deep and 64 KiB as JSON ({} is none)."""
        if value is None or value == {}:
            self.row["metadata"] = {}
            return
        if not isinstance(value, dict) or depth_of(value) > 32:
            self.bad.add("metadata")
            return
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:  # NaN and infinities are not JSON
            self.bad.add("metadata")
            return
        if len(text.encode("utf-8", "surrogatepass")) > 65_536 or any(
            0xD800 <= ord(c) <= 0xDFFF for c in text
        ):
            self.bad.add("metadata")
            return
        self.row["metadata"] = value


class Stamp(str):
    """An ISO-8601 text whose meaning is known: ``micros`` since the epoch, and ``bad`` when
    it carries non-zero digits beyond the microsecond."""

    micros: int
    bad: bool


# -- the generators ----------------------------------------------------------------------------

bad_names = st.sampled_from(["", "a\x00b", "x" * 257, "\ud800", "tab\there", "\x85"]) | st.just(3)
any_name = st.one_of(names, names, names, bad_names, st.lists(st.integers(), max_size=2))


@st.composite
def stamps(draw: st.DrawFn) -> Stamp:
    """An ISO-8601 text with 0–12 fraction digits and one of several offsets."""
    base = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
    base = base.replace(microsecond=0)
    digits = draw(st.text("0123456789", min_size=0, max_size=12))
    if draw(st.booleans()) and len(digits) > 6:
        digits = digits[:6] + "0" * (len(digits) - 6)
    offset_minutes = draw(st.sampled_from([0, 0, 345, -210, 60]))
    offset = ("Z" if offset_minutes == 0 and draw(st.booleans()) else
              f"{'+' if offset_minutes >= 0 else '-'}{abs(offset_minutes) // 60:02d}:"
              f"{abs(offset_minutes) % 60:02d}")  # fmt: skip
    text = base.isoformat() + (f".{digits}" if digits else "") + offset
    stamp = Stamp(text)
    micro = int(digits[:6].ljust(6, "0")) if digits else 0
    aware = base.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)), microsecond=micro)
    stamp.micros = (aware.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)
    stamp.bad = bool(digits[6:].strip("0"))
    return stamp


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep."""
    value: dict[str, Any] = {"k": [1, "é"]}
    for _ in range(depth - 2):
        value = {"k": value}
    return value


#: quantities at the edges: of the 64-bit range of micro-units, of the 6 places, of the text
BAD_EDGES = [10**15 * 10**4, 2**63, 10**400, 1e308, 5e-324, 9_223_372_036_855,
             "9223372036854.775808", 1e-7, "0.1234567", "x", "1_0"]  # fmt: skip
GOOD_EDGES = [0.1, -0.1, 19.99, -0.0, Decimal("0.1"), "0.1", "-9223372036854.775807",
              Decimal("9223372036854.775807"), 1e12, 0.000001, 10**12, 1e15 / 1e3]  # fmt: skip
quantities = st.one_of(
    st.floats(),
    st.floats(min_value=-1e15, max_value=1e15),
    st.integers(),
    st.sampled_from(BAD_EDGES),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1e-400"), Decimal("1e400"), Decimal("0.1"), Decimal("-0")]),
    st.booleans(),
    st.just("1"),
    st.none(),
)
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45))])),
    st.datetimes(max_value=datetime(2100, 1, 1)),  # naive
    stamps(),
    st.sampled_from(["garbage", "2026-13-01T00:00:00Z", "x" * 100, 17]),
)  # fmt: skip
metadatas = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    st.integers(30, 36).map(nested),
    st.just(nested(5000)),
    st.just({"blob": "x" * 70_000}),
    st.just(["not", "an", "object"]),
    st.just({"nan": float("nan")}),
)


good_quantities = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9).map(lambda x: round(x, 6)),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 2)),
    st.integers(-9_223_372_036_854, 9_223_372_036_854),
    st.decimals(min_value=-(10**12), max_value=10**12, places=3),
    st.sampled_from(GOOD_EDGES),
)
good_timestamps = st.one_of(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2260, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])),
    stamps().filter(lambda stamp: not stamp.bad),
)  # fmt: skip
good_metadata = st.none() | st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=5) | st.lists(st.booleans()), max_size=3
)
HOSTILE = {
    "metricKey": st.sampled_from(["unknown", "", 5, None]),
    "subjectType": any_name,
    "subjectId": any_name,
    "orgId": bad_names,
    "id": any_name,
    "quantity": quantities,
    "timestamp": timestamps,
    "metadata": metadatas,
    "source": any_name,
}


@st.composite
def records(draw: st.DrawFn) -> dict[Any, Any]:
    """A good record with up to two fields made hostile, in camelCase, snake_case or both
    spellings (agreeing or not), sometimes with an unknown key."""
    value: dict[str, Any] = {
        "metricKey": draw(st.sampled_from(["m", "c"])),
        "subjectType": draw(names),
        "subjectId": draw(names),
        "orgId": draw(st.sampled_from([ABSENT, ABSENT, "o1"])),
        "id": draw(st.sampled_from([ABSENT, "dup"]) | names),
        "quantity": draw(good_quantities | st.just(ABSENT)),
        "timestamp": draw(good_timestamps | st.just(ABSENT)),
        "metadata": draw(good_metadata),
        "source": draw(st.just(ABSENT) | names),
    }
    if value["metricKey"] == "m" and value["quantity"] is ABSENT:
        value["quantity"] = 1
    if draw(st.booleans()):
        for field in draw(st.lists(st.sampled_from(sorted(HOSTILE)), max_size=2, unique=True)):
            value[field] = draw(HOSTILE[field])
    item: dict[Any, Any] = {}
    for field, chosen in value.items():
        if chosen is ABSENT:
            continue
        snake = PAIRS.get(field)
        how = draw(st.sampled_from(["camel"] * 4 + ["snake"] * 2 + ["both", "differ"]))
        if snake is None or how == "camel":
            item[field] = chosen
        elif how == "snake":
            item[snake] = chosen
        else:
            item[field] = chosen
            item[snake] = chosen if how == "both" else draw(any_name)
    if draw(st.sampled_from([False] * 19 + [True])):
        item[draw(st.sampled_from(["quantiy", 1, "subject"]))] = 1
    return item


# -- the properties ------------------------------------------------------------------------------


def outcome(batch: list[dict[Any, Any]], path: str) -> tuple[str, Any, list[dict[str, Any]]]:
    """Record ``batch`` on a fresh store on ``path``: ("error", field) or ("ok", result), and
    every stored record read back."""
    with fresh_meter() as meter, intake_path(path):
        try:
            result: Any = meter.record_batch(batch)
            kind = "ok"
        except ValidationError as exc:
            kind, result = "error", exc.field
        stored = [r.model_dump(by_alias=False) for key in ("m", "c") for r in meter.iter_usage(key)]
    return kind, result, stored


def comparable(stored: dict[str, Any], given_id: bool, given_ts: bool) -> tuple[Any, ...]:
    """A stored record as the oracle knows it (generated ids and times left out)."""
    ts = (stored["timestamp"] - EPOCH) // timedelta(microseconds=1) if given_ts else None
    return (stored["id"] if given_id else None, stored["metric_key"], stored["subject_type"],
            stored["subject_id"], stored["org_id"], stored["quantity"], ts,
            json.dumps(stored["metadata"], sort_keys=True), stored["source"])  # fmt: skip


_UTC2000 = datetime(2000, 1, 1, tzinfo=UTC)


@BUDGET
@given(st.lists(records(), min_size=1, max_size=4))
@example(  # an id repeated in the batch, first without a time: the first record is stored
    [{"metricKey": "m", "subjectType": "0", "subjectId": "0", "id": "dup", "quantity": 0.0},
     {"metricKey": "m", "subjectType": "0", "subjectId": "0", "id": "dup", "quantity": 0.0,
      "timestamp": _UTC2000}]
)  # fmt: skip
def test_batches_are_stored_exactly_or_refused_whole(batch: list[dict[Any, Any]]) -> None:
    """A batch is refused whole with the first bad record's field, or stored exactly as the
    oracle expects; the intake's paths agree."""
    expected = [Expected(item) for item in batch]
    first_bad = next((i for i, e in enumerate(expected) if e.bad), None)
    results = [outcome(batch, path) for path in PATHS]
    for kind, result, stored in results:
        if first_bad is not None:
            assert kind == "error", (batch, result)
            assert stored == []
            index, _, field = str(result).partition(".")
            assert index == f"records[{first_bad}]", (result, expected[first_bad].bad)
            assert field in expected[first_bad].bad, (result, expected[first_bad].bad)
            continue
        assert kind == "ok", (batch, result)
        # records without an id get a fresh one (and a time of now when none is given): their
        # times are compared only when every one of them has one
        generated = [e for e in expected if e.row["id"] is None]
        times_known = all(e.row["ts"] is not None for e in generated)
        want, seen = [], set()
        for e in expected:
            row = e.row
            if row["id"] is not None and row["id"] in seen:
                continue  # an id repeated in the batch counts once
            seen.add(row["id"])
            ts = row["ts"] if row["id"] is not None or times_known else None
            want.append((row["id"], row["metric"], row["subject_type"], row["subject_id"], None,
                         row["quantity"], ts, json.dumps(row["metadata"], sort_keys=True),
                         row["source"]))  # fmt: skip
        given: dict[str, bool] = {}  # the first record of an id is the one stored
        for e in expected:
            if e.row["id"]:
                given.setdefault(e.row["id"], e.row["ts"] is not None)
        got = [comparable(s, s["id"] in given, given.get(s["id"], times_known)) for s in stored]
        assert sorted(got, key=repr) == sorted(want, key=repr)
        assert result.recorded == len(want)
    if len(results) == 2:
        (k1, r1, s1), (k2, r2, s2) = results
        assert k1 == k2 and (r1 == r2 if k1 == "error" else len(s1) == len(s2))


@BUDGET
@given(
    quantity=quantities,
    timestamp=timestamps,
    metadata=metadatas,
    subject=any_name,
    source=st.none() | any_name,
)
def test_record_refuses_with_the_bare_field_or_stores_exactly(
    quantity: Any, timestamp: Any, metadata: Any, subject: Any, source: Any
) -> None:
    """``record`` raises a ValidationError naming the bare field, or stores what was given."""
    item = {"metricKey": "m", "subjectType": "org", "subjectId": subject, "quantity": quantity,
            "timestamp": timestamp, "metadata": metadata, "source": source}  # fmt: skip
    expected = Expected(item)
    for path in PATHS:
        with fresh_meter() as meter, intake_path(path):
            try:
                record = meter.record("m", "org", subject, quantity, timestamp=timestamp,
                                      metadata=metadata, source=source)  # fmt: skip
            except ValidationError as exc:
                assert exc.field in expected.bad, (exc, expected.bad)
                assert list(meter.iter_usage("m")) == []
                continue
            assert not expected.bad, expected.bad
            (stored,) = meter.iter_usage("m")
            assert stored == record
            assert stored.quantity == expected.row["quantity"]
            assert stored.metadata == expected.row["metadata"]
            if expected.row["ts"] is not None:
                assert (stored.timestamp - EPOCH) // timedelta(microseconds=1) == expected.row["ts"]


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.binary(max_size=4) | st.decimals() | st.datetimes(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


FIELDS = [*PAIRS, *PAIRS.values(), "id", "quantity", "timestamp", "metadata", "source"]
junk_keys = st.sampled_from(FIELDS) | st.integers() | st.text(max_size=3)


@BUDGET
@given(st.lists(st.dictionaries(junk_keys, junk, max_size=9) | junk, min_size=1, max_size=3))
def test_junk_gives_only_validation_errors(batch: list[Any]) -> None:
    """Any value in any field, or something that is no record at all: a ValidationError or a
    stored batch, never another exception; both intake paths give the same field."""
    fields = []
    for path in PATHS:
        with fresh_meter() as meter, intake_path(path):
            try:
                meter.record_batch(batch)
                fields.append(None)
            except ValidationError as exc:
                fields.append(exc.field)
                assert list(meter.iter_usage("m")) == [] and list(meter.iter_usage("c")) == []
    assert len(set(fields)) == 1
