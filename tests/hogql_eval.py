"""A small evaluator of HogQL ``SELECT`` queries over a list of PostHog events, in Python.

It reads the JSON AST of PostHog's own parser (``hogql_parser.parse_select_json``) and
supports what tsmeter's queries use, with ClickHouse's meaning: ``SELECT … FROM events``
or a subquery, ``WHERE``, ``GROUP BY`` (aliases allowed), aggregates (``count``,
``countIf``, ``sum``, ``min``, ``max``, ``any``, ``argMax``), ``ORDER BY``, ``LIMIT n BY``,
``LIMIT``/``OFFSET``, comparisons of scalars and tuples, ``AND``/``OR``/``NOT``,
placeholders (from ``values``) and the functions in :data:`FUNCTIONS`. Anything else raises
:class:`Unsupported`, so a query that uses more than this evaluator knows fails loudly
instead of being misread.

Times: ``timestamp`` is an aware datetime in the project's zone unless the request's
modifiers say ``convertToProjectTimezone: false`` (then UTC); ``toStartOfDay`` and friends
work on the wall clock of their argument's zone, like ClickHouse; ``toDateTime`` reads text
without an offset in the project's zone.

Numbers: ``JSONExtractInt`` gives an Int64 (0 for a missing key), ``JSONHas`` a
UInt8; ``sum`` of integers is an Int64 that wraps around on overflow, like ClickHouse's (a sum
that mixes integers and floats is :class:`Unsupported`); ``sum`` of floats adds them in
order. Where ClickHouse's answer is not certain (``JSONExtractInt`` of a float, a bool, a string
or a number beyond Int64) the evaluator raises :class:`Unsupported` rather than guess.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Row = dict[str, Any]
Expr = Callable[[Row], Any]
Agg = Callable[[list[Row]], Any]


class Unsupported(Exception):
    """The query uses HogQL this evaluator does not implement (or misuses what it does)."""


@dataclass(frozen=True)
class JsonText:
    """The ``properties`` column: JSON text as PostHog stores it, parsed once."""

    text: str
    doc: Mapping[str, Any] = field(compare=False)

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> JsonText:
        text = json.dumps(properties, ensure_ascii=False, separators=(",", ":"))
        return cls(text, json.loads(text))


def _json_string(props: Any, key: Any) -> str:
    value = _props(props).get(key)
    return value if isinstance(value, str) else ""


def _json_float(props: Any, key: Any) -> float:
    value = _props(props).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


_INT64 = 2**63


def _json_int(props: Any, key: Any) -> int:
    value = _props(props).get(key)
    if value is None or isinstance(value, list | dict):
        return 0
    if isinstance(value, bool | str) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
        raise Unsupported(f"JSONExtractInt of {value!r}: ClickHouse's answer is not certain")
    return value


def _json_has(props: Any, key: Any) -> int:
    return 1 if key in _props(props) else 0


def _wrap_int64(value: int) -> int:
    """An integer as ClickHouse's Int64 arithmetic leaves it (two's complement)."""
    return (value + _INT64) % (2 * _INT64) - _INT64


def _sum(values: list[Any]) -> Any:
    """ClickHouse's ``sum``: integers to a wrapped-around Int64, floats to a float."""
    kinds = {type(v) for v in values}
    if kinds <= {int}:
        return _wrap_int64(sum(values))
    if kinds <= {float}:
        return sum(values, 0.0)
    raise Unsupported(f"sum over {sorted(k.__name__ for k in kinds)}")


def _props(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, JsonText):
        raise Unsupported(f"JSONExtract* on {type(value).__name__}, not the properties column")
    return value.doc


def _to_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dt(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise Unsupported(f"expected a DateTime, got {value!r}")
    return value


def _to_timezone(value: Any, zone: Any) -> datetime:
    return _dt(value).astimezone(ZoneInfo(str(zone)))


def _wall_floor(value: Any, how: Callable[[datetime], datetime]) -> datetime:
    local = _dt(value)
    floored = how(local.replace(tzinfo=None))
    return floored.replace(tzinfo=local.tzinfo, fold=0)


def _monday(value: Any) -> date:
    local = _dt(value).date()
    return local - timedelta(days=local.weekday())


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "JSONExtractString": _json_string,
    "JSONExtractFloat": _json_float,
    "JSONExtractInt": _json_int,
    "JSONHas": _json_has,
    "toString": _to_string,
    "toTimeZone": _to_timezone,
    "toStartOfHour": lambda v: _wall_floor(v, lambda d: d.replace(minute=0, second=0,
                                                                  microsecond=0)),
    "toStartOfDay": lambda v: _wall_floor(v, lambda d: d.replace(hour=0, minute=0, second=0,
                                                                 microsecond=0)),
    "toMonday": _monday,
    "toStartOfMonth": lambda v: _dt(v).date().replace(day=1),
    "toStartOfYear": lambda v: _dt(v).date().replace(month=1, day=1),
}  # fmt: skip


def _arg_max(rows: list[tuple[Any, Any]]) -> Any:
    best = None
    for value, key in rows:
        if best is None or key > best[1]:
            best = (value, key)
    return None if best is None else best[0]


AGGREGATES = {"count", "countIf", "sum", "min", "max", "any", "argMax"}

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _comparable(a: Any, b: Any) -> None:
    kinds = {type(x) for x in (a, b)}
    numbers = {int, float}
    if len(kinds) > 1 and not kinds <= numbers:
        raise Unsupported(f"comparing {a!r} with {b!r}")


def _compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    if type(a) is type(b) and not isinstance(a, tuple):
        return _COMPARE[op](a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        for x, y in zip(a, b, strict=True):
            _comparable(x, y)
    else:
        _comparable(a, b)
    return _COMPARE[op](a, b)


def _contains_aggregate(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("node") == "Call" and node.get("name") in AGGREGATES:
            return True
        return any(_contains_aggregate(v) for k, v in node.items() if k != "node")
    if isinstance(node, list):
        return any(_contains_aggregate(v) for v in node)
    return False


@dataclass
class Context:
    """What a query is evaluated against: the ``events`` rows (``timestamp`` in the project's
    zone, or in UTC when ``convert_to_project_timezone`` is false), the values, the zone."""

    events: list[Row]
    values: Mapping[str, Any]
    project_zone: ZoneInfo
    convert_to_project_timezone: bool = True

    def table(self, name: str) -> list[Row]:
        """The rows of a table: ``events`` only (timestamps already in the right zone)."""
        if name != "events":
            raise Unsupported(f"table {name!r}")
        return self.events

    def to_datetime(self, value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None  # parseDateTime64BestEffortOrNull
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.project_zone)


class Query:
    """One compiled ``SELECT``: call :meth:`run` for ``(columns, rows)``."""

    def __init__(self, node: Mapping[str, Any], ctx: Context) -> None:
        if node.get("node") != "SelectQuery":
            raise Unsupported(f"{node.get('node')} at the top (only SELECT)")
        for key in ("ctes", "distinct", "having", "prewhere", "qualify", "array_join_list",
                    "window_exprs", "settings"):  # fmt: skip
            if node.get(key):
                raise Unsupported(f"{key} clause")
        self.node, self.ctx = node, ctx
        self.aliases: dict[str, Any] = {}
        self.columns: list[str] = []
        for item in node["select"]:
            if item["node"] == "Alias":
                self.aliases[item["alias"]] = item["expr"]
                self.columns.append(item["alias"])
            elif item["node"] == "Field":
                self.columns.append(item["chain"][-1])
            else:
                raise Unsupported(f"unnamed select expression {item['node']}")
        self.grouped = bool(node.get("group_by")) or _contains_aggregate(node["select"])

    # -- compiling ---------------------------------------------------------------------
    def expr(self, node: Mapping[str, Any], *, aliases: bool = True) -> Expr:
        kind = node["node"]
        if kind == "Constant":
            value = node["value"]
            return lambda row: value
        if kind == "Placeholder":
            name = ".".join(node["expr"]["chain"])
            value = self.ctx.values[name]
            return lambda row: value
        if kind == "Field":
            return self._field(node["chain"], aliases)
        if kind == "Alias":
            return self.expr(node["expr"], aliases=aliases)
        if kind == "Tuple":
            items = [self.expr(e, aliases=aliases) for e in node["exprs"]]
            return lambda row: tuple(f(row) for f in items)
        if kind == "And":
            parts = [self.expr(e, aliases=aliases) for e in node["exprs"]]
            return lambda row: all(p(row) for p in parts)
        if kind == "Or":
            parts = [self.expr(e, aliases=aliases) for e in node["exprs"]]
            return lambda row: any(p(row) for p in parts)
        if kind == "Not":
            inner = self.expr(node["expr"], aliases=aliases)
            return lambda row: not inner(row)
        if kind == "CompareOperation":
            op = node["op"]
            if op not in _COMPARE:
                raise Unsupported(f"comparison {op}")
            left = self.expr(node["left"], aliases=aliases)
            right = self.expr(node["right"], aliases=aliases)
            return lambda row: _compare(op, left(row), right(row))
        if kind == "Call":
            return self._call(node, aliases)
        raise Unsupported(f"expression {kind}")

    def _field(self, chain: list[str], aliases: bool) -> Expr:
        if len(chain) != 1:
            raise Unsupported(f"field {'.'.join(chain)} (use JSONExtract* on properties)")
        name = chain[0]
        via_alias = self.expr(self.aliases[name], aliases=False) if (
            aliases and name in self.aliases and not _contains_aggregate(self.aliases[name])
        ) else None  # fmt: skip

        def get(row: Row) -> Any:
            if name in row:
                return row[name]
            if via_alias is not None:
                return via_alias(row)
            raise Unsupported(f"unknown column {name!r}")

        return get

    def _call(self, node: Mapping[str, Any], aliases: bool) -> Expr:
        name = node["name"]
        if node.get("params") or node.get("distinct") or node.get("filter_expr"):
            raise Unsupported(f"{name} with parameters, DISTINCT or a filter")
        if name in AGGREGATES:
            raise Unsupported(f"aggregate {name} outside an aggregating SELECT")
        args = [self.expr(a, aliases=aliases) for a in node["args"]]
        if name == "toDateTime":
            if len(args) != 1:
                raise Unsupported("toDateTime with a time zone")
            fn: Callable[..., Any] = self.ctx.to_datetime
        elif name in FUNCTIONS:
            fn = FUNCTIONS[name]
        else:
            raise Unsupported(f"function {name}")
        if all(a["node"] in ("Constant", "Placeholder") for a in node["args"]):
            folded = fn(*(a({}) for a in args))  # constant arguments: computed once
            return lambda row: folded
        return lambda row: fn(*(a(row) for a in args))

    def aggregate(self, node: Mapping[str, Any]) -> Agg:
        """An expression evaluated over a group of rows."""
        if node["node"] == "Alias":
            return self.aggregate(node["expr"])
        if node["node"] == "Call" and node["name"] in AGGREGATES:
            name = node["name"]
            args = [self.expr(a) for a in node["args"]]
            if name == "count":
                if args:
                    raise Unsupported("count with an argument")
                return len
            if name == "countIf":
                (condition,) = args
                return lambda rows: sum(1 for r in rows if condition(r))
            if name == "argMax":
                value, key = args
                return lambda rows: _arg_max([(value(r), key(r)) for r in rows])
            (arg,) = args
            if name == "any":
                return lambda rows: next((v for v in map(arg, rows) if v is not None), None)
            reducers: dict[str, Callable[[list[Any]], Any]] = {
                "sum": _sum,
                "min": lambda xs: min(xs) if xs else None,
                "max": lambda xs: max(xs) if xs else None,
            }
            reduce = reducers[name]
            return lambda rows: reduce([v for v in map(arg, rows) if v is not None])
        if _contains_aggregate(node):
            raise Unsupported(f"aggregate nested in {node['node']}")
        plain = self.expr(node)
        return lambda rows: plain(rows[0])

    # -- running ------------------------------------------------------------------------
    def source(self) -> list[Row]:
        join = self.node.get("select_from")
        if join is None:
            return [{}]
        if join.get("next_join") or join.get("sample") or join.get("alias"):
            raise Unsupported("joins, SAMPLE or a table alias")
        table = join["table"]
        if table["node"] == "Field":
            return self.ctx.table(".".join(table["chain"]))
        if table["node"] == "SelectQuery":
            columns, rows = Query(table, self.ctx).run(limit_cap=None)
            return [dict(zip(columns, r, strict=True)) for r in rows]
        raise Unsupported(f"FROM {table['node']}")

    def run(self, limit_cap: int | None) -> tuple[list[str], list[list[Any]]]:
        """Evaluate: ``(columns, rows)``; ``limit_cap`` caps the LIMIT (PostHog's ceiling)."""
        rows = self.source()
        if self.node.get("where"):
            keep = self.expr(self.node["where"])
            rows = [r for r in rows if keep(r)]
        if self.grouped:
            keys = [self.expr(g) for g in self.node.get("group_by") or []]
            groups: dict[tuple[Any, ...], list[Row]] = {}
            for r in rows:
                groups.setdefault(tuple(k(r) for k in keys), []).append(r)
            parts = [self.aggregate(item) for item in self.node["select"]]
            out = [[p(g) for p in parts] for g in groups.values()]
        else:
            parts = [self.expr(item) for item in self.node["select"]]
            out = [[p(r) for p in parts] for r in rows]
        named = [dict(zip(self.columns, r, strict=True)) for r in out]
        named = self._order(named)
        named = self._limit_by(named)
        offset = self._constant("offset", 0)
        limit = self._constant("limit", None)
        if limit_cap is not None:
            limit = min(limit, limit_cap) if limit is not None else min(100, limit_cap)
        named = named[offset:]
        self.has_more = limit is not None and len(named) > limit
        if limit is not None:
            named = named[:limit]
        return self.columns, [[r[c] for c in self.columns] for r in named]

    def _constant(self, key: str, default: Any) -> Any:
        node = self.node.get(key)
        if node is None:
            return default
        if node["node"] != "Constant" or not isinstance(node["value"], int):
            raise Unsupported(f"{key.upper()} that is not an integer constant")
        return node["value"]

    def _order(self, rows: list[Row]) -> list[Row]:
        for item in reversed(self.node.get("order_by") or []):
            key = self.expr(item["expr"], aliases=False)
            rows.sort(key=lambda r: _sort_key(key(r)), reverse=item["order"] == "DESC")
        return rows

    def _limit_by(self, rows: list[Row]) -> list[Row]:
        spec = self.node.get("limit_by")
        if not spec:
            return rows
        if spec.get("offset_value"):
            raise Unsupported("LIMIT n OFFSET m BY")
        n = spec["n"]["value"]
        keys = [self.expr(e, aliases=False) for e in spec["exprs"]]
        counts: dict[tuple[Any, ...], int] = {}
        kept = []
        for r in rows:
            k = tuple(f(r) for f in keys)
            counts[k] = counts.get(k, 0) + 1
            if counts[k] <= n:
                kept.append(r)
        return kept


def _sort_key(value: Any) -> tuple[int, Any]:
    return (1, 0) if value is None else (0, value)


def column_type(values: Iterable[Any]) -> str:
    """A ClickHouse type name for a result column (for the ``types`` of the answer)."""
    for v in values:
        if v is None:
            continue
        if isinstance(v, datetime):
            return "DateTime64(6, 'UTC')"
        if isinstance(v, date):
            return "Date"
        if isinstance(v, bool):
            return "Bool"
        if isinstance(v, int):
            return "UInt64"
        if isinstance(v, float):
            return "Float64"
        return "String"
    return "Nullable(Nothing)"
