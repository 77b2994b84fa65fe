"""The line-protocol escaping functions and the usage encoder, checked without a server."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile import NASTY_NAMES, metadata, names, record_rows
from tsmeter.adapters.influxdb.lineprotocol import (
    UsageEncoder,
    decode_tag,
    encode_point,
    escape_field_string,
    escape_tag,
    tag_value,
)
from tsmeter.domain import RecordRow

ALT = "\u29f5"
# An escaped tag as InfluxDB 1.x scans it: plain characters or a backslash and the next byte,
# ended by an unescaped ",", "=" or space.
_SCANNED_TAG = re.compile(r"(?:[^\\,= ]|\\[\s\S])*")


def row(**changes: object) -> RecordRow:
    """A plain record row with some fields changed."""
    base = RecordRow("r1", "api_calls", "org", "o1", None, 1_000_000, 5, None, None)
    return base._replace(**changes)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ("org 1,=x", r"org\ 1\,\=x"),
        ("a\\b", "a\\b"),
        ("a\\", f"a{ALT}"),
        ("a\\,b", f"a{ALT}\\,b"),
        ("a\\ b", f"a{ALT}\\ b"),
        ("a\\=b", f"a{ALT}\\=b"),
        ("a\\\\", f"a\\{ALT}"),
        (ALT, ALT * 2),
        (f"{ALT}\\", ALT * 3),
        ('say "hi"', 'say\\ "hi"'),
    ],
)
def test_escape_tag_examples(value: str, escaped: str) -> None:
    """Separators are escaped and only the backslashes the parser would misread become ⧵."""
    assert escape_tag(value) == escaped
    assert decode_tag(tag_value(value)) == value


@given(st.text())
def test_tag_value_roundtrips_any_text(value: str) -> None:
    """decode_tag inverts tag_value on every string, including ones full of ⧵ and backslashes."""
    assert decode_tag(tag_value(value)) == value


@given(st.text(st.sampled_from(["\\", ALT, ",", "=", " ", "a"])))
def test_tag_value_has_no_risky_backslash(value: str) -> None:
    """After tag_value no backslash stands before ",", "=", space or the end of the value."""
    stored = tag_value(value)
    assert not re.search(r"\\(?=[,= ]|\Z)", stored)
    assert decode_tag(stored) == value


@given(names)
def test_escaped_tag_scans_as_one_token(value: str) -> None:
    """An escaped tag is read by InfluxDB's scanner as exactly one token and unescapes back."""
    escaped = escape_tag(value)
    assert _SCANNED_TAG.fullmatch(escaped)
    unescaped = escaped.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")
    assert decode_tag(unescaped) == value


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\", '"a\\\\"'),
        ('\\"', '"\\\\\\""'),
        ("a, b=c", '"a, b=c"'),
    ],
)
def test_escape_field_string_examples(value: str, escaped: str) -> None:
    """String fields escape backslashes and double quotes and are quoted."""
    assert escape_field_string(value) == escaped


@given(st.text())
def test_escape_field_string_unescapes_back(value: str) -> None:
    """Undoing the two field-string escapes gives the original text back."""
    escaped = escape_field_string(value)
    assert escaped[0] == escaped[-1] == '"'
    assert re.sub(r"\\([\\\"])", r"\1", escaped[1:-1]) == value


def test_json_with_a_newline_stays_one_line() -> None:
    """Metadata JSON holding a newline is written as the two characters \\ and n, never a break."""
    text = json.dumps({"note": "line 1\nline 2\r\n\u2028"}, separators=(",", ":"))
    escaped = escape_field_string(text)
    assert "\n" not in escaped and "\r" not in escaped
    line = encode_point("usage", {"metric": "m"}, {"metadata": text}, 1)
    assert line.count("\n") == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20).flatmap(lambda n: record_rows(n, 1_767_225_600_000_000_000)))
def test_usage_encoder_writes_one_line_per_row(rows: list[RecordRow]) -> None:
    """However hostile the names and metadata, each row becomes exactly one line."""
    rows = [r._replace(quantity=(-1) ** i * 7**i) for i, r in enumerate(rows)]  # units: ints
    body = UsageEncoder(writer="w\\ 1").encode(rows)
    lines = body.decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(rows) + 1
    for line, r in zip(lines, rows, strict=False):
        assert line.endswith(f" {r.ts}")


def test_usage_encoder_line_layout() -> None:
    """A row becomes sorted tags, units, rid, tsn, then metadata and source when present."""
    enc = UsageEncoder("usage", writer="host-1")
    body = enc.encode([row(org_id="acme", metadata='{"a":"b"}', source="api")], times=[7])
    assert body == (
        b"usage,metric=api_calls,org=acme,subject_id=o1,subject_type=org,w=host-1 "
        b'units=1000000i,rid="r1",tsn=5i,metadata="{\\"a\\":\\"b\\"}",source="api" 7\n'
    )


def test_usage_encoder_overflow_tag_and_cache() -> None:
    """The overflow tag c appears only when non-zero and prefixes are cached per series."""
    enc = UsageEncoder()
    body = enc.encode([row(), row(id="r2")], overflow=[0, 3]).decode().splitlines()
    assert body[0].startswith("usage,metric=api_calls,subject_id=o1,subject_type=org ")
    assert body[1].startswith("usage,c=3,metric=api_calls,subject_id=o1,subject_type=org ")
    assert enc.prefix(row()) is enc.prefix(row(id="other"))


@pytest.mark.parametrize("rid", ['a"b', "a\\", '\\"', *NASTY_NAMES])
def test_usage_encoder_escapes_record_ids(rid: str) -> None:
    """Record ids are escaped exactly like any other string field."""
    line = UsageEncoder().encode([row(id=rid)]).decode()
    assert f",rid={escape_field_string(rid)},tsn=5i " in line


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
def test_units_are_written_as_integers(units: int) -> None:
    """A quantity is its integer units, written ``<digits>i``: exact over the whole 64-bit
    range."""
    line = UsageEncoder().encode([row(quantity=units)]).decode()
    text = line.split(" units=", 1)[1].split(",", 1)[0]
    assert text == f"{units}i"
    assert int(text[:-1]) == units


@pytest.mark.parametrize("bad", [1.0, 0.5, "3", None, True])
def test_units_must_be_ints(bad: object) -> None:
    """A row whose quantity is not an int is refused rather than written as something
    InfluxDB would read as another type."""
    with pytest.raises(TypeError, match="units must be an int"):
        UsageEncoder().encode([row(quantity=bad)])


def test_encode_point_fields_and_tags() -> None:
    """Fields get their line-protocol types, None fields and empty tags are left out."""
    line = encode_point(
        "m", {"b": "", "a": "x y"}, {"f": 1.5, "i": -3, "t": True, "s": "q", "n": None}, 9
    )
    assert line == 'm,a=x\\ y f=1.5,i=-3i,t=true,s="q" 9'
    with pytest.raises(ValueError):
        encode_point("m", {"a": "b"}, {"n": None}, 1)


@given(metadata)
def test_metadata_never_holds_a_raw_newline(text: str | None) -> None:
    """Metadata as the domain stores it never contains a line break once escaped."""
    if text is not None:
        assert "\n" not in escape_field_string(text)


def test_dimension_tags_follow_the_metric_scope_and_values() -> None:
    """A known metric's rows carry ``dim.<name>`` tags (escaped, sorted with the others); a
    record without a value has none; another scope of the same key, or a metric not known,
    gets none; a value recording would refuse gives none."""
    enc = UsageEncoder("usage", writer="w")
    enc.know("tokens", "acme", ("model", "seats"))
    meta = json.dumps({"model": "a, b=c\\", "seats": 3, "other": "x"})
    scoped = enc.encode([row(metric_key="tokens", org_id="acme", metadata=meta)]).decode()
    assert scoped.startswith(
        f"usage,dim.model=a\\,\\ b\\=c{ALT},dim.seats=3,metric=tokens,org=acme,subject_id=o1,"
        "subject_type=org,w=w "
    )
    for other in (row(metric_key="tokens", metadata=meta), row(metadata=meta)):
        assert "dim." not in enc.encode([other]).decode()
    for meta in (None, "{}", "[1]", "null", json.dumps({"model": None, "seats": 1.5})):
        line = enc.encode([row(metric_key="tokens", org_id="acme", metadata=meta)]).decode()
        assert "dim." not in line


def test_knowing_a_metric_later_drops_its_cached_prefixes() -> None:
    """Rows encoded before their metric's dimensions were known do not keep a prefix without
    them; knowing a metric without dimensions keeps the cache."""
    enc = UsageEncoder()
    meta = json.dumps({"model": "m"})
    assert "dim." not in enc.encode([row(metadata=meta)]).decode()
    plain = enc.prefix(row())
    enc.know("other", None, ())
    assert enc.prefix(row()) is plain
    enc.know("api_calls", None, ("model",))
    assert (
        enc.encode([row(metadata=meta)]).decode().startswith("usage,dim.model=m,metric=api_calls,")
    )
    assert enc.dimensions("api_calls", None) == ("model",) and enc.knows("other", None)
    enc.know("api_calls", None, ())
    assert "dim." not in enc.encode([row(metadata=meta)]).decode()
