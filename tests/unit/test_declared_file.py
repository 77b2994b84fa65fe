"""The declaration file format (tsmeter.metering.declared): YAML and TOML give the same desired
state, numbers stay exact, and every mistake is named by file, place and problem."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tsmeter.domain import AggregationType, Rounding, ThresholdAction
from tsmeter.metering.declared import DeclarationError, DesiredState, load, parse

YAML = """
metrics:
  - key: api_calls
    aggregation_type: count
    unit: calls
    precision: 0
  - key: spend_usd
    org_id: acme
    unit: USD
    precision: 2
    rounding: half_even
    description: "Money\\nspent"
channels:
  ops:
    emails: [ops@example.com]
    webhook: https://hooks.example.com/t?token=abc
  finance:
    emails: [cfo@example.com, ops@example.com]
thresholds:
  - metric: spend_usd
    org_id: acme
    subject_type: org
    subject_id: acme
    limit: 0.1
    warn_at: 33.3%
    notify: [ops, finance]
  - metric: api_calls
    subject_type: org
    limit: 1234567890123456789.123456789
    warn_at: 0.30000000000000004
    action: block
    period: daily
"""

TOML = """
[[metrics]]
key = "api_calls"
aggregation_type = "count"
unit = "calls"
precision = 0

[[metrics]]
key = "spend_usd"
org_id = "acme"
unit = "USD"
precision = 2
rounding = "half_even"
description = "Money\\nspent"

[channels.ops]
emails = ["ops@example.com"]
webhook = "https://hooks.example.com/t?token=abc"

[channels.finance]
emails = ["cfo@example.com", "ops@example.com"]

[[thresholds]]
metric = "spend_usd"
org_id = "acme"
subject_type = "org"
subject_id = "acme"
limit = 0.1
warn_at = "33.3%"
notify = ["ops", "finance"]

[[thresholds]]
metric = "api_calls"
subject_type = "org"
limit = 1234567890123456789.123456789
warn_at = 0.30000000000000004
action = "block"
period = "daily"
"""


def _comparable(desired: DesiredState) -> list[dict[str, object]]:
    """The declared models without their generated ids."""
    metrics = [m.definition.model_dump(exclude={"id"}) for m in desired.metrics]
    thresholds = [t.threshold.model_dump(exclude={"id"}) for t in desired.thresholds]
    return [*metrics, *thresholds]


def test_yaml_and_toml_declare_the_same_state() -> None:
    """One schema: the YAML and the TOML example give equal metrics and thresholds."""
    from_yaml = parse(YAML, "yaml", "a.yaml")
    from_toml = parse(TOML, "toml", "a.toml")
    assert _comparable(from_yaml) == _comparable(from_toml)
    assert from_yaml.channels == from_toml.channels


@pytest.mark.parametrize(("text", "syntax"), [(YAML, "yaml"), (TOML, "toml")])
def test_numbers_are_exact_decimals(text: str, syntax: str) -> None:
    """Limits keep every digit the file wrote (0.1 stays 0.1, no float on the way); a
    percentage warn level is computed exactly."""
    desired = parse(text, syntax)
    spend, calls = (t.threshold for t in desired.thresholds)
    assert str(spend.threshold) == "0.1"
    assert spend.warn_threshold == Decimal("0.1") * Decimal("33.3") / 100
    assert str(spend.warn_threshold) == "0.0333"
    assert str(calls.threshold) == "1234567890123456789.123456789"
    assert str(calls.warn_threshold) == "0.30000000000000004"
    assert calls.action is ThresholdAction.BLOCK


def test_fields_reach_the_models() -> None:
    """Every declared field lands on its model; channels resolve into targets (emails once
    each, in order; the one webhook)."""
    desired = parse(YAML, "yaml")
    calls, spend = (m.definition for m in desired.metrics)
    assert calls.aggregation_type is AggregationType.COUNT and calls.precision == 0
    assert spend.org_id == "acme" and spend.rounding is Rounding.HALF_EVEN
    assert spend.description == "Money\nspent"
    limit = desired.thresholds[0].threshold
    assert limit.notify_emails == ["ops@example.com", "cfo@example.com"]
    assert limit.notify_webhook == "https://hooks.example.com/t?token=abc"
    assert desired.thresholds[0].channels == ("ops", "finance")


def _problem(text: str, syntax: str = "yaml") -> str:
    with pytest.raises(DeclarationError) as caught:
        parse(text, syntax, "limits.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics: [{key: gb, prec: 2}]",
         "limits.yaml: metrics[0].prec: unknown key (did you mean 'precision'?)"),
        ("thresholds: [{metric: a, subject_type: org, limit: 5}, "
         "{metric: a, subject_type: org, limit: 0}, {metric: a, subject_type: org, limit: -1}]",
         "limits.yaml: thresholds[1].limit: must be greater than zero; "
         "thresholds[2].limit: must be greater than zero"),
        ("metrics: [{key: a, unit: GB, unit: GiB}]", "found a duplicate key 'unit'"),
        ("thresholds: [{metric: a, subject_type: org, limit: .inf}]",
         "thresholds[0].limit: must be a decimal number, got '.inf'"),
        ("thresholds: [{metric: a, subject_type: no, limit: 1}]",
         "thresholds[0].subject_type: must be text, got true/false"),
        ("metrics: [{key: a, precision: 2.0}]",
         "metrics[0].precision: must be a whole number from 0 to 12"),
        ("metrics: [{key: a}, {key: a}]",
         "metrics[1]: declares metric 'a' again (first at metrics[0])"),
        ("thresholds: [{metric: a, subject_type: org, limit: 1}, "
         "{metric: a, subject_type: org, limit: 2}]",
         "thresholds[1]: declares the same metric, org_id, subject_type, subject_id, period "
         "and action as thresholds[0] (give each an id)"),
        ("thresholds: [{metric: a, subject_type: org, limit: 1, notify: [pager]}]",
         "thresholds[0].notify: unknown channel 'pager'"),
        ("channels: {a: {webhook: 'http://x.example/1'}, b: {webhook: 'http://x.example/2'}}\n"
         "thresholds: [{metric: a, subject_type: org, limit: 1, notify: [a, b]}]",
         "thresholds[0].notify: channels 'a' and 'b' both name a webhook"),
        ("channels: {ops: {emails: [ok@example.com, 'a@b.example, c@d.example']}}",
         "channels.ops.emails[1]: one address per entry"),
        ("channels: {ops: {webhook: 'http://169.254.169.254/'}}",
         "channels.ops.webhook: must not point to a link-local"),
        ('metrics: [{key: "a\\x07b"}]', "metrics[0].key: must not contain control characters"),
        ("thresholds: [{metric: a, subject_type: org, limit: 10, warn_at: 11}]",
         "thresholds[0].warn_at: must be greater than 0 and at most"),
        ("metrics: {key: a}", "limits.yaml: metrics: must be a list"),
        ("colour: blue", "limits.yaml: colour: unknown key (allowed: metrics, channels, "
         "thresholds)"),
        ("", "limits.yaml: declares nothing"),
        ("metrics: [", "limits.yaml: line 1, column 11: not valid YAML"),
    ],
)  # fmt: skip
def test_problems_name_the_file_the_place_and_the_problem(text: str, expected: str) -> None:
    """Each mistake is an error with the file, the path in the document and what is wrong."""
    assert expected in _problem(text)


def test_toml_problems_are_named_too() -> None:
    """TOML: a syntax error names the file and line; a duplicate key is refused."""
    assert "limits.yaml: not valid TOML" in _problem("[[metrics]]\nkey = 'a'\nkey = 'b'\n", "toml")
    assert "metrics[0].key: must be text" in _problem("[[metrics]]\nkey = 1\n", "toml")


def test_files_are_read_by_their_suffix(tmp_path: Path) -> None:
    """load() reads .yaml, .yml and .toml; another suffix or bytes that are not UTF-8 are
    errors naming the file."""
    for name, text in (("a.yaml", YAML), ("a.yml", YAML), ("a.toml", TOML)):
        (tmp_path / name).write_text(text, "utf-8")
        assert load(tmp_path / name).source == str(tmp_path / name)
    (tmp_path / "a.json").write_text("{}", "utf-8")
    with pytest.raises(DeclarationError, match=r"a\.json: unknown file type"):
        load(tmp_path / "a.json")
    (tmp_path / "bad.yaml").write_bytes(b"metrics: [{key: \xff}]")
    with pytest.raises(DeclarationError, match=r"bad\.yaml: is not UTF-8"):
        load(tmp_path / "bad.yaml")
    with pytest.raises(DeclarationError, match=r"missing\.yaml: cannot read the file"):
        load(tmp_path / "missing.yaml")


HOSTILE = [
    "a,b=c \"quoted\" 'single'",
    "back\\slash\\",
    "ünï©ødé 😀 ‮rtl",
    "#not a comment",
    "- not a list",
    "key: not a mapping",
    "*",
    " leading and trailing ",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_data(name: str) -> None:
    """Names with separators, quotes, YAML syntax and unicode arrive unchanged, through
    YAML (written by a YAML library) and TOML (JSON strings are TOML basic strings)."""
    document = {
        "metrics": [{"key": name, "org_id": name, "description": f"{name}\nline 2"}],
        "thresholds": [{"metric": name, "org_id": name, "subject_type": name,
                        "subject_id": name, "limit": "1.5"}],
    }  # fmt: skip
    import yaml

    as_yaml = parse(yaml.safe_dump(document, allow_unicode=True), "yaml")

    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    as_toml = parse(
        f"[[metrics]]\nkey = {q(name)}\norg_id = {q(name)}\n"
        f"description = {q(name + chr(10) + 'line 2')}\n"
        f"[[thresholds]]\nmetric = {q(name)}\norg_id = {q(name)}\nsubject_type = {q(name)}\n"
        f"subject_id = {q(name)}\nlimit = 1.5\n",
        "toml",
    )  # fmt: skip
    for desired in (as_yaml, as_toml):
        metric, limit = desired.metrics[0].definition, desired.thresholds[0].threshold
        assert (metric.key, metric.org_id, metric.description) == (name, name, f"{name}\nline 2")
        assert (limit.metric_key, limit.subject_type, limit.subject_id) == (name, name, name)
        assert limit.threshold == Decimal("1.5")


PROPERTIES_YAML = """
metrics:
  - key: tokens
    dimensions:
      - model
      - {name: region, values: [eu, us, 3, true]}
      - {name: tier, max_values: 5}
  - key: mau
    aggregation_type: unique_count
    unique_property: user_id
  - key: storage_gb
    aggregation_type: time_weighted_sum
    time_unit: day
"""

PROPERTIES_TOML = """
[[metrics]]
key = "tokens"
dimensions = ["model", {name = "region", values = ["eu", "us", 3, true]},
              {name = "tier", max_values = 5}]

[[metrics]]
key = "mau"
aggregation_type = "unique_count"
unique_property = "user_id"

[[metrics]]
key = "storage_gb"
aggregation_type = "time_weighted_sum"
time_unit = "day"
"""


def test_dimensions_unique_property_and_time_unit_are_declared() -> None:
    """A file declares dimensions (a bare name: open with the default bound), a unique
    property and a time unit; YAML and TOML give the same models."""
    yaml_state = parse(PROPERTIES_YAML, "yaml")
    assert _comparable(yaml_state) == _comparable(parse(PROPERTIES_TOML, "toml"))
    tokens, mau, storage = (m.definition for m in yaml_state.metrics)
    assert [(d.name, d.max_values, d.values) for d in tokens.dimensions] == [
        ("model", 100, None),
        ("region", 100, ("eu", "us", "3", "true")),
        ("tier", 5, None),
    ]
    assert (mau.aggregation_type, mau.unique_property) == (AggregationType.UNIQUE_COUNT,
                                                           "user_id")  # fmt: skip
    assert (storage.aggregation_type, storage.time_unit) == ("TIME_WEIGHTED_SUM", "DAY")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("dimensions: model", "metrics[0].dimensions: must be a list of dimensions"),
        ("dimensions: [{name: 3}]", "metrics[0].dimensions[0].name: must be text"),
        ("dimensions: [{max_values: 3}]", "metrics[0].dimensions[0].name: is required"),
        ("dimensions: [{name: a, max_value: 3}]",
         "metrics[0].dimensions[0].max_value: unknown key (did you mean 'max_values'?)"),
        ("dimensions: [{name: a, max_values: 2.5}]",
         "metrics[0].dimensions[0].max_values: must be a whole number"),
        ("dimensions: [{name: a, max_values: 0}]",
         "metrics[0].dimensions[0].max_values: Input should be greater than or equal to 1"),
        ("dimensions: [{name: a, max_values: 10001}]",
         "metrics[0].dimensions[0].max_values: Input should be less than or equal to 10000"),
        ("dimensions: [{name: a, values: eu}]", "metrics[0].dimensions[0].values: must be a list"),
        ("dimensions: [{name: a, values: [eu, 1.5]}]",
         "metrics[0].dimensions[0].values[1]: must be a string, an integer or a boolean"),
        ("dimensions: [{name: a, values: [eu, eu]}]",
         "metrics[0].dimensions[0].values: must not repeat a value"),
        ("dimensions: ['user id']", "metrics[0].dimensions[0].name: must be a letter or _"),
        ("dimensions: [a, b, a]", "metrics[0].dimensions[2].name: 'a' is declared twice"),
        ("dimensions: [a, b, c, d, e, f, g, h, i]", "metrics[0].dimensions: at most 8"),
        ("unique_property: user_id",
         "metrics[0].unique_property: only a UNIQUE_COUNT metric counts distinct values"),
        ("aggregation_type: unique_count", "metrics[0].unique_property: required for a"
                                           " UNIQUE_COUNT metric"),
        ("time_unit: week", "metrics[0].time_unit: Input should be 'SECOND', 'MINUTE'"),
        ("unique_property: 7", "metrics[0].unique_property: must be text, got a number"),
    ],
)  # fmt: skip
def test_property_mistakes_are_named(entry: str, expected: str) -> None:
    """Each mistake in a metric's dimensions, unique property or time unit names the place."""
    with pytest.raises(DeclarationError) as caught:
        parse(f"metrics:\n  - key: k\n    {entry}\n", "yaml", "m.yaml")
    assert str(caught.value).startswith(f"m.yaml: {expected}"), str(caught.value)
