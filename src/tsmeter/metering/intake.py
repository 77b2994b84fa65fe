"""Turning what callers pass to ``record``/``record_batch`` into validated rows, fast.

The rules are those of :class:`~tsmeter.domain.UsageRecord` (the same checker
functions), applied without building a pydantic model per record. A row's quantity is in
units of its metric (``metric.units``, see :mod:`tsmeter.domain.quantities`): an int, a float
(by its shortest repr), a str or a Decimal, with at most the metric's places unless it
declares a rounding, within 64 bits; a COUNT or UNIQUE_COUNT metric's record without one counts 1.

Where the compiled fast path (``_intake.c`` here) is built, it takes plain records up to the
first it cannot decide, and the Python loop takes that one (resolving its metric, or raising
its error) before handing back; ``benchmarks/intake.py`` measures it well above the paths
below. Records it cannot take one after another go a chunk at a time the way they go without
it (no C compiler, or ``TSMETER_PURE_PYTHON=1``): plain records through msgspec a chunk at a
time (types, unknown keys and ranges checked in its C code, the rest column by column); a
chunk it cannot decide without doubt goes through the Python loop, which is the reference and
names the first bad record.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from itertools import repeat
from operator import attrgetter, floordiv, mul, sub, truediv
from types import ModuleType
from typing import Annotated, Any

import msgspec

from tsmeter.domain import AggregationType, MetricDefinition, RecordRow, UsageRecord, new_ids
from tsmeter.domain.quantities import MAX_PRECISION, MAX_UNITS, to_units
from tsmeter.domain.validation import (
    EPOCH,
    MAX_NAME_LENGTH,
    MAX_TIMESTAMP,
    check_metadata,
    check_name,
    parse_timestamp,
    to_ns,
)
from tsmeter.errors import ValidationError
from tsmeter.metering.properties import PropertyCheck

# field name in JSON -> attribute name; both spellings are accepted
_FIELDS = {
    "id": "id",
    "metricKey": "metric_key",
    "subjectType": "subject_type",
    "subjectId": "subject_id",
    "quantity": "quantity",
    "timestamp": "timestamp",
    "metadata": "metadata",
    "source": "source",
    "orgId": "org_id",
}
_ALLOWED = frozenset(_FIELDS) | frozenset(_FIELDS.values())

_US = timedelta(microseconds=1)
MetricResolver = Callable[[str, str | None], MetricDefinition]

#: records per msgspec conversion: one record it cannot decide sends only its chunk to the loop
CHUNK = 2048
#: records in a row the compiled path gives back to the loop before a chunk goes the other way
STUCK = 16
#: the msgspec path on (tests turn it off to compare it with the Python loop)
fast_path = True
#: the compiled path on where it is built (tests turn it off to compare the other paths)
compiled_path = True


def _load_compiled() -> ModuleType | None:
    """``tsmeter.metering._intake``, or None where it is not built or TSMETER_PURE_PYTHON
    is set (as the InfluxDB adapter's speedups are loaded)."""
    if os.environ.get("TSMETER_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("tsmeter.metering._intake")
    except ImportError:
        return None


compiled = _load_compiled()


def describe() -> str:
    """Which intake path runs first (and why), for benchmark output."""
    if compiled is not None and compiled_path:
        return "compiled (tsmeter.metering._intake)"
    path = "msgspec" if fast_path else "Python loop"
    if compiled is None and os.environ.get("TSMETER_PURE_PYTHON", "") not in ("", "0"):
        return f"{path} (TSMETER_PURE_PYTHON is set)"
    return path if compiled is not None else f"{path} (tsmeter.metering._intake is not built)"


# The msgspec type of each field. Names are checked afterwards, once per distinct value;
# metadata is taken as given and checked by check_metadata; a quantity too (an int, float,
# str or Decimal: msgspec has no union of str and Decimal), made units a column at a time by
# _units; a timestamp is a datetime, or a string of the plain RFC 3339 form (see _RFC3339;
# other strings go to the Python loop, whose rules are stricter than RFC 3339's).
_TYPES: dict[str, Any] = {
    "id": Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)] | None,
    "metric_key": str,
    "subject_type": str,
    "subject_id": str,
    "org_id": str | None,
    "quantity": Any,
    "timestamp": Annotated[datetime, msgspec.Meta(tz=True)] | None,
    "metadata": Any,
    "source": str | None,
}
_REQUIRED = ("metric_key", "subject_type", "subject_id")
_ATTRIBUTE = {**_FIELDS, **{snake: snake for snake in _FIELDS.values()}}
_OPTIONS: dict[str, Any] = {"forbid_unknown_fields": True, "gc": False}
_Shape = tuple[Any, frozenset[str]]  # the msgspec type of a chunk, and the fields it holds


@lru_cache(maxsize=2)
def _general(spelling: str) -> _Shape:
    """Records in one spelling (``camel`` or ``snake``), any optional field given or not."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (name, _TYPES[name]) for name in _REQUIRED
    ]
    fields += [(name, kind, None) for name, kind in _TYPES.items() if name not in _REQUIRED]
    rename: Any = "camel" if spelling == "camel" else None
    struct = msgspec.defstruct("Record", fields, rename=rename, **_OPTIONS)
    return list[struct], frozenset(_TYPES)  # type: ignore[valid-type]


@lru_cache(maxsize=64)
def _shape(keys: frozenset[Any]) -> _Shape | None:
    """Records with exactly these keys (the usual batch: every record alike): only the fields
    given are read. None where the keys are not those of a plain record."""
    names = {key: _ATTRIBUTE.get(key, "") for key in keys}
    fields = frozenset(names.values())
    if "" in fields or len(fields) < len(names) or not fields.issuperset(_REQUIRED):
        return None  # an unknown key, or a field in both spellings: the loop says which
    struct = msgspec.defstruct(
        "Record", [(names[key], _TYPES[names[key]]) for key in sorted(keys)],
        rename={names[key]: key for key in keys}, **_OPTIONS
    )  # fmt: skip
    return list[struct], fields  # type: ignore[valid-type]


_getter = {name: attrgetter(name) for name in _TYPES}
#: a time as ``2026-03-01T12:30:00.250+01:00`` or ``...Z``: at most six fractional digits
#: (tsmeter keeps microseconds and refuses what it would have to round), ASCII digits only
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})", re.ASCII
)
_match_time = _RFC3339.fullmatch


def _rfc3339_only(items: list[Any]) -> bool:
    """Whether every record of ``items`` is a dict whose time, where it is a string, has the
    plain RFC 3339 form (and one at least is a string: else there is nothing to parse)."""
    try:
        stamps = [item.get("timestamp") for item in items]
    except AttributeError:  # a UsageRecord or another mapping type: the strict conversion
        return False
    texts = [stamp for stamp in stamps if type(stamp) is str]
    return bool(texts) and all(map(_match_time, texts))


class _Undecided(Exception):
    """The msgspec path cannot decide a chunk: the Python loop takes it."""


class Intake:
    """Validates records against the catalog; remembers names already found valid.
    ``properties`` checks the records of metrics that declare dimensions or a unique property
    (default: a :class:`~tsmeter.metering.properties.PropertyCheck` keeping values in this
    process)."""

    def __init__(
        self, resolve_metric: MetricResolver, properties: PropertyCheck | None = None
    ) -> None:
        self._resolve = resolve_metric
        self._valid_names: set[str] = set()
        self.properties = properties if properties is not None else PropertyCheck()

    def _name(self, field: str, value: object) -> str:
        if value in self._valid_names:
            return value
        name = check_name(field, value)
        if len(self._valid_names) > 100_000:
            self._valid_names.clear()
        if type(name) is str:  # a subclass may compare equal to names it does not hold
            self._valid_names.add(name)
        return name

    def check(
        self, items: Iterable[Mapping[str, Any] | UsageRecord]
    ) -> list[ValidationError | None]:
        """Validate each record on its own: ``None`` for a good one, else its error."""
        errors: list[ValidationError | None] = []
        for item in items:
            try:
                self.rows([item], admit=False)
                errors.append(None)
            except ValidationError as exc:
                errors.append(exc.unprefixed("records[0]"))
        return errors

    def rows(
        self,
        items: Iterable[Mapping[str, Any] | UsageRecord],
        now_ns: int | None = None,
        *,
        admit: bool = True,
    ) -> list[RecordRow]:
        """Validate records given as mappings (camelCase or snake_case keys) or UsageRecords.

        Raises ValidationError naming ``records[i].field`` for the first bad one. Records of
        metrics that declare properties are checked once their rows are built (see
        :mod:`tsmeter.metering.properties`; ``admit=False``: an open dimension's new values
        are checked against its bound, not admitted).
        """
        now = time.time_ns() if now_ns is None else now_ns
        items = items if type(items) is list else list(items)
        metrics: dict[tuple[str, str | None], MetricDefinition] = {}
        ids: list[str] = []  # fresh record ids, popped from the end
        if compiled is not None and compiled_path:
            out = self._compiled(items, now, metrics, ids, compiled.rows_fast)
        else:
            out = []
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK] if len(items) > CHUNK else items
                rows = self._plain(chunk, now, metrics, ids) if fast_path else None
                out += self._loop(chunk, start, now, metrics, ids) if rows is None else rows
        for metric in metrics.values():  # a few metrics per call: nothing to do for most
            if metric.dimensions or metric.unique_property is not None:
                self.properties.rows(items, out, metrics.values(), admit=admit)
                break
        return out

    def _compiled(
        self,
        items: list[Any],
        now: int,
        metrics: dict[tuple[str, str | None], MetricDefinition],
        ids: list[str],
        fast: Callable[..., int],
    ) -> list[RecordRow]:
        """The compiled path takes plain records up to the first it cannot decide; the loop
        takes that one (resolving its metric for the compiled path, or raising its error).
        Where it stops again at the next record ``STUCK`` times in a row (metadata, times as
        strings, a mixed spelling...), a chunk from there goes through msgspec or the loop."""
        out: list[RecordRow] = []
        valid = self._valid_names
        # (metric key, org id) -> (scope, default units or None, 10 ** precision), filled by
        # the loop: the compiled path converts quantities that need no rounding itself
        scopes: dict[tuple[str, str | None], tuple[str | None, int | None, int]] = {}
        count, index, after_loop, misses = len(items), 0, -1, 0
        while index < count:
            index = fast(items, index, out, valid, scopes, ids, now, UTC, MAX_NAME_LENGTH,
                         RecordRow)  # fmt: skip
            if index == count:
                break
            if not ids and type(items[index]) is dict and items[index].get("id") is None:
                # it stops where a record needs an id and none is at hand: draw the ids the
                # rest of the call may need (at most 4,096) and let it go on
                ids += reversed(new_ids(min(count - index, 4096)))
                continue
            misses = misses + 1 if index == after_loop else 0
            if misses < STUCK:  # the first record of each metric stops it once per call
                out += self._loop(items[index : index + 1], index, now, metrics, ids, scopes)
                index = after_loop = index + 1
                continue
            misses = 0
            chunk = items[index : index + CHUNK]
            rows = self._plain(chunk, now, metrics, ids) if fast_path else None
            out += self._loop(chunk, index, now, metrics, ids, scopes) if rows is None else rows
            index += len(chunk)
        return out

    def _plain(
        self,
        items: list[Any],
        now: int,
        metrics: dict[tuple[str, str | None], MetricDefinition],
        ids: list[str],
    ) -> list[RecordRow] | None:
        """The rows of plain records through msgspec, or None where the Python loop must
        decide (any record it cannot take without doubt, including every bad one)."""
        first = items[0]
        shape = _shape(frozenset(first)) if type(first) is dict else None
        general = (_general("camel"), _general("snake"))
        # msgspec parses times given as strings only where they all have the plain RFC 3339
        # form, on which it and the loop's rules agree; any other string goes to the loop
        strict: dict[str, Any] = {} if _rfc3339_only(items) else {"builtin_types": (datetime,)}
        for kind, fields in general if shape is None else (shape, *general):
            try:
                plain = msgspec.convert(items, kind, **strict)
            except Exception:  # msgspec's ValidationError, or a ValueError (a Decimal sNaN)
                continue
            try:
                return self._columns(items, plain, fields, now, metrics, ids)
            except Exception:  # any doubt (a bad record, a tzinfo without an offset...)
                return None
        return None

    def _columns(
        self,
        items: list[Any],
        plain: list[Any],
        fields: frozenset[str],
        now: int,
        metrics: dict[tuple[str, str | None], MetricDefinition],
        ids: list[str],
    ) -> list[RecordRow]:
        """Rows from converted records, checked a column at a time (C-level maps, and the
        Python checkers once per distinct name); raises where a record needs the loop."""
        count = len(plain)
        nothing: list[Any] = [None] * count

        def column(name: str) -> list[Any]:
            return list(map(_getter[name], plain)) if name in fields else nothing

        valid = self._valid_names
        keys, orgs = column("metric_key"), column("org_id")
        scopes: dict[tuple[str, str | None], str | None] = {}
        for pair in set(zip(keys, orgs, strict=True)):
            metric = metrics.get(pair)
            if metric is None:
                key, org = pair
                if org is not None and org not in valid:
                    self._name("orgId", org)
                try:
                    metric = self._resolve(self._name("metricKey", key), org)
                except Exception:  # an unknown metric: the loop raises it at its record
                    raise _Undecided from None
                metrics[pair] = metric
            scopes[pair] = metric.org_id
        scoped = nothing
        if any(scopes.values()):
            scoped = [scopes[pair] for pair in zip(keys, orgs, strict=True)]
        subject_types, subject_ids = column("subject_type"), column("subject_id")
        sources = column("source")
        for field, values in (("subjectType", subject_types), ("subjectId", subject_ids),
                              ("source", sources)):  # fmt: skip
            for name in set(values).difference(valid):
                if name is not None:
                    self._name(field, name)
        quantities = _units(column("quantity"), keys, orgs, metrics)
        times = column("timestamp")
        given = [ts for ts in times if ts is not None] if None in times else times
        # aware datetimes (msgspec checked it) in any zone: subtracting EPOCH converts them
        if given and (min(given) < EPOCH or max(given) >= MAX_TIMESTAMP):
            raise _Undecided
        ns = list(map(mul, map(floordiv, map(sub, given, repeat(EPOCH)), repeat(_US)),
                      repeat(1000)))  # fmt: skip
        if given is not times:
            stamps = iter(ns)
            ns = [now if ts is None else next(stamps) for ts in times]
        metadata = column("metadata")
        if metadata is not nothing and metadata.count(None) < count:
            metadata = [check_metadata("metadata", value) for value in metadata]
        record_ids = column("id")
        named = [rid for rid in record_ids if rid is not None]
        text = "".join(named)
        if not (text.isascii() and text.isprintable()):
            for rid in named:  # other ids may still be good names (non-ASCII ones are)
                check_name("id", rid)
        if len(named) < count:  # drawn last: a chunk given back to the loop has taken no ids
            if named:
                fresh = iter(_take(ids, count - len(named)))
                record_ids = [next(fresh) if rid is None else rid for rid in record_ids]
            else:
                record_ids = _take(ids, count)
        return list(map(tuple.__new__, repeat(RecordRow), zip(
            record_ids, keys, subject_types, subject_ids, scoped, quantities, ns, metadata,
            sources, strict=True)))  # fmt: skip

    def _loop(
        self,
        items: list[Any],
        offset: int,
        now: int,
        metrics: dict[tuple[str, str | None], MetricDefinition],
        ids: list[str],
        scopes: dict[tuple[str, str | None], tuple[str | None, int | None, int]] | None = None,
    ) -> list[RecordRow]:
        """The reference: one record at a time, raising for the first bad one as
        ``records[offset + i]``; fills ``scopes`` for the compiled path where given."""
        out: list[RecordRow] = []
        append = out.append
        new_row = partial(tuple.__new__, RecordRow)  # skips NamedTuple's Python-level __new__
        valid = self._valid_names
        count, index = len(items), 0
        while index < count:
            item = items[index]
            index += 1
            try:
                if type(item) is not dict:
                    if isinstance(item, UsageRecord):
                        found = self._resolve(item.metric_key, item.org_id)
                        metrics[(item.metric_key, item.org_id)] = found
                        row = item.to_row(found.precision, found.rounding)
                        append(row._replace(org_id=found.org_id))
                        continue
                    if not isinstance(item, Mapping):
                        raise ValidationError("", f"must be an object, got {type(item).__name__}")
                    item = dict(item)
                get = item.get
                org_id = get("orgId")
                if org_id is None:
                    org_id = get("org_id")
                if org_id is not None and org_id not in valid:
                    org_id = self._name("orgId", org_id)
                metric_key = get("metricKey")
                if metric_key is None:
                    metric_key = _required(get, "metricKey")
                metric = metrics.get((metric_key, org_id))
                if metric is None:
                    metric = metrics[(metric_key, org_id)] = self._resolve(
                        self._name("metricKey", metric_key), org_id
                    )
                scale = _SCALES[metric.precision]
                if scopes is not None and (metric_key, org_id) not in scopes:
                    counted = metric.aggregation_type in _QUANTITY_OPTIONAL
                    if type(metric_key) is str and type(org_id) in (str, type(None)):
                        default = scale if counted else None
                        scopes[(metric_key, org_id)] = (metric.org_id, default, scale)
                subject_type = get("subjectType")
                if subject_type is None:
                    subject_type = _required(get, "subjectType")
                if subject_type not in valid:
                    subject_type = self._name("subjectType", subject_type)
                subject_id = get("subjectId")
                if subject_id is None:
                    subject_id = _required(get, "subjectId")
                if subject_id not in valid:
                    subject_id = self._name("subjectId", subject_id)
                rid = rid_given = get("id")
                if rid is None:
                    rid = ids.pop() if ids else _take(ids, 1, count - index)[0]
                elif not (type(rid) is str and rid.isascii() and rid.isprintable()
                          and 0 < len(rid) <= MAX_NAME_LENGTH):  # fmt: skip
                    rid = check_name("id", rid)
                quantity = quantity_given = get("quantity")
                if quantity is None:
                    units = _default_units(metric)
                elif type(quantity) is float and -_EXACT < (scaled := quantity * scale) < _EXACT:
                    units = round(scaled)  # as to_units: a float whose shortest repr fits
                    if units / scale != quantity:
                        units = metric.units("quantity", quantity)
                else:  # NaN fails the test above too
                    units = metric.units("quantity", quantity)
                ts = get("timestamp")
                if ts is None:
                    ns = now
                elif type(ts) is datetime and ts.tzinfo is UTC and 1970 < ts.year < 2261:
                    ns = (ts - EPOCH) // _US * 1000
                else:
                    ns = to_ns(parse_timestamp("timestamp", ts))
                metadata = get("metadata")
                if metadata is not None:
                    metadata = check_metadata("metadata", metadata)
                source = get("source")
                if source is not None and source not in valid:
                    source = self._name("source", source)
                # every key must be one we read: otherwise a typo ("quantiy") would be ignored;
                # a field given in both spellings must say the same in both
                present = 3 + (rid_given is not None) + (quantity_given is not None) + (
                    ts is not None) + (metadata is not None) + (source is not None) + (
                    org_id is not None)  # fmt: skip
                if len(item) > present:
                    _check_keys(item)
                append(new_row((rid, metric_key, subject_type, subject_id, metric.org_id,
                                units, ns, metadata, source)))  # fmt: skip
            except ValidationError as exc:
                raise exc.at(f"records[{offset + index - 1}]") from None
            except TypeError:  # a list or dict where a name belongs is not hashable
                error = _not_a_name(item)
                if error is None:
                    raise
                raise error.at(f"records[{offset + index - 1}]") from None
        return out


def _take(ids: list[str], count: int, ahead: int = 0) -> list[str]:
    """``count`` fresh record ids in order, from the stack ``ids``, refilled with as many as
    the call may still need (``count`` and ``ahead`` more, at most 4,096 at a time): a call
    of one record makes one id."""
    taken: list[str] = []
    while len(taken) < count:
        if not ids:
            ids += reversed(new_ids(min(count - len(taken) + ahead, 4096)))
        part = min(count - len(taken), len(ids))
        taken += reversed(ids[-part:])
        del ids[-part:]
    return taken


def _not_a_name(item: object) -> ValidationError | None:
    """The error for the first name field of ``item`` that holds something other than a string."""
    if not isinstance(item, Mapping):
        return None
    for camel in ("orgId", "metricKey", "subjectType", "subjectId", "id", "source"):
        value = item.get(camel)
        if value is None:
            value = item.get(_FIELDS[camel])
        if value is not None and not isinstance(value, str):
            return ValidationError(camel, f"must be a string, got {type(value).__name__}")
    return None


def _check_keys(item: Mapping[Any, Any]) -> None:
    """Refuse keys that are no field, and a field given in both spellings with two values."""
    unknown = sorted((key for key in item if key not in _ALLOWED), key=repr)
    if unknown:
        key = unknown[0]
        name = key if isinstance(key, str) else repr(key)
        raise ValidationError(_shown_key(name), "unknown field")
    for camel, snake in _PAIRS:
        first, second = item.get(camel), item.get(snake)
        if (
            first is not None
            and second is not None
            and (type(first) is not type(second) or first != second)
        ):
            raise ValidationError(
                camel, f"disagrees with {snake} ({_brief(first)} vs {_brief(second)});"
                " give one spelling, or the same value in both"
            )  # fmt: skip


_PAIRS = tuple((camel, snake) for camel, snake in _FIELDS.items() if camel != snake)


def _brief(value: object) -> str:
    """A value for an error message, at most about 40 characters."""
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 40 else f"{text[:37]}..."


def _shown_key(name: str) -> str:
    """An unknown key as the field of an error, shortened."""
    return name if len(name) <= 64 else f"{name[:61]}..."


_SCALES: tuple[int, ...] = tuple(10**places for places in range(MAX_PRECISION + 1))
_EXACT = 2**53  # floats below this magnitude hold every integer exactly (as to_units)


#: the types whose records may leave the quantity out (it then is 1): a count, and a
#: distinct count (which counts the records' unique property, not their quantities)
_QUANTITY_OPTIONAL = frozenset({AggregationType.COUNT, AggregationType.UNIQUE_COUNT})


def _default_units(metric: MetricDefinition) -> int:
    """A record without a quantity counts 1 (in units) for a COUNT or UNIQUE_COUNT metric;
    others need one."""
    if metric.aggregation_type not in _QUANTITY_OPTIONAL:
        raise ValidationError(
            "quantity",
            f"is required for {metric.aggregation_type.value} metric {metric.key!r}",
        )
    return _SCALES[metric.precision]


def _units(
    quantities: list[Any],
    keys: list[str],
    orgs: list[str | None],
    metrics: dict[tuple[str, str | None], MetricDefinition],
) -> list[int]:
    """The quantities of a column in units of each record's metric, as the loop makes them:
    a column of floats that fit (see ``to_units``) or of ints within range a list at a time
    (C-level maps), any other column value by value (raising where a record is bad)."""
    used = {metrics[pair].precision for pair in set(zip(keys, orgs, strict=True))}
    if len(used) == 1 and compiled is not None and compiled_path:
        units: list[int] | None = compiled.units_column(quantities, _SCALES[next(iter(used))])
        if units is not None:
            return units
    pairs = list(zip(keys, orgs, strict=True))
    scales: Iterable[int] = (
        repeat(_SCALES[used.pop()]) if len(used) == 1
        else [_SCALES[metrics[pair].precision] for pair in pairs]
    )  # fmt: skip
    kinds = set(map(type, quantities))
    try:
        if kinds == {float}:
            scaled = list(map(mul, quantities, scales))
            if min(scaled) > -_EXACT and max(scaled) < _EXACT:  # NaN: round() raises
                units = list(map(round, scaled))
                if list(map(truediv, units, scales)) == quantities:
                    return units
        elif kinds == {int}:
            units = list(map(mul, quantities, scales))
            if min(units) >= -MAX_UNITS and max(units) <= MAX_UNITS:
                return units
        elif kinds == {type(None)}:
            return [_default_units(metrics[pair]) for pair in pairs]
    except (ValueError, OverflowError):  # NaN or an infinity: the checks below say which
        pass
    return [
        _default_units(metrics[pair]) if quantity is None
        else to_units("quantity", quantity, metrics[pair].precision, metrics[pair].rounding)
        for quantity, pair in zip(quantities, pairs, strict=True)
    ]  # fmt: skip


def _required(get: Callable[..., Any], camel: str) -> Any:
    value = get(_FIELDS[camel])
    if value is None:
        raise ValidationError(camel, "is required")
    return value
