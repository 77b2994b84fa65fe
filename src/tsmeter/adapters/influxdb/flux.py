"""Flux text for the InfluxDB 2.x store: literals, validators and the queries it runs.

User values never become query text. A query is a :class:`Flux` — text plus ``params`` —
and influxdb-client sends ``params`` as the request's ``extern`` file, where each one is an
``option`` of the same name (so the text names ``tsm_metric``, never a value). Only task
scripts, which cannot take parameters, embed values, through :func:`string` (escaped per
the Flux spec) and the validators below; the delete API's predicate has its own quoting
(:func:`delete_predicate`).

>>> print(string('a "b" ${c}'))
"a \\"b\\" \\x24{c}"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tsmeter.adapters.influxdb.lineprotocol import tag_value
from tsmeter.adapters.influxdb.schema import DIRTY, EVENTS, RAW, STATE, SeriesKey
from tsmeter.domain.validation import MAX_TIMESTAMP, to_ns
from tsmeter.errors import ValidationError

__all__ = [
    "END",
    "Flux",
    "delete_predicate",
    "duration",
    "extern_source",
    "identifier",
    "string",
]

END = to_ns(MAX_TIMESTAMP)  # every record is in [0, END); stop of "everything" ranges
Param = str | int | float | bool
Scope = tuple[str, str | None]  # (metric_key, org_id)

_STRING = str.maketrans(
    {
        **{chr(c): f"\\x{c:02x}" for c in (*range(0x20), 0x7F)},
        "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "$": "\\x24",
    }
)  # fmt: skip
_DURATION = re.compile(r"(?:[1-9][0-9]*(?:ns|us|µs|ms|s|mo|m|h|d|w|y))+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset(
    {"and", "builtin", "else", "exists", "if", "import", "not", "option", "or", "package",
     "return", "test", "testcase", "then", "true", "false"}
)  # fmt: skip


def string(value: str) -> str:
    """A Flux string literal for ``value``: ``\\`` and ``"`` escaped; newlines, tabs,
    carriage returns and other control characters (Flux's parser stops at a NUL byte)
    written as escapes; and every ``$`` as the byte escape ``\\x24``, so no ``${`` can start
    an interpolation (Flux's parser also misreads ``\\${`` after a ``$``, and ``$\\\\``).

    >>> print(string("a\\\\b\\nc"))
    "a\\\\b\\nc"
    """
    return '"' + value.translate(_STRING) + '"'


def duration(value: str, name: str = "duration") -> str:
    """``value`` if it is a positive Flux duration literal (``90s``, ``1h30m``, ``1mo``),
    else a ValidationError naming ``name``.

    >>> duration("1h30m")
    '1h30m'
    """
    if not _DURATION.fullmatch(value):
        raise ValidationError(name, f"not a Flux duration like 90s, 1h30m or 7d: {value!r}")
    return value


def identifier(value: str, name: str = "identifier") -> str:
    """``value`` if it is a plain Flux identifier (not a keyword), else a ValidationError.

    >>> identifier("tsm_lo")
    'tsm_lo'
    """
    if not _IDENT.fullmatch(value) or value in _KEYWORDS:
        raise ValidationError(name, f"not a Flux identifier: {value!r}")
    return value


def plain_identifier(value: str) -> bool:
    """Whether ``value`` is a plain Flux identifier (a key the delete API can name).

    >>> plain_identifier("subject_id"), plain_identifier("dim.model")
    (True, False)
    """
    return bool(_IDENT.fullmatch(value)) and value not in _KEYWORDS


def delete_predicate(tags: Mapping[str, str]) -> str:
    """A predicate for the delete API (``key="value" AND ...``); its values cannot be bound,
    so they are quoted here (``\\`` and ``"`` escaped, as InfluxQL strings).

    >>> print(delete_predicate({"metric": 'a "b"', "org": "x\\\\y"}))
    metric="a \\"b\\"" AND org="x\\\\y"
    """
    terms = []
    for key, value in tags.items():
        identifier(key, "tag")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        terms.append(f'{key}="{escaped}"')
    return " AND ".join(terms)


def extern_source(params: Mapping[str, Param]) -> str:
    """The ``option`` statements influxdb-client sends for ``params``, as Flux source (for
    logs and the syntax check in the tests).

    >>> print(extern_source({"tsm_m": 'x"y', "tsm_lo": -5}))
    option tsm_m = "x\\"y"
    option tsm_lo = -5
    """
    lines = []
    for key, value in params.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = string(value)
        lines.append(f"option {identifier(key)} = {text}")
    return "\n".join(lines)


@dataclass
class Flux:
    """A Flux query: the text and the values bound to the ``option`` names it uses."""

    text: str = ""
    params: dict[str, Param] = field(default_factory=dict)

    def bind(self, name: str, value: Param) -> str:
        """Bind ``value`` to ``tsm_<name>`` and return that name, for use in the text."""
        key = identifier(f"tsm_{name}")
        self.params[key] = value
        return key

    def source(self) -> str:
        """The query as the server sees it: the bound options, then the text."""
        return f"{extern_source(self.params)}\n{self.text}"


# -- predicates (the body of ``filter(fn: (r) => ...)``) --------------------------------------
def _org_term(q: Flux, org: str | None, name: str) -> str:
    return "not exists r.org" if org is None else f"r.org == {q.bind(name, tag_value(org))}"


def series_predicate(q: Flux, keys: Sequence[SeriesKey]) -> str:
    """Matches any of the series ``keys`` (tag values bound as they are stored)."""
    terms = []
    for i, (metric, subject_type, subject_id, org) in enumerate(keys):
        terms.append(
            f"(r.metric == {q.bind(f's{i}m', tag_value(metric))}"
            f" and r.subject_type == {q.bind(f's{i}t', tag_value(subject_type))}"
            f" and r.subject_id == {q.bind(f's{i}s', tag_value(subject_id))}"
            f" and {_org_term(q, org, f's{i}o')})"
        )
    return "(" + " or ".join(terms) + ")"


def scope_predicate(q: Flux, scopes: Iterable[Scope]) -> str:
    """Matches any of the (metric, org) scopes."""
    terms = [
        f"(r.metric == {q.bind(f'm{i}', tag_value(metric))} and {_org_term(q, org, f'o{i}')})"
        for i, (metric, org) in enumerate(scopes)
    ]
    return "(" + " or ".join(terms) + ")"


def metric_predicate(
    q: Flux,
    metric_key: str,
    org_id: str | None,
    subject_type: str | None = None,
    subject_id: str | None = None,
) -> str:
    """Matches one metric in one org scope, optionally one subject type / subject."""
    terms = [f"r.metric == {q.bind('metric', tag_value(metric_key))}", _org_term(q, org_id, "org")]
    if subject_type is not None:
        terms.append(f"r.subject_type == {q.bind('subject_type', tag_value(subject_type))}")
    if subject_id is not None:
        terms.append(f"r.subject_id == {q.bind('subject_id', tag_value(subject_id))}")
    return " and ".join(terms)


# -- queries ----------------------------------------------------------------------------------
def _from(q: Flux, bucket: str, lo: int, hi: int) -> str:
    return (
        f"from(bucket: {q.bind('bucket', bucket)})\n"
        f"    |> range(start: time(v: {q.bind('lo', lo)}), stop: time(v: {q.bind('hi', hi)}))\n"
    )


_PIVOT = (
    '    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    "    |> map(fn: (r) => ({r with t: int(v: r._time)}))\n"
    '    |> drop(columns: ["_start", "_stop", "_time"])\n'
)


def points(
    bucket: str, measurement: str, lo: int, hi: int, predicate: str | None, q: Flux | None = None
) -> Flux:
    """Whole points (fields as columns, time as integer ns in ``t``) of ``measurement`` in
    ``[lo, hi)`` matching ``predicate`` (built on ``q``, whose parameters it shares)."""
    q = q or Flux()
    where = f" and {predicate}" if predicate else ""
    q.text = (
        _from(q, bucket, lo, hi)
        + f"    |> filter(fn: (r) => r._measurement == {q.bind('measurement', measurement)}"
        + f"{where})\n"
        + _PIVOT
    )
    return q


def rid_lookup(bucket: str, record_id: str) -> Flux:
    """Where the raw point holding record id ``record_id`` is (its tags and time ``t``)."""
    q = Flux()
    q.text = (
        _from(q, bucket, 0, END)
        + f'    |> filter(fn: (r) => r._measurement == "{RAW}" and r._field == "rid")\n'
        + f"    |> filter(fn: (r) => r._value == {q.bind('rid', record_id)})\n"
        + "    |> limit(n: 1)\n"
        + "    |> map(fn: (r) => ({r with t: int(v: r._time)}))\n"
        + '    |> drop(columns: ["_start", "_stop", "_time"])\n'
    )
    return q


def edges(bucket: str, measurement: str, field_key: str, predicate: str, q: Flux) -> Flux:
    """The first and the last point time of each series matching ``predicate`` (columns
    ``first`` and ``last``, integer ns)."""
    head = (
        _from(q, bucket, 0, END)
        + f"    |> filter(fn: (r) => r._measurement == {q.bind('measurement', measurement)}"
        + f" and r._field == {q.bind('field', field_key)} and {predicate})\n"
    )
    q.text = (
        f"data = {head}\n"
        "union(tables: [\n"
        '    data |> first() |> map(fn: (r) => ({r with edge: "first", t: int(v: r._time)})),\n'
        '    data |> last() |> map(fn: (r) => ({r with edge: "last", t: int(v: r._time)})),\n'
        "])\n"
        '    |> keep(columns: ["edge", "t"])\n'
    )
    return q


def counts(bucket: str, predicate: str, q: Flux) -> Flux:
    """How many raw points match ``predicate``, per series (column ``_value``)."""
    q.text = (
        _from(q, bucket, 0, END)
        + f'    |> filter(fn: (r) => r._measurement == "{RAW}" and r._field == "rid"'
        + f" and {predicate})\n"
        + "    |> count()\n"
        + '    |> keep(columns: ["_value"])\n'
    )
    return q


def everything(bucket: str, predicate: str, q: Flux) -> Flux:
    """Every point of every measurement matching ``predicate``, fields as columns."""
    q.text = _from(q, bucket, 0, END) + f"    |> filter(fn: (r) => {predicate})\n" + _PIVOT
    return q


def watermark(bucket: str, key: str) -> Flux:
    """The newest aggregation state point stored under ``key``: its watermark and ledger
    (see :mod:`~tsmeter.adapters.influxdb.changelog`) as columns, its time as ``t``. The
    newest time of each field is read, so callers keep the row with the greatest ``t``
    (a field missing from the newest point shows up on an older row)."""
    q = Flux()
    q.text = (
        _from(q, bucket, 0, END)
        + f'    |> filter(fn: (r) => r._measurement == "{STATE}"'
        + f" and r.key == {q.bind('key', tag_value(key))})\n"
        + "    |> last()\n"
        + _PIVOT
    )
    return q


def _log_series_predicate(q: Flux, series: Sequence[tuple[str, str, str]]) -> str:
    """Matches any of the change-log series (metric, org, writer), given as stored."""
    terms = []
    for i, (metric, org, writer) in enumerate(series):
        org_term = "not exists r.org" if not org else f"r.org == {q.bind(f'e{i}o', org)}"
        terms.append(
            f"(r.metric == {q.bind(f'e{i}m', metric)} and {org_term}"
            f" and r.w == {q.bind(f'e{i}w', writer)})"
        )
    return "(" + " or ".join(terms) + ")"


def dirty(
    bucket: str,
    since: int,
    scope: Scope | None,
    until: int | None = None,
    series: Sequence[tuple[str, str, str]] | None = None,
) -> Flux:
    """Change-log entries stamped in ``(since, until]`` (``until`` None: no end), for one
    scope or all, and of the given series (metric, org, writer as stored) or all:
    ``metric``, ``org``, ``w``, ``_value`` (the UTC hour) and the entry's time ``t``."""
    q = Flux()
    where = ""
    if scope is not None:
        where += " and " + scope_predicate(q, [scope])
    if series is not None:
        where += " and " + _log_series_predicate(q, series)
    q.text = (
        _from(q, bucket, since + 1, END if until is None else until + 1)
        + f'    |> filter(fn: (r) => r._measurement == "{DIRTY}" and r._field == "hour"{where})\n'
        + "    |> map(fn: (r) => ({r with t: int(v: r._time)}))\n"
        + '    |> keep(columns: ["metric", "org", "w", "_value", "t"])\n'
    )
    return q


def dirty_counts(bucket: str, since: int, until: int, scope: Scope | None) -> Flux:
    """How many change-log entries each (metric, org, writer) has stamped in
    ``(since, until]`` (column ``_value``), for one scope or all."""
    q = Flux()
    where = "" if scope is None else " and " + scope_predicate(q, [scope])
    q.text = (
        _from(q, bucket, since + 1, until + 1)
        + f'    |> filter(fn: (r) => r._measurement == "{DIRTY}" and r._field == "hour"{where})\n'
        + '    |> group(columns: ["metric", "org", "w"])\n'
        + "    |> count()\n"
        + '    |> keep(columns: ["metric", "org", "w", "_value"])\n'
    )
    return q


def log_end(bucket: str) -> Flux:
    """The newest change-log entry of each series (its time ``t``)."""
    q = Flux()
    q.text = (
        _from(q, bucket, 0, END)
        + f'    |> filter(fn: (r) => r._measurement == "{DIRTY}" and r._field == "hour")\n'
        + "    |> last()\n"
        + "    |> map(fn: (r) => ({r with t: int(v: r._time)}))\n"
        + '    |> keep(columns: ["t"])\n'
    )
    return q


def raw_components(bucket: str, lo: int, hi: int, scopes: Sequence[Scope] | None) -> Flux:
    """What roll-ups need of each raw point in ``[lo, hi)``: series tags, the integer
    ``units``, ``rid`` and ``tsn``; and ``quantity``, the float of points written before
    quantities were units (a point that has it and no ``units`` is not converted yet)."""
    q = Flux()
    where = "" if scopes is None else " and " + scope_predicate(q, scopes)
    q.text = (
        _from(q, bucket, lo, hi)
        + f'    |> filter(fn: (r) => r._measurement == "{RAW}"'
        + ' and (r._field == "units" or r._field == "quantity" or r._field == "rid"'
        + f' or r._field == "tsn"){where})\n'
        + '    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        + '    |> keep(columns: ["metric", "subject_type", "subject_id", "org", "units",'
        + ' "quantity", "rid", "tsn"])\n'
    )
    return q


def events(bucket: str, lo: int, hi: int) -> Flux:
    """Metering events in ``[lo, hi)``: tags, the ``data`` field in ``_value``, time ``t``."""
    q = Flux()
    q.text = (
        _from(q, bucket, lo, hi)
        + f'    |> filter(fn: (r) => r._measurement == "{EVENTS}" and r._field == "data")\n'
        + "    |> map(fn: (r) => ({r with t: int(v: r._time)}))\n"
        + '    |> keep(columns: ["event", "metric", "subject_type", "subject_id", "org", "_value",'
        + ' "t"])\n'
    )
    return q
