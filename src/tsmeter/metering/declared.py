"""Declared state: the metrics, thresholds and notification channels a file (YAML or TOML, one
schema) or a Python mapping declares, validated into models before anything is compared with
the store or changed in it.

The document has three optional sections::

    metrics:                    # one entry per metric, identified by key and org_id
      - key: api_calls
        aggregation_type: count
        unit: calls
        precision: 0
    channels:                   # named sets of notification targets
      ops: {emails: [ops@example.com], webhook: "https://hooks.example.com/t"}
    thresholds:                 # limits; ``notify`` names channels
      - metric: api_calls
        subject_type: org
        limit: 10000
        warn_at: 90%
        action: block
        notify: [ops]

A metric takes ``key`` (required), ``org_id``, ``name``, ``description``, ``unit``,
``aggregation_type``, ``reset_period``, ``precision``, ``rounding`` (``refuse`` or absent:
more places are refused), ``dimensions`` (a list of record properties usage is grouped by:
each a name, or a mapping with ``name``, ``max_values`` (default 100) and ``values`` (a closed
set)), ``unique_property`` (what a ``unique_count`` metric counts the distinct values of) and
``time_unit`` (``second``, ``minute``, ``hour`` or ``day``: the unit of a
``time_weighted_sum``); a field left out has its default, as with ``metric define``. A
threshold takes ``metric``, ``subject_type`` and ``limit`` (required), ``subject_id`` (default
``*``), ``warn_at`` (a number or a percentage of the limit such as ``90%``; default 80 %),
``period``, ``action`` (default alert), ``org_id`` (the scope of its metric), ``notify`` (channel
names) and ``id`` (optional: a stable id, which lets its metric's scope, subject or action change
in place). A channel takes ``emails`` and ``webhook``; a threshold gets every email of its
channels and at most one webhook.

Numbers are exact: YAML and TOML floats are read as the Decimal they spell (``0.1`` stays
``0.1``), never through a float. An unknown key, a duplicate key, a value of the wrong type or
a name that is not a string (YAML reads ``no`` as false and ``1.10`` as a number: quote them) is
an error that names the file, the place in the document and the problem, e.g.
``limits.yaml: thresholds[2].limit: must be greater than zero``.

>>> desired = DesiredState.from_document({"metrics": [{"key": "api_calls", "precision": 0}]})
>>> desired.metrics[0].definition.precision
0
>>> DesiredState.from_document({"metrics": [{"key": "x", "unit": "GB", "prec": 2}]})
Traceback (most recent call last):
tsmeter.metering.declared.DeclarationError: <document>: metrics[0].prec: unknown key \
(did you mean 'precision'?)
"""

from __future__ import annotations

import decimal
import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic.alias_generators import to_camel

from tsmeter.domain import MetricDefinition, UsageThreshold
from tsmeter.domain.modelio import build
from tsmeter.domain.quantities import parse_decimal
from tsmeter.domain.targets import check_email, check_webhook_url
from tsmeter.domain.validation import check_name
from tsmeter.errors import ValidationError

__all__ = [
    "Channel",
    "DeclarationError",
    "DeclaredMetric",
    "DeclaredThreshold",
    "DesiredState",
    "load",
    "parse",
]

#: file key -> MetricDefinition attribute
METRIC_KEYS = {
    "key": "key",
    "org_id": "org_id",
    "name": "name",
    "description": "description",
    "unit": "unit",
    "aggregation_type": "aggregation_type",
    "reset_period": "reset_period",
    "precision": "precision",
    "rounding": "rounding",
    "dimensions": "dimensions",
    "unique_property": "unique_property",
    "time_unit": "time_unit",
}
#: the keys of one entry of a metric's ``dimensions``
DIMENSION_KEYS = ("name", "max_values", "values")
#: file key -> UsageThreshold attribute (``notify`` and ``warn_at`` are resolved first)
THRESHOLD_KEYS = {
    "id": "id",
    "metric": "metric_key",
    "org_id": "org_id",
    "subject_type": "subject_type",
    "subject_id": "subject_id",
    "limit": "threshold",
    "warn_at": "warn_threshold",
    "period": "period_type",
    "action": "action",
    "notify": "",
}
CHANNEL_KEYS = ("emails", "webhook")
SECTIONS = ("metrics", "channels", "thresholds")
_REQUIRED_METRIC = ("key",)
_REQUIRED_THRESHOLD = ("metric", "subject_type", "limit")
_TEXT = frozenset({"key", "org_id", "name", "description", "unit", "aggregation_type",
                   "reset_period", "rounding", "id", "metric", "subject_type", "subject_id",
                   "period", "action", "unique_property", "time_unit"})  # fmt: skip
#: a model's field as build() names it (camelCase) -> the key a file gives it under
_FILE_NAMES = {
    to_camel(attr): key for key, attr in {**METRIC_KEYS, **THRESHOLD_KEYS}.items() if attr
}
# exact arithmetic for a percentage of a limit: an inexact result is an error, not rounded
_EXACT = decimal.Context(
    prec=100, Emax=999, Emin=-999,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow, decimal.Underflow],
)  # fmt: skip
_MAX_SHOWN_PROBLEMS = 5


class DeclarationError(ValidationError):
    """A declaration that cannot be applied: ``problems`` holds every (place, problem) found,
    and the message names the source (file), the first few places and their problems.

    >>> print(DeclarationError("m.yaml", [("thresholds[2].limit", "must be a number")]))
    m.yaml: thresholds[2].limit: must be a number
    """

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        place, problem = self.problems[0]
        super().__init__(place, problem)
        shown = "; ".join(
            f"{where}: {what}" if where else what
            for where, what in self.problems[:_MAX_SHOWN_PROBLEMS]
        )
        more = len(self.problems) - _MAX_SHOWN_PROBLEMS
        self.args = (f"{source}: {shown}" + (f" (and {more} more problems)" if more > 0 else ""),)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Channel:
    """A named set of notification targets that thresholds refer to."""

    name: str
    emails: tuple[str, ...] = ()
    webhook: str | None = None


@dataclass(frozen=True)
class DeclaredMetric:
    """A metric as declared at ``path`` (``metrics[0]``), validated; its id and times are
    placeholders until it is created."""

    path: str
    definition: MetricDefinition


@dataclass(frozen=True)
class DeclaredThreshold:
    """A threshold as declared at ``path``, validated, its channels resolved into targets;
    ``explicit_id``: the file gave its id (it is matched by id, not by what it limits)."""

    path: str
    threshold: UsageThreshold
    explicit_id: bool
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesiredState:
    """What a document declares: metrics, thresholds and channels, all validated.

    Build one with :func:`load` (a file), :func:`parse` (text) or :meth:`from_document` (a
    mapping), then ``meter.plan(desired)`` or ``meter.apply(desired)``.
    """

    metrics: tuple[DeclaredMetric, ...] = ()
    thresholds: tuple[DeclaredThreshold, ...] = ()
    channels: Mapping[str, Channel] = field(default_factory=dict)
    source: str = "<document>"

    @classmethod
    def from_document(cls, document: object, source: str = "<document>") -> DesiredState:
        """Validate a parsed document (a mapping of the three sections); DeclarationError
        naming every problem otherwise. Nothing is read from or written to a store."""
        return _Reader(source).document(document)


def load(path: str | Path) -> DesiredState:
    """The desired state declared in the file at ``path`` (``.yaml``/``.yml`` or ``.toml``).

    Example: ``meter.apply(load("tsmeter.yaml"))``.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DeclarationError(source, [("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeclarationError(
            source, [("", f"is not UTF-8 text (byte {exc.start} cannot be decoded)")]
        ) from None
    return parse(text, _syntax(source), source)


def _syntax(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".toml":
        return "toml"
    raise DeclarationError(source, [("", "unknown file type: name it .yaml, .yml or .toml")])


def parse(text: str, syntax: str, source: str = "<document>") -> DesiredState:
    """The desired state declared in ``text`` written in ``syntax`` ("yaml" or "toml").

    >>> parse("metrics = [{key = 'gb', precision = 2}]", "toml").metrics[0].definition.key
    'gb'
    """
    if syntax == "toml":
        try:
            document: object = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise DeclarationError(source, [("", f"not valid TOML: {exc}")]) from None
    elif syntax == "yaml":
        try:
            document = yaml.load(text, Loader=_ExactLoader)  # a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = exc.problem or exc.context or "not valid YAML"
            raise DeclarationError(source, [(where, f"not valid YAML: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise DeclarationError(source, [("", f"not valid YAML: {exc}")]) from None
    else:
        raise ValidationError("syntax", f"must be 'yaml' or 'toml', got {syntax!r}")
    if document is None:
        raise DeclarationError(
            source, [("", "declares nothing: give metrics, channels or thresholds")]
        )
    return DesiredState.from_document(document, source)


class _ExactLoader(yaml.SafeLoader):
    """YAML's safe loader with exact numbers (a float is the Decimal its text spells) and
    duplicate keys refused (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found a duplicate key {key!r}", key_node.start_mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep=deep)


def _exact_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | str:
    """A YAML float as the Decimal it spells; text no Decimal spells (``.inf``, ``.nan``,
    sexagesimal ``1:30.5``) stays text, which a number field then refuses by name."""
    text = str(loader.construct_scalar(node))
    try:
        number = Decimal(text.replace("_", ""))
    except decimal.InvalidOperation:
        return text
    return number if number.is_finite() else text


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _exact_float)


class _Reader:
    """Walks a document, collecting every problem with its place before raising."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = []

    def problem(self, place: str, text: str) -> None:
        self.problems.append((place, text))

    def document(self, document: object) -> DesiredState:
        if not isinstance(document, Mapping):
            raise DeclarationError(
                self.source, [("", f"must be a mapping of {', '.join(SECTIONS)}")]
            )
        self.keys("", document, SECTIONS)
        channels = self.channels(document.get("channels"))
        metrics = self.metrics(document.get("metrics"))
        thresholds = self.thresholds(document.get("thresholds"), channels)
        if self.problems:
            raise DeclarationError(self.source, self.problems)
        return DesiredState(tuple(metrics), tuple(thresholds), channels, self.source)

    def keys(self, place: str, entry: Mapping[Any, Any], allowed: Sequence[str]) -> None:
        """Every key of ``entry`` is one of ``allowed``: a typo must not pass silently."""
        for key in entry:
            where = f"{place}.{key}" if place else str(key)
            if not isinstance(key, str):
                self.problem(where, "keys must be text")
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                self.problem(where, f"unknown key ({hint})")

    def entries(self, section: str, value: object) -> list[tuple[str, Mapping[str, Any]]]:
        """The mappings of a list section, with their places (``thresholds[2]``)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(section, "must be a list")
            return []
        found = []
        for i, entry in enumerate(value):
            place = f"{section}[{i}]"
            if isinstance(entry, Mapping):
                found.append((place, entry))
            else:
                self.problem(place, "must be a mapping")
        return found

    def fields(
        self, place: str, entry: Mapping[str, Any], allowed: Mapping[str, str],
        required: Sequence[str],
    ) -> dict[str, Any] | None:  # fmt: skip
        """The entry's known keys whose values have the right type, or None if one has not."""
        before = len(self.problems)
        self.keys(place, entry, list(allowed))
        for key in required:
            if key not in entry:
                self.problem(f"{place}.{key}", "is required")
        for key, value in entry.items():
            if key in _TEXT and value is not None and not isinstance(value, str):
                self.problem(f"{place}.{key}", _not_text(value))
        if len(self.problems) > before:
            return None
        return {key: value for key, value in entry.items() if key in allowed}

    def model(self, place: str, model: type[Any], data: Mapping[str, Any]) -> Any:
        """``data`` built into ``model``; a problem at the file's name of the field if not."""
        try:
            return build(model, data)
        except ValidationError as exc:
            name = _FILE_NAMES.get(exc.field.split(".")[0], exc.field)
            name = name.replace(".maxValues", ".max_values")
            self.problem(f"{place}.{name}" if name else place, exc.problem)
            return None

    def metrics(self, value: object) -> list[DeclaredMetric]:
        found: list[DeclaredMetric] = []
        seen: dict[tuple[str, str | None], str] = {}
        for place, entry in self.entries("metrics", value):
            given = self.fields(place, entry, METRIC_KEYS, _REQUIRED_METRIC)
            if given is None:
                continue
            if "precision" in given and (
                isinstance(given["precision"], bool) or not isinstance(given["precision"], int)
            ):
                self.problem(f"{place}.precision", "must be a whole number from 0 to 12")
                continue
            if "dimensions" in given:
                dimensions = self.dimensions(f"{place}.dimensions", given["dimensions"])
                if dimensions is None:
                    continue
                given["dimensions"] = dimensions
            if str(given.get("rounding", "")).lower() == "refuse":
                given["rounding"] = None
            data = {METRIC_KEYS[k]: v for k, v in given.items() if v is not None or k == "rounding"}
            metric = self.model(place, MetricDefinition, data)
            if metric is None:
                continue
            identity = (metric.key, metric.org_id)
            if identity in seen:
                self.problem(place, f"declares metric {_named(*identity)} again (first at "
                             f"{seen[identity]})")  # fmt: skip
                continue
            seen[identity] = place
            found.append(DeclaredMetric(place, metric))
        return found

    def dimensions(self, place: str, value: object) -> list[dict[str, Any]] | None:
        """A metric's ``dimensions``: a list of mappings with ``name``, ``max_values`` and
        ``values``, or None after naming each problem (the values themselves are checked by
        the model)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(place, "must be a list of dimensions (each: name, max_values, values)")
            return None
        before = len(self.problems)
        found = []
        for i, entry in enumerate(value):
            where = f"{place}[{i}]"
            if isinstance(entry, str):  # a bare name: an open dimension with the default bound
                entry = {"name": entry}
            if not isinstance(entry, Mapping):
                self.problem(where, "must be a name or a mapping with name, max_values, values")
                continue
            self.keys(where, entry, DIMENSION_KEYS)
            if "name" not in entry:
                self.problem(f"{where}.name", "is required")
            elif not isinstance(entry["name"], str):
                self.problem(f"{where}.name", _not_text(entry["name"]))
            bound = entry.get("max_values")
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                self.problem(f"{where}.max_values", "must be a whole number")
            values = entry.get("values")
            if values is not None and not isinstance(values, list):
                self.problem(f"{where}.values", "must be a list of values")
            found.append({k: v for k, v in entry.items() if v is not None})
        return found if len(self.problems) == before else None

    def channels(self, value: object) -> dict[str, Channel]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem("channels", "must be a mapping of channel names to targets")
            return {}
        found: dict[str, Channel] = {}
        for name, entry in value.items():
            place = f"channels.{name}"
            if not isinstance(name, str) or not name:
                self.problem(place, "a channel name must be non-empty text")
                continue
            if not isinstance(entry, Mapping):
                self.problem(place, "must be a mapping with emails and/or webhook")
                continue
            before = len(self.problems)
            self.keys(place, entry, CHANNEL_KEYS)
            emails = self.emails(f"{place}.emails", entry.get("emails", []))
            webhook = entry.get("webhook")
            if webhook is not None:
                try:
                    check_webhook_url(webhook)
                except ValidationError as exc:
                    self.problem(f"{place}.webhook", exc.problem)
            if len(self.problems) == before:
                found[name] = Channel(name, tuple(emails), webhook)
        return found

    def emails(self, place: str, value: object) -> list[str]:
        if not isinstance(value, list):
            self.problem(place, "must be a list of email addresses")
            return []
        found = []
        for i, address in enumerate(value):
            try:
                found.append(check_email(address, f"{place}[{i}]"))
            except ValidationError as exc:
                self.problem(exc.field, exc.problem)
        return found

    def thresholds(self, value: object, channels: Mapping[str, Channel]) -> list[DeclaredThreshold]:
        found: list[DeclaredThreshold] = []
        seen: dict[object, str] = {}
        for place, entry in self.entries("thresholds", value):
            given = self.fields(place, entry, THRESHOLD_KEYS, _REQUIRED_THRESHOLD)
            if given is None:
                continue
            if "id" in given:
                try:
                    check_name("id", given["id"])
                except ValidationError as exc:
                    self.problem(f"{place}.id", exc.problem)
                    continue
            names = self.notify(f"{place}.notify", given.pop("notify", None), channels)
            if names is None:
                continue
            targets = self.targets(f"{place}.notify", names, channels)
            if targets is None:
                continue
            data = {THRESHOLD_KEYS[k]: v for k, v in given.items() if v is not None}
            warn = self.warn_level(place, given.get("warn_at"), given["limit"])
            if "warn_at" in given and warn is None:
                continue
            data["warn_threshold"] = warn
            data.update(targets)
            item = self.model(place, UsageThreshold, data)
            if item is None:
                continue
            explicit = "id" in given
            identity: object = ("id", item.id) if explicit else threshold_identity(item)
            if identity in seen:
                what = (
                    "the same id"
                    if explicit
                    else ("the same metric, org_id, subject_type, subject_id, period and action")
                )
                self.problem(place, f"declares {what} as {seen[identity]} (give each an id)")
                continue
            seen[identity] = place
            found.append(DeclaredThreshold(place, item, explicit, tuple(names)))
        return found

    def notify(
        self, place: str, value: object, channels: Mapping[str, Channel]
    ) -> list[str] | None:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(place, "must be a list of channel names")
            return None
        unknown = [name for name in value if name not in channels]
        if unknown:
            known = ", ".join(repr(n) for n in channels) or "none are declared"
            self.problem(place, f"unknown channel {unknown[0]!r} (channels: {known})")
            return None
        return list(value)

    def targets(
        self, place: str, names: Sequence[str], channels: Mapping[str, Channel]
    ) -> dict[str, Any] | None:
        """The emails of every channel named (in order, once each) and its one webhook."""
        emails: list[str] = []
        hooks = [(n, channels[n].webhook) for n in names if channels[n].webhook is not None]
        for name in names:
            emails.extend(e for e in channels[name].emails if e not in emails)
        if len({url for _, url in hooks}) > 1:
            self.problem(place, f"channels {hooks[0][0]!r} and {hooks[1][0]!r} both name a "
                         "webhook; a threshold notifies at most one")  # fmt: skip
            return None
        if len(emails) > 50:
            self.problem(place, f"the channels name {len(emails)} email addresses; at most 50")
            return None
        return {"notify_emails": emails, "notify_webhook": hooks[0][1] if hooks else None}

    def warn_level(self, place: str, value: object, limit: object) -> Decimal | None:
        """``warn_at``: a number, or a percentage of the limit (``90%``) computed exactly."""
        if value is None:
            return None
        try:
            if isinstance(value, str) and value.strip().endswith("%"):
                share = parse_decimal("warn_at", value.strip()[:-1])
                base = parse_decimal("limit", limit)
                return _EXACT.divide(_EXACT.multiply(base, share), Decimal(100))
            return parse_decimal("warn_at", value)
        except ValidationError as exc:
            self.problem(f"{place}.{exc.field}", exc.problem)
        except decimal.DecimalException:
            self.problem(f"{place}.warn_at", "the percentage of the limit is not exact")
        return None


def threshold_identity(item: UsageThreshold) -> tuple[object, ...]:
    """What a threshold without an id is known by: its metric and org, the subjects it is
    for, its period and its action (two limits of one metric, say ALERT and BLOCK, are two
    thresholds)."""
    return (item.metric_key, item.org_id, item.subject_type, item.subject_id,
            item.period_type, item.action)  # fmt: skip


def _not_text(value: object) -> str:
    kind = {bool: "true/false", int: "a number", Decimal: "a number"}.get(type(value))
    if kind is not None:
        return f"must be text, got {kind} (quote it: YAML reads yes, no, on, 1.10 as values)"
    return f"must be text, got {type(value).__name__}"


def _named(key: str, org_id: str | None) -> str:
    return repr(key) + (f" in org {org_id!r}" if org_id is not None else "")
