"""InfluxDB line protocol: one encoder shared by every InfluxDB adapter.

Escaping follows what InfluxDB's parser really does (checked against 1.6.7):

* measurement: tsmeter's own names only (letters, digits, ``_ . / + -``);
* tag keys, tag values, field keys: ``,``, ``=`` and space are escaped. A
  backslash is kept literally, except where the parser would read it as an
  escape (before ``,``, ``=``, space, at the end of the value, and in field
  keys before ``"``); there it is
  written as ``⧵`` (U+29F5), and a ``⧵`` in the data is doubled, so tag values
  round-trip exactly (see :func:`decode_tag`);
* string field values: ``\\`` and ``"`` are escaped;
* newlines cannot occur: tsmeter rejects control characters in names, and
  metadata is JSON, whose strings never hold a raw newline.

Quantities are integers (field ``units``, written ``123i``); other floats are written with
``repr``, the shortest text that reads back as the same double.

>>> print(escape_tag("org 1,=x"))
org\\ 1\\,\\=x
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

import msgspec

from tsmeter.adapters.influxdb.speedups import native
from tsmeter.domain import RecordRow
from tsmeter.domain.properties import property_value
from tsmeter.errors import ValidationError

__all__ = [
    "DIMENSION_TAG",
    "UsageEncoder",
    "decode_tag",
    "dimension_tags",
    "encode_point",
    "escape_field_string",
    "escape_tag",
    "tag_value",
]

_TAG = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_ALT = "\u29f5"  # ⧵ REVERSE SOLIDUS OPERATOR
_RISKY_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")
_RISKY_IN_FIELD_KEY = re.compile(r'\\(?=[,= "]|$)')  # field keys also unescape \"
_MEASUREMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+-]*")
_DECODE = re.compile(f"{_ALT}{_ALT}|{_ALT}")
#: the tag key of dimension ``name`` on raw usage points: ``DIMENSION_TAG.format(name)``
DIMENSION_TAG = "dim.{}"
_metadata = msgspec.json.Decoder()


def _alt(value: str, risky: re.Pattern[str]) -> str:
    if _ALT in value:
        value = value.replace(_ALT, _ALT + _ALT)
    if "\\" in value:
        value = risky.sub(_ALT, value)
    return value


def tag_value(value: str) -> str:
    """The tag value as stored in InfluxDB (before line-protocol escaping).

    Backslashes the parser would misread become ``⧵``; a ``⧵`` in the data is
    doubled. Queries must compare tags with this form.

    >>> tag_value("a\\\\b"), tag_value("a\\\\"), tag_value("a\\u29f5")
    ('a\\\\b', 'a⧵', 'a⧵⧵')
    """
    return _alt(value, _RISKY_BACKSLASH)


def decode_tag(stored: str) -> str:
    """Invert :func:`tag_value` on a tag value read back from InfluxDB."""
    if _ALT not in stored:
        return stored
    return _DECODE.sub(lambda m: _ALT if len(m.group()) == 2 else "\\", stored)


def escape_tag(value: str) -> str:
    """A tag key or value as it must appear in a line (``tag_value`` applied first)."""
    return tag_value(value).translate(_TAG)


def escape_field_key(value: str) -> str:
    """A field key as it must appear in a line (read back with :func:`decode_tag`)."""
    return _alt(value, _RISKY_IN_FIELD_KEY).translate(_TAG)


def escape_measurement(value: str) -> str:
    """A measurement name as it must appear in a line: tsmeter's names only (letters, digits
    and ``_ . / + -``), since InfluxDB reads backslashes and a leading ``#`` in them its own
    way.

    >>> escape_measurement("usage_daily.America/Port-au-Prince")
    'usage_daily.America/Port-au-Prince'
    """
    if not _MEASUREMENT_NAME.fullmatch(value):
        raise ValueError(f"unsupported measurement name {value!r}")
    return value


def escape_field_string(value: str) -> str:
    """A string field value with its quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return escape_field_string(str(value))


def series_prefix(measurement: str, tags: Iterable[tuple[str, str]]) -> str:
    """``measurement,k=v,...`` with tags sorted by key (InfluxDB's preferred order)."""
    parts = [escape_measurement(measurement)]
    parts += [f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags) if v != ""]
    return ",".join(parts)


def encode_point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, object],
    time_ns: int,
) -> str:
    """One line (without newline) for a point; ``None`` fields and empty tags are left out.

    >>> encode_point("usage", {"metric": "api calls"}, {"quantity": 1.0, "rid": 'a"b'}, 5)
    'usage,metric=api\\\\ calls quantity=1.0,rid="a\\\\"b" 5'
    """
    body = ",".join(
        f"{escape_field_key(k)}={_field(v)}" for k, v in fields.items() if v is not None
    )
    if not body:
        raise ValueError("a point needs at least one field")
    return f"{series_prefix(measurement, tags.items())} {body} {time_ns}"


def dimension_tags(names: Sequence[str], metadata: str | None) -> tuple[tuple[str, str], ...]:
    """The ``dim.<name>`` tags of a record whose metric declares dimensions ``names``, from its
    metadata (JSON text): each value as :func:`~tsmeter.domain.properties.property_value`
    keeps it; a dimension the record has no value for has no tag. A value recording refuses
    (a float, a list, text with control characters) never reaches a store through the Meter;
    should one come, it has no tag either: writing a point must not fail on its data.

    >>> dimension_tags(("model", "beta", "region"), '{"model": "gpt 4, mini", "beta": true}')
    (('dim.model', 'gpt 4, mini'), ('dim.beta', 'true'))
    """
    if metadata is None:
        return ()
    try:
        found = _metadata.decode(metadata)
    except (msgspec.DecodeError, UnicodeError):
        return ()
    if not isinstance(found, dict):
        return ()
    tags = []
    for name in names:
        value = found.get(name)
        if value is None:
            continue
        try:
            tags.append((DIMENSION_TAG.format(name), property_value(name, value)))
        except ValidationError:
            continue
    return tuple(tags)


class UsageEncoder:
    """Encodes usage records as points of the raw-usage measurement, fast.

    The escaped ``measurement,tags`` prefix is cached per series, so a
    million records encode in well under a second. A point's time is the
    record's timestamp unless the caller moved it (see the InfluxDB store's
    collision handling); the exact timestamp is always kept in field ``tsn``.

    >>> enc = UsageEncoder("usage", writer="h1")
    >>> row = RecordRow("r1", "api calls", "org", "o,1", None, 1_000_000, 5, None, None)
    >>> print(enc.encode([row]).decode(), end="")
    usage,metric=api\\ calls,subject_id=o\\,1,subject_type=org,w=h1 units=1000000i,rid="r1",tsn=5i 5

    The rows of a metric with dimensions (``know``) carry them as tags ``dim.<name>``
    (:func:`dimension_tags`). Their prefix depends on the record's metadata, so it is kept
    apart from the per-series cache and made by :meth:`prefix` for each such row (the
    compiled path calls it on every row it finds no cached prefix for): the rows of metrics
    without dimensions cost nothing more.

    >>> enc.know("tokens", None, ("model",))
    >>> row = row._replace(metric_key="tokens", metadata='{"model": "a=b c", "x": 1}')
    >>> print(enc.encode([row]).decode(), end="")  # doctest: +NORMALIZE_WHITESPACE
    usage,dim.model=a\\=b\\ c,metric=tokens,subject_id=o\\,1,subject_type=org,w=h1
    units=1000000i,rid="r1",tsn=5i,metadata="{\\"model\\": \\"a=b c\\", \\"x\\": 1}" 5
    """

    #: metadata texts whose dimension tags are remembered at most (see ``_dimension_tags``)
    DIMENSION_TEXTS = 20_000

    def __init__(self, measurement: str = "usage", *, writer: str = "") -> None:
        self.measurement = measurement
        self.writer = writer
        self._prefixes: dict[tuple[str, str, str, str | None, int], str] = {}
        # (metric key, org) -> the metric's dimension names (a metric known to have none: ())
        self._dimensions: dict[tuple[str, str | None], tuple[str, ...]] = {}
        # (metric, subject type, subject id, org, overflow, dimension tags) -> prefix
        self._dimension_prefixes: dict[tuple[object, ...], str] = {}
        # (dimension names, metadata text) -> its dimension tags, while that pays
        self._remembering = True
        self._hits = 0
        self._dimension_values: dict[
            tuple[tuple[str, ...], str | None], tuple[tuple[str, str], ...]
        ] = {}

    def know(self, metric_key: str, org_id: str | None, dimensions: Sequence[str]) -> None:
        """Say which dimensions the metric ``metric_key`` of scope ``org_id`` declares (its
        rows' ``org_id`` is that scope). A metric not known has none."""
        pair, names = (metric_key, org_id), tuple(dimensions)
        if self._dimensions.get(pair) == names:
            return
        had = self._dimensions.get(pair, ())
        self._dimensions[pair] = names
        if had or names:  # its cached prefixes were made with other tags
            self._prefixes.clear()
            self._dimension_prefixes.clear()

    def knows(self, metric_key: str, org_id: str | None) -> bool:
        """Whether :meth:`know` was told about this metric."""
        return (metric_key, org_id) in self._dimensions

    def dimensions(self, metric_key: str, org_id: str | None) -> tuple[str, ...]:
        """The dimension names known for this metric (none if it is not known)."""
        return self._dimensions.get((metric_key, org_id), ())

    def prefix(self, row: RecordRow, overflow: int = 0) -> str:
        """The escaped series prefix of ``row`` (``overflow`` > 0 adds tag ``c``; a metric
        with dimensions adds the row's ``dim.<name>`` tags)."""
        key = (row[1], row[2], row[3], row[4], overflow)
        found = self._prefixes.get(key)
        if found is not None:
            return found
        names = self._dimensions.get((row[1], row[4]))
        if names:
            return self._dimension_prefix(row, overflow, names)
        if len(self._prefixes) > 200_000:
            self._prefixes.clear()
        found = self._prefixes[key] = series_prefix(self.measurement, self._tags(row, overflow))
        return found

    def _tags(self, row: RecordRow, overflow: int) -> list[tuple[str, str]]:
        """The series tags of a row: its metric, subject and org, the writer, the overflow."""
        return [
            ("metric", row[1]),
            ("subject_type", row[2]),
            ("subject_id", row[3]),
            ("org", row[4] or ""),
            ("w", self.writer),
            ("c", str(overflow) if overflow else ""),
        ]

    def _dimension_tags(
        self, names: tuple[str, ...], text: str | None
    ) -> tuple[tuple[str, str], ...]:
        """:func:`dimension_tags`, remembered by metadata text while records repeat theirs (at
        least every other lookup a hit); metadata unique to each record (request ids) is not
        remembered, and is tried again ten times DIMENSION_TEXTS records later."""
        if self._remembering:
            held = self._dimension_values.get((names, text))
            if held is not None:
                self._hits += 1
                return held
        tags = dimension_tags(names, text)
        if self._remembering:
            self._dimension_values[(names, text)] = tags
            if len(self._dimension_values) >= self.DIMENSION_TEXTS:
                self._remembering = self._hits >= len(self._dimension_values)
                self._dimension_values.clear()
                self._hits = 0
        else:
            self._hits += 1  # records since remembering stopped
            if self._hits >= 10 * self.DIMENSION_TEXTS:
                self._remembering, self._hits = True, 0
        return tags

    def _dimension_prefix(self, row: RecordRow, overflow: int, names: tuple[str, ...]) -> str:
        """The prefix of a row of a metric with dimensions (never in the per-series cache)."""
        dims = self._dimension_tags(names, row[7])
        key = (row[1], row[2], row[3], row[4], overflow, dims)
        found = self._dimension_prefixes.get(key)
        if found is None:
            if len(self._dimension_prefixes) > 200_000:
                self._dimension_prefixes.clear()
            tags = [*self._tags(row, overflow), *dims]
            found = self._dimension_prefixes[key] = series_prefix(self.measurement, tags)
        return found

    def encode(
        self,
        rows: Sequence[RecordRow],
        times: Sequence[int] | None = None,
        overflow: Sequence[int] | None = None,
    ) -> bytes:
        """Line protocol for ``rows``, one point each, newline-terminated, UTF-8.

        ``times`` (point times) and ``overflow`` (tag ``c``) default to the
        record timestamps and no overflow tag. A row's quantity (its units) must be an int.
        """
        prefixes, slow = self._prefixes, self.prefix
        if native is not None and type(rows) is list:
            body: bytes = native.encode_usage(
                rows,
                times if times is None or type(times) is list else list(times),
                overflow if overflow is None or type(overflow) is list else list(overflow),
                prefixes,
                slow,
            )
            return body
        out: list[str] = []
        append = out.append
        at = times if times is not None else [row[6] for row in rows]
        tags = overflow if overflow is not None else repeat(0, len(rows))
        for row, time, c in zip(rows, at, tags, strict=True):
            prefix = prefixes.get((row[1], row[2], row[3], row[4], c)) or slow(row, c)
            rid, metadata, source = row[0], row[7], row[8]
            if "\\" in rid or '"' in rid:
                rid = rid.replace("\\", "\\\\").replace('"', '\\"')
            ts = str(row[6])
            units = row[5]
            if type(units) is not int:
                raise TypeError(f"encode: a record's units must be an int, got {units!r}")
            if metadata is None and source is None:
                append(f'{prefix} units={units}i,rid="{rid}",tsn={ts}i {time}\n')
                continue
            line = f'{prefix} units={units}i,rid="{rid}",tsn={ts}i'
            if metadata is not None:
                line += f",metadata={escape_field_string(metadata)}"
            if source is not None:
                line += f",source={escape_field_string(source)}"
            append(f"{line} {time}\n")
        return "".join(out).encode()
