"""Server-side roll-ups on InfluxDB 2.x: Flux tasks that write tsmeter's summaries.

One task per period type, in the meter's time zone, writing the measurements, tags and
fields the aggregator writes (``usage_daily.Europe/Paris``: ``count``, ``units_sum``,
``units_min``, ``units_max``, ``units_last``, ``last_ts``, ``computed_at``, all integers;
see :mod:`~tsmeter.adapters.influxdb.schema`). Each run recomputes every period that starts
inside its look-back window from the raw points (``LAST`` by timestamp, then record id),
so late records are folded in and re-running overwrites the same points with the same
values. Windows: hours are UTC hours shifted by the zone's minutes (a zone whose hours do
not start at a fixed minute is refused), days, ISO weeks (Monday), months and years follow
the zone's calendar through Flux's ``location``.

Quantities are the raw points' integer ``units`` and stay integers through the reduction
(Flux's ``+`` on ints gives an int), so sums are exact — within 64 bits: Flux wraps an
``int`` sum around on overflow without an error, and a task cannot report one. Readers of
the summaries check ``count × max(|units_min|, |units_max|) ≤ 2**63-1``
(:func:`~tsmeter.adapters.influxdb.cq.summed_exactly`; the 2.x store's reads do, in
:mod:`~tsmeter.adapters.influxdb.fluxrollup`). Points without ``units`` (written before
quantities were units, until ``tsmeter influx convert``) are left out. After upgrading from
float quantities, run ``tsmeter influx install-rollups`` again: it updates the tasks of the
same names, which read ``quantity``.

Task scripts cannot take parameters: the bucket, names and zone are embedded as escaped
string literals (:func:`~tsmeter.adapters.influxdb.flux.string`), durations are validated.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from influxdb_client.domain.task_create_request import TaskCreateRequest
from influxdb_client.domain.task_update_request import TaskUpdateRequest

from tsmeter.adapters.influxdb.flux import duration, string
from tsmeter.adapters.influxdb.schema import RAW, summary_measurement
from tsmeter.adapters.influxdb.v2client import InfluxV2Client
from tsmeter.domain import MetricDefinition, PeriodType, ResetPeriod
from tsmeter.domain.periods import Calendar
from tsmeter.errors import ValidationError

__all__ = ["LOOKBACK", "install", "periods_for", "task_name", "task_script", "task_scripts"]

#: how far back each run recomputes, per period type (hourly: ``--lateness``)
LOOKBACK = {
    PeriodType.HOURLY: "3h",
    PeriodType.DAILY: "2d",
    PeriodType.WEEKLY: "8d",
    PeriodType.MONTHLY: "32d",
    PeriodType.YEARLY: "367d",
}
#: how often the tasks of the longer periods run (the others: ``every``)
_EVERY = {PeriodType.WEEKLY: "1h", PeriodType.MONTHLY: "1h", PeriodType.YEARLY: "1d"}
_WINDOW = {
    PeriodType.DAILY: "every: 1d",
    PeriodType.WEEKLY: "every: 1w, offset: 4d",  # Flux weeks start on Thursday, the epoch's day
    PeriodType.MONTHLY: "every: 1mo",
    PeriodType.YEARLY: "every: 1y",
}
_NEWER = "accumulator.count == 0 or r.tsn > accumulator.last_ts or (r.tsn == accumulator.last_ts and r.rid > accumulator.last_id)"  # noqa: E501


def periods_for(metrics: Iterable[MetricDefinition]) -> list[PeriodType]:
    """The period types to keep up to date: hourly and daily (what dashboards read), and
    every period a metric resets on.

    >>> [p.value for p in periods_for([MetricDefinition(key="a", reset_period="YEARLY")])]
    ['HOURLY', 'DAILY', 'YEARLY']
    """
    wanted = {PeriodType.HOURLY, PeriodType.DAILY}
    wanted |= {PeriodType(m.reset_period.value) for m in metrics
               if m.reset_period is not ResetPeriod.NEVER}  # fmt: skip
    return [p for p in PeriodType if p in wanted]


def task_name(bucket: str, period: PeriodType, timezone: str) -> str:
    """The name a task is found and upserted by.

    >>> task_name("usage", PeriodType.DAILY, "Europe/Paris")
    'tsmeter usage daily Europe/Paris'
    """
    return f"tsmeter {bucket} {period.value.lower()} {timezone}"


def hour_offset(timezone: str, now: datetime | None = None) -> int:
    """Minutes past the UTC hour at which the zone's hours start, checked constant from a
    year ago to ten years ahead (Asia/Kathmandu: 15)."""
    zone = ZoneInfo(timezone)
    start = (now or datetime.now(UTC)) - timedelta(days=366)
    seen = set()
    for day in range(0, 11 * 366):
        offset = (start + timedelta(days=day)).astimezone(zone).utcoffset() or timedelta()
        seen.add(int(-offset.total_seconds()) % 3600 // 60)
    if len(seen) != 1:
        raise ValidationError(
            "timezone",
            f"hours in {timezone} do not start at a fixed minute past the UTC hour: use"
            " `tsmeter aggregate` for hourly summaries",
        )
    return seen.pop()


def task_script(
    bucket: str,
    period: PeriodType,
    timezone: str,
    *,
    every: str = "1m",
    offset: str = "1m",
    lookback: str | None = None,
) -> str:
    """The Flux task that keeps ``period`` summaries of ``bucket`` in ``timezone`` current."""
    Calendar(timezone)  # an unknown zone is a ValidationError here, not a failing task
    every = duration(_EVERY.get(period, every), "every")
    offset = duration(offset, "offset")
    lookback = duration(lookback or LOOKBACK[period], "lateness")
    if period is PeriodType.HOURLY:
        window = f"every: 1h, offset: {hour_offset(timezone)}m"
    elif timezone == "UTC":
        window = _WINDOW[period]
    else:
        window = f"{_WINDOW[period]}, location: timezone.location(name: {string(timezone)})"
    target = string(bucket)
    return f"""import "date"
import "influxdata/influxdb"
import "timezone"

option task = {{name: {string(task_name(bucket, period, timezone))}, every: {every}, offset: {offset}}}

start = date.sub(d: {lookback}, from: now())

from(bucket: {target})
    |> range(start: start)
    |> filter(fn: (r) => r._measurement == {string(RAW)} and (r._field == "units" or r._field == "rid" or r._field == "tsn"))
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> filter(fn: (r) => exists r.units and exists r.rid and exists r.tsn)
    |> group(columns: ["metric", "subject_type", "subject_id", "org"])
    |> window({window})
    |> filter(fn: (r) => r._start > start)
    |> reduce(
        identity: {{count: 0, units_sum: 0, units_min: 0, units_max: 0, units_last: 0, last_ts: 0, last_id: ""}},
        fn: (r, accumulator) => ({{
            count: accumulator.count + 1,
            units_sum: accumulator.units_sum + r.units,
            units_min: if accumulator.count == 0 or r.units < accumulator.units_min then r.units else accumulator.units_min,
            units_max: if accumulator.count == 0 or r.units > accumulator.units_max then r.units else accumulator.units_max,
            units_last: if {_NEWER} then r.units else accumulator.units_last,
            last_ts: if {_NEWER} then r.tsn else accumulator.last_ts,
            last_id: if {_NEWER} then r.rid else accumulator.last_id,
        }}),
    )
    |> duplicate(column: "_start", as: "_time")
    |> drop(columns: ["_start", "_stop", "last_id"])
    |> set(key: "_measurement", value: {string(summary_measurement(period, timezone))})
    |> map(fn: (r) => ({{r with computed_at: int(v: now())}}))
    |> group(columns: ["_measurement", "metric", "subject_type", "subject_id", "org"])
    |> influxdb.wideTo(bucket: {target})
"""  # noqa: E501


def task_scripts(
    bucket: str,
    timezone: str,
    periods: Iterable[PeriodType],
    *,
    every: str = "1m",
    offset: str = "1m",
    lateness: str = "3h",
) -> dict[str, str]:
    """``name -> script`` for each period type (``lateness``: the hourly look-back)."""
    return {
        task_name(bucket, p, timezone): task_script(
            bucket, p, timezone, every=every, offset=offset,
            lookback=lateness if p is PeriodType.HOURLY else None,
        )
        for p in periods
    }  # fmt: skip


def install(
    client: InfluxV2Client,
    timezone: str,
    periods: Iterable[PeriodType],
    *,
    every: str = "1m",
    offset: str = "1m",
    lateness: str = "3h",
) -> list[str]:
    """Create or update (by name) tsmeter's tasks for ``timezone``; return their names.
    Duplicates of a name (two installs at once) are deleted, so each name is one task."""
    org = client.config.org
    wanted = task_scripts(
        client.config.bucket, timezone, periods, every=every, offset=offset, lateness=lateness
    )
    api: Any = client.sdk.tasks_api()
    for name, script in wanted.items():
        _upsert(client, api, org, name, script)
    return sorted(wanted)


def _upsert(client: InfluxV2Client, api: Any, org: str, name: str, script: str) -> None:
    """Update the task called ``name`` (deleting extra ones of that name), or create it."""

    def find() -> list[Any]:
        return [t for t in api.find_tasks(name=name, org=org) or [] if t.name == name]

    found = sorted(client.call("InfluxDB task lookup", find), key=lambda task: str(task.id))
    if not found:
        request = TaskCreateRequest(  # type: ignore[no-untyped-call]
            org=org, flux=script, status="active",
            description="tsmeter summaries (tsmeter influx install-rollups)",
        )  # fmt: skip
        client.call("InfluxDB task creation", partial(api.create_task, task_create_request=request))
        return
    first, *extra = found
    update = TaskUpdateRequest(flux=script, status="active")  # type: ignore[no-untyped-call]
    client.call("InfluxDB task update", partial(api.update_task_request, first.id, update))
    for task in extra:
        client.call("InfluxDB task deletion", partial(api.delete_task, task.id))
