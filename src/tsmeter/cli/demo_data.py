"""The demo's synthetic month of usage: seeded, seasonal, organisations of different sizes.

Records come out in time order, in chunks, so memory stays bounded. The
shape: busy weekday afternoons and quiet nights and weekends (in the meter's
time zone), slow growth over the month, and one mid-month afternoon on which
``initech``'s client retries in a loop (many more calls, slower responses).
Organisations also spend ``credits``, a metric that never resets (prepaid packs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import Any

from tsmeter.domain import PeriodType
from tsmeter.domain.periods import Calendar

__all__ = [
    "INCIDENT_ORG",
    "METRICS",
    "ORGS",
    "PREPAID_ORG",
    "Metric",
    "Org",
    "allocate",
    "generate",
    "incident_day",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class Org:
    """A customer: its share of API calls and compute, its storage and its usual latency."""

    name: str
    api_share: float
    compute_share: float
    storage_gb: float
    storage_growth: float
    latency_ms: float


@dataclass(frozen=True)
class Metric:
    """A metric the demo defines (``precision``: the decimal places its quantities keep;
    the generator writes no more than that, so nothing is rounded)."""

    key: str
    aggregation: str
    unit: str
    name: str
    reset: str = "MONTHLY"
    precision: int = 0


ORGS = (
    Org("acme", 30, 18, 820, 0.06, 95),
    Org("globex", 20, 9, 410, 0.12, 120),
    Org("umbrella", 14, 6, 1260, 0.02, 140),
    Org("initech", 9, 3, 96, 0.25, 110),
    Org("hooli", 8, 25, 640, 0.08, 80),
    Org("stark", 6, 14, 300, 0.10, 105),
    Org("wayne", 5, 4, 220, 0.04, 130),
    Org("wonka", 4, 2, 55, 0.30, 160),
    Org("tyrell", 2.5, 16, 180, 0.15, 90),
    Org("cyberdyne", 1.5, 3, 25, 0.50, 150),
)
METRICS = (
    Metric("api_calls", "COUNT", "calls", "API calls"),
    Metric("compute_minutes", "SUM", "min", "Compute time", precision=1),
    Metric("storage_gb", "MAX", "GB", "Storage (peak)", precision=2),
    Metric("response_ms", "AVG", "ms", "API response time", precision=1),
    Metric("credits", "SUM", "credits", "AI credits (prepaid)", "NEVER"),
)
INCIDENT_ORG = "initech"
INCIDENT_HOURS = (14, 15, 16)
PREPAID_ORG = "tyrell"  # the org whose credits the demo caps with a BLOCK threshold
_INCIDENT_FACTOR = 20.0
# relative traffic by local hour of day, and by weekday (Monday first)
_HOURS = (
    0.16,
    0.12,
    0.1,
    0.1,
    0.12,
    0.2,
    0.35,
    0.6,
    0.88,
    1.0,
    1.0,
    0.95,
    0.82,
    0.95,
    1.0,
    0.96,
    0.86,
    0.7,
    0.52,
    0.42,
    0.36,
    0.3,
    0.25,
    0.2,
)
_WEEKDAYS = (0.97, 1.04, 1.05, 1.0, 0.9, 0.34, 0.28)


@dataclass(frozen=True)
class _Slot:
    start_us: int
    length_us: int
    hour: int
    frac: float
    incident: bool
    api_weight: float
    compute_weight: float


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainders).

    >>> allocate(10, [1, 1, 1])
    [4, 3, 3]
    """
    scale = total / sum(weights)
    exact = [w * scale for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def incident_day(month_start: datetime) -> int:
    """Day of the month of the incident: the first Wednesday on or after the 15th."""
    day = month_start.replace(day=15)
    return 15 + (2 - day.weekday()) % 7


def _slots(calendar: Calendar, start_ns: int, end_ns: int, rng: random.Random) -> list[_Slot]:
    local_start = datetime.fromtimestamp(start_ns / 1e9, UTC).astimezone(calendar.zone)
    bad_day = incident_day(local_start)
    slots: list[_Slot] = []
    start_us, end_us = start_ns // 1000, end_ns // 1000
    at = start_us
    while at < end_us:
        local = (_EPOCH + timedelta(microseconds=at)).astimezone(calendar.zone)
        frac = (at - start_us) / (end_us - start_us)
        incident = local.day == bad_day and local.hour in INCIDENT_HOURS
        base = _WEEKDAYS[local.weekday()] * _HOURS[local.hour] * (1 + 0.12 * frac)
        api = base * rng.lognormvariate(0, 0.08)
        if incident:
            api *= 1 + (_INCIDENT_FACTOR - 1) * _org(INCIDENT_ORG).api_share / 100
        weekend = local.weekday() >= 5
        compute = (0.6 if weekend else 1.0) * (0.55 + 0.45 * _HOURS[local.hour])
        slots.append(
            _Slot(
                at,
                min(_HOUR_US, end_us - at),
                local.hour,
                frac,
                incident,
                api,
                compute * rng.lognormvariate(0, 0.1),
            )
        )
        at += _HOUR_US
    return slots


def _org(name: str) -> Org:
    return next(o for o in ORGS if o.name == name)


def generate(
    calendar: Calendar,
    start_ns: int,
    end_ns: int,
    records: int,
    seed: int,
    chunk_size: int = 50_000,
) -> Iterator[list[dict[str, Any]]]:
    """Exactly ``records`` usage records over ``[start_ns, end_ns)``, in time order, as
    ``record_batch`` input, in chunks of about ``chunk_size``. Quantities have at most their
    metric's decimal places (a float rounded to them is taken by its shortest repr, so
    ``round(x, 1)`` is exactly that one-place decimal)."""
    rng = random.Random(seed)
    slots = _slots(calendar, start_ns, end_ns, rng)
    every = max(1, math.ceil(len(ORGS) * len(slots) / (0.05 * records)))
    storage = len(ORGS) * len(range(0, len(slots), every))
    rest = records - storage
    api_total, latency_total = round(rest * 0.83), round(rest * 0.09)
    credits_total = round(rest * 0.02)
    api = allocate(api_total, [s.api_weight for s in slots])
    latency = allocate(latency_total, [s.api_weight for s in slots])
    compute_total = rest - api_total - latency_total - credits_total
    compute = allocate(compute_total, [s.compute_weight for s in slots])
    credits = allocate(credits_total, [s.compute_weight for s in slots])
    names = [o.name for o in ORGS]
    normal = list(accumulate(o.api_share for o in ORGS))
    storm = list(
        accumulate(o.api_share * (_INCIDENT_FACTOR if o.name == INCIDENT_ORG else 1) for o in ORGS)
    )
    compute_cw = list(accumulate(o.compute_share for o in ORGS))
    chunk: list[dict[str, Any]] = []
    for index, slot in enumerate(slots):
        cw = storm if slot.incident else normal
        load = 1 + 0.25 * _HOURS[slot.hour]
        batch: list[dict[str, Any]] = [
            {"metricKey": "api_calls", "subjectType": "org", "subjectId": org}
            for org in rng.choices(names, cum_weights=cw, k=api[index])
        ]
        for org in rng.choices(ORGS, cum_weights=cw, k=latency[index]):
            slow = 3.0 if slot.incident and org.name == INCIDENT_ORG else 1.0
            ms = rng.lognormvariate(math.log(org.latency_ms * load * slow), 0.35)
            batch.append(
                {
                    "metricKey": "response_ms",
                    "subjectType": "org",
                    "subjectId": org.name,
                    "quantity": round(ms, 1),
                }
            )
        for name in rng.choices(names, cum_weights=compute_cw, k=compute[index]):
            minutes = min(rng.lognormvariate(math.log(6), 0.9), 480.0)
            batch.append(
                {
                    "metricKey": "compute_minutes",
                    "subjectType": "org",
                    "subjectId": name,
                    "quantity": round(minutes, 1),
                }
            )
        for name in rng.choices(names, cum_weights=compute_cw, k=credits[index]):
            spent = max(1, round(rng.lognormvariate(math.log(20), 0.6)))
            batch.append(
                {
                    "metricKey": "credits",
                    "subjectType": "org",
                    "subjectId": name,
                    "quantity": spent,
                }
            )
        if index % every == 0:
            for o in ORGS:
                gb = o.storage_gb * (1 + o.storage_growth * slot.frac) * rng.gauss(1, 0.004)
                batch.append(
                    {
                        "metricKey": "storage_gb",
                        "subjectType": "org",
                        "subjectId": o.name,
                        "quantity": round(gb, 2),
                    }
                )
        offset, length = slot.start_us, slot.length_us
        for item in batch:
            item["timestamp"] = offset + int(rng.random() * length)
        batch.sort(key=itemgetter("timestamp"))
        for item in batch:
            item["timestamp"] = _EPOCH + timedelta(microseconds=item["timestamp"])
        chunk += batch
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def month_bounds(calendar: Calendar, month: str | None, now: datetime) -> tuple[int, int]:
    """``(start, end)`` in ns of ``month`` (``YYYY-MM``) or, if None, the month before ``now``,
    as calendar months in the calendar's zone."""
    if month is None:
        this_month = calendar.start_of(PeriodType.MONTHLY, _ns(now))
        return calendar.bounds(PeriodType.MONTHLY, this_month - 1)
    year, number = (int(part) for part in month.split("-"))
    middle = datetime(year, number, 15, 12, tzinfo=calendar.zone)
    return calendar.bounds(PeriodType.MONTHLY, _ns(middle))


def _ns(value: datetime) -> int:
    return (value.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1) * 1000
