"""The point schema tsmeter writes to InfluxDB, and how rows map to and from it.

Raw usage, measurement ``usage``:
    tags   ``metric``, ``subject_type``, ``subject_id``, ``org`` (org-scoped metrics only),
           ``w`` (the writer), ``c`` (only on the rare points that need it, see below);
           for a metric with dimensions, ``dim.<name>`` per dimension the record has a
           value for (``property_value`` of ``metadata[name]``: text, integers in decimal,
           booleans ``true``/``false``; stored as :func:`tag_value`, read back with
           :func:`decode_tag`; no tag where the record has none). Dimension names are
           identifiers, so ``GROUP BY "dim.model"`` needs no other quoting. A point's slot
           (below) is still chosen per (metric, subject, org), whatever its dimension
           values: records of one subject at one instant in different dimension series
           get distinct times too, and a retried record finds its point where it went
    fields ``units`` (integer: the quantity times ``10 ** precision`` of its metric), ``rid``
           (record id), ``tsn`` (the record's exact time, ns, integer), ``metadata`` (JSON
           text), ``source``; points written before quantities were exact have a float
           ``quantity`` instead of ``units`` until ``tsmeter influx convert`` adds ``units``
    time   the record's timestamp, or a free nanosecond of the same microsecond

Summaries, measurement ``usage_<period>`` (``usage_hourly`` … ``usage_yearly``; for a
time zone other than UTC ``usage_<period>.<zone>``, e.g. ``usage_daily.Europe/Paris``):
    tags   ``metric``, ``subject_type``, ``subject_id``, ``org``
    fields ``count``, ``units_sum``, ``units_min``, ``units_max``, ``units_last`` (integers,
           units), ``last_ts`` (ns, integer); the float ``sum`` … ``last`` of earlier
           versions are ignored
    time   the period start; rewriting a summary overwrites it

Events, measurement ``metering_events``:
    tags   ``event`` (``threshold.exceeded``, ...), ``metric``, ``subject_type``,
           ``subject_id``, ``org``
    fields ``data`` (JSON text: alert id, threshold id, level, values, window)
    time   when it happened (events of one series at one time spread 1 ns apart)

Threshold windows, measurement ``threshold_windows`` (what an InfluxQL annotation needs,
as InfluxQL cannot read ``data``), one point per threshold event:
    tags   ``event``, ``threshold_id``, ``level``, ``metric``, ``subject_type``,
           ``subject_id``, ``org`` (two thresholds or two levels of one subject and window
           stay apart; a later event of the same kind overwrites the point)
    fields ``end_ms`` (integer: the window's end, epoch milliseconds as Grafana's
           annotations take it), ``text`` (``api_calls exceeded for org acme: 11 of 10``)
    time   the window's start (``periodStart``); the event's time stands in for a missing
           start or end (lifetime windows)

Bookkeeping: ``usage_collisions`` marks the (series, microsecond) slots where a point had
to move off its exact time; ``usage_dirty`` logs which (metric, org, UTC hour) received
records (tag ``w`` the writer, time = the writer's clock) so aggregation is incremental;
``tsmeter_state`` keeps, per period type and zone, the ledger of the log entries processed
(:mod:`~tsmeter.adapters.influxdb.changelog`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tsmeter.adapters.influxdb.lineprotocol import decode_tag, tag_value
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.quantities import Rounding, to_units
from tsmeter.errors import StorageUnavailableError

RAW = "usage"
COLLISIONS = "usage_collisions"
DIRTY = "usage_dirty"
STATE = "tsmeter_state"
EVENTS = "metering_events"
THRESHOLD_WINDOWS = "threshold_windows"
SERIES_TAGS = ("metric", "subject_type", "subject_id", "org")

SeriesKey = tuple[str, str, str, str | None]  # (metric_key, subject_type, subject_id, org_id)


def summary_measurement(period: PeriodType, timezone: str) -> str:
    """The measurement holding ``period`` summaries computed in ``timezone``.

    >>> summary_measurement(PeriodType.DAILY, "Europe/Paris")
    'usage_daily.Europe/Paris'
    """
    name = f"usage_{period.value.lower()}"
    return name if timezone == "UTC" else f"{name}.{timezone}"


def series_of(tags: Mapping[str, Any]) -> SeriesKey:
    """The series key of a result's tags (decoded back to the original strings)."""
    org = tags.get("org") or ""
    return (
        decode_tag(tags["metric"]),
        decode_tag(tags["subject_type"]),
        decode_tag(tags["subject_id"]),
        decode_tag(org) if org else None,
    )


def series_condition(keys: list[SeriesKey], params: dict[str, Any], *, prefix: str = "s") -> str:
    """An InfluxQL condition matching any of ``keys``, with values bound into ``params``.

    >>> p = {}
    >>> series_condition([("m", "org", "o 1", None)], p)
    '(("metric" = $s0m AND "subject_type" = $s0t AND "subject_id" = $s0s AND "org" = $s0o))'
    >>> p["s0s"], p["s0o"]
    ('o 1', '')
    """
    terms = []
    for i, (metric, subject_type, subject_id, org) in enumerate(keys):
        name = f"{prefix}{i}"
        params[f"{name}m"] = tag_value(metric)
        params[f"{name}t"] = tag_value(subject_type)
        params[f"{name}s"] = tag_value(subject_id)
        params[f"{name}o"] = tag_value(org) if org else ""
        terms.append(
            f'("metric" = ${name}m AND "subject_type" = ${name}t'
            f' AND "subject_id" = ${name}s AND "org" = ${name}o)'
        )
    return "(" + " OR ".join(terms) + ")"


def metric_condition(
    metric_key: str,
    org_id: str | None,
    subject_type: str | None,
    subject_id: str | None,
    params: dict[str, Any],
) -> str:
    """An InfluxQL condition for one metric, optionally one subject type / subject."""
    params["metric"] = tag_value(metric_key)
    params["org"] = tag_value(org_id) if org_id else ""
    terms = ['"metric" = $metric', '"org" = $org']
    if subject_type is not None:
        params["subject_type"] = tag_value(subject_type)
        terms.append('"subject_type" = $subject_type')
    if subject_id is not None:
        params["subject_id"] = tag_value(subject_id)
        terms.append('"subject_id" = $subject_id')
    return " AND ".join(terms)


def event_matches(event: str, name: str | None) -> bool:
    """Whether a metering event is of kind ``name`` or of its family (``threshold`` matches
    ``threshold.exceeded``); every event when ``name`` is None.

    >>> event_matches("threshold.exceeded", "threshold"), event_matches("thresholds.x", "threshold")
    (True, False)
    """
    return name is None or event == name or event.startswith(name + ".")


def complete(values: Mapping[str, Any]) -> bool:
    """Whether a raw point read back has its record fields. InfluxDB stores each field of a
    point separately, so a read that runs while the point is being written can see some
    fields and not others: such a point is not a record yet. A point of an earlier version
    has a float ``quantity`` instead of ``units``.

    >>> complete({"rid": "r1", "units": 1}), complete({"rid": "r1", "units": None})
    (True, False)
    """
    return values.get("rid") is not None and (
        values.get("units") is not None or values.get("quantity") is not None
    )


def series_key_of(tags: Mapping[str, Any], values: Mapping[str, Any]) -> SeriesKey:
    """The series of a raw point (tags from GROUP BY or columns)."""
    return series_of({**{k: str(values[k]) for k in SERIES_TAGS if values.get(k)}, **tags})


#: (metric, org) -> precision of the metrics whose unconverted points raw reads may convert
Precisions = Mapping[tuple[str, str | None], int]

#: what the error says about unconverted points
CONVERT_HINT = (
    "run `tsmeter influx convert` once to add integer units to points written by earlier"
    " versions (float quantity)"
)


def legacy_units(metric: str, org: str | None, quantity: object, precisions: Precisions) -> int:
    """The units of an unconverted point's float ``quantity``, rounded half to even at its
    metric's precision (as ``tsmeter influx convert`` writes them); a metric whose precision
    the store was not told is an error naming the command.

    >>> legacy_units("gb", None, 0.125, {("gb", None): 2})
    12
    """
    precision = precisions.get((metric, org))
    if precision is None:
        raise StorageUnavailableError(
            f"a point of metric {metric!r} has no integer units (it was written by an earlier"
            f" version); {CONVERT_HINT}"
        )
    return to_units("quantity", float(quantity), precision, Rounding.HALF_EVEN)  # type: ignore[arg-type]


def row_of(
    tags: dict[str, str], values: dict[str, Any], precisions: Precisions | None = None
) -> RecordRow:
    """A stored record from a raw point (tags from GROUP BY or columns); ``precisions``
    converts a point of an earlier version (see :func:`legacy_units`)."""
    merged = {**{k: str(values[k]) for k in SERIES_TAGS if values.get(k)}, **tags}
    metric, subject_type, subject_id, org = series_of(merged)
    tsn = values.get("tsn")
    units = values.get("units")
    return RecordRow(
        values["rid"],
        metric,
        subject_type,
        subject_id,
        org,
        int(units) if units is not None
        else legacy_units(metric, org, values["quantity"], precisions or {}),
        int(tsn if tsn is not None else values["time"]),
        values.get("metadata"),
        values.get("source"),
    )  # fmt: skip
