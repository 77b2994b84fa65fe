"""Hypothesis-generated command lines: every outcome is success, one ``Error:`` line or a usage
error (exit 0, 1 or 2), never a traceback, and what a successful command stored is what was
asked, read back through the Python API."""

from __future__ import annotations

import json
import re
import string
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tsmeter
from tests.cli.conftest import one_line_error
from tests.hostile import NASTY_NAMES, names
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.main import cli

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# plain ASCII decimal notation, written here independently of tsmeter's parser
PLAIN = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)

NUMBER_TRAPS = (
    "1_000", "١٢", "𝟙", "1e-400", "-1e-400", "1e400", "nan", "NaN", "inf", "-inf", "Infinity",
    " 1", "1 ", "0x10", "1,5", "--1", "1e", "e5", "", "-0", "0", "1e308", "-1e308", "1e15",
    "1e16", "4.9e-324", "1.5", "+2", ".5", "5.", "0.000000000000000000001", "12345678901234567890",
)  # fmt: skip
TIME_TRAPS = (
    "2026-03-01T00:00:00.123456789Z", "2026-03-01T00:00:00.123456000Z", "2026-03-01T00:00:00",
    "2026-03-01", "1969-12-31T23:59:59Z", "2262-01-01T00:00:00Z", "2026-03-01T00:00:00+25:00",
    "2026-03-01T00:00:00,5Z", "2026-W09-1T00:00Z", "now", "", " 2026-03-01T00:00:00Z ",
    "2026-02-30T00:00:00Z", "2026-03-29T02:30:00+01:00",
)  # fmt: skip
ZONES = ("UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns", "Etc/GMT+12",
         "../../etc/passwd", "/etc/localtime", "Europe/\u202eParis", "", "utc", "Nowhere/City",
         "+05:30", "\x00")  # fmt: skip
HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Co", "Cn"}

hostile_text = st.one_of(
    names,
    st.sampled_from(NASTY_NAMES),
    st.text(max_size=20),
    st.sampled_from(["", " ", "-x", "--help", "*", "\x00", "\n", "a" * 300, "=cmd", "\u202e"]),
)
numbers = st.one_of(
    st.sampled_from(NUMBER_TRAPS),
    st.floats().map(repr),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**20), 10**20).map(str),
    st.text(string.digits + "+-.eE_ ", max_size=8),
)
plain_numbers = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(["1.5", "0", ".5", "2e3", "+7", "-0.25"]),
)
some_numbers = st.one_of(plain_numbers, numbers)
limits = st.one_of(st.integers(1, 10**6).map(str), st.sampled_from(["0.5", "1e3", "+7"]), numbers)
warn_levels = st.one_of(
    st.none(),
    st.none(),
    st.integers(1, 100).map(lambda n: f"{n}%"),
    some_numbers.map(lambda n: n + "%"),
    some_numbers,
)
maybe = st.one_of(st.none(), st.none(), names, hostile_text)
"""An optional hostile value: absent half the time, else a valid name or anything at all."""
timestamps = st.one_of(
    st.sampled_from(TIME_TRAPS),
    st.datetimes(
        min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.text(max_size=30),
)
formats = st.sampled_from(["table", "json", "csv", "table", "json", "csv", "JSON", "xml"])
days = st.sampled_from(
    ["2026-03-01", "2026-03-02", "2026-03-01T00:00:00Z", "2026-03-01T11:00:00+01:00"]
)


@pytest.fixture
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    """A store with a SUM and a COUNT metric, and a runner that never swallows exceptions."""
    home = tmp_path_factory.mktemp("fuzz")
    shell = Shell(home, f"sqlite:///{home / 'fuzz.db'}")
    shell.run("--create", "metric", "list")
    shell.run("metric", "define", "total", "--aggregation-type", "sum")
    shell.run("metric", "define", "calls", "--aggregation-type", "count")
    yield shell


class Shell:
    """Runs ``tsmeter --store STORE ...`` in-process with exceptions propagating."""

    def __init__(self, home: Path, store: str) -> None:
        self.home = home
        self.store = store
        self.runner = CliRunner()
        self.env = {
            "XDG_DATA_HOME": str(home / "xdg"),
            "TSMETER_STORE_URL": "",
            "TSMETER_OUTBOX": "",
            "TSMETER_TIMEZONE": "",
            "TSMETER_POSTHOG_API_KEY": "",
        }

    def __call__(self, *args: str, store: str | None = None) -> Result:
        """Run a command line; assert it ended as success, an error line or a usage error, with
        a documented exit status."""
        result = self.runner.invoke(
            cli, ["--store", store or self.store, *args], env=self.env, catch_exceptions=False
        )
        assert result.exit_code in set(ExitCode), (args, result.exit_code, result.output)
        assert "Traceback" not in result.output, (args, result.output)
        if result.exit_code:
            lines = result.stderr.strip().split("\n")
            assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        return result

    def run(self, *args: str) -> Result:
        """Run a command line that must succeed."""
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result


def check_output(fmt: str, result: Result) -> None:
    """A successful command's stdout is strict JSON in JSON format, and tables hide nothing."""
    if result.exit_code != 0:
        return
    if fmt.lower() == "json":
        json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    elif fmt.lower() == "table":
        hidden = [c for c in result.stdout if c != "\n" and unicodedata.category(c) in HIDDEN]
        assert hidden == [], result.stdout


def expected_time(text: str) -> datetime | None:
    """The instant ``text`` names if tsmeter may accept it exactly; None if it must refuse it
    (no offset, or sub-microsecond digits it would have to drop)."""
    fraction = re.search(r"[.,]([0-9]+)", text)
    if fraction and fraction.group(1)[6:].strip("0"):
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(UTC) if value.utcoffset() is not None else None


def stored(shell: Shell, metric: str, subject_type: str, subject_id: str) -> list[Any]:
    """The records of one subject, read through the Python API."""
    with tsmeter.connect(shell.store, mirror=False) as meter:
        return meter.get_usage(metric, subject_type, subject_id, limit=None)


@FUZZ
@given(
    metric=st.sampled_from(["total", "calls"]),
    subject_type=hostile_text,
    subject_id=hostile_text,
    quantity=st.one_of(st.none(), some_numbers),
    timestamp=st.one_of(st.none(), timestamps),
    fmt=formats,
)
def test_usage_record_stores_exactly_what_was_asked(
    shell: Shell,
    metric: str,
    subject_type: str,
    subject_id: str,
    quantity: str | None,
    timestamp: str | None,
    fmt: str,
) -> None:
    """usage record succeeds only for exact input, and then the store holds exactly that."""
    record_id = str(uuid.uuid4())
    options = ["--id", record_id] + (["--timestamp", timestamp] if timestamp is not None else [])
    args = [metric, subject_type, subject_id] + ([quantity] if quantity is not None else [])
    result = shell("--format", fmt, "usage", "record", *options, "--", *args)
    check_output(fmt, result)
    if result.exit_code != 0:
        return
    if quantity is not None:
        assert PLAIN.fullmatch(quantity), f"{quantity!r} was reinterpreted"
    when = expected_time(timestamp) if timestamp is not None else None
    assert timestamp is None or when is not None, f"{timestamp!r} was reinterpreted"
    (found,) = [r for r in stored(shell, metric, subject_type, subject_id) if r.id == record_id]
    assert (found.metric_key, found.subject_type, found.subject_id) == (
        metric,
        subject_type,
        subject_id,
    )
    assert found.quantity == (Decimal(quantity) if quantity is not None else 1)
    if when is not None:
        assert found.timestamp == when


@example(
    extra=None,
    start="2026-03-01",
    end="2026-03-02",
    zone="Asia/Kathmandu",
    period="daily",
    subject_id="o",
    fmt="json",
    summary=True,
)
@example(
    extra=None,
    start="2026-03-01",
    end=None,
    zone=None,
    period="daily",
    subject_id=None,
    fmt="table",
    summary=False,
)
@FUZZ
@given(
    extra=st.one_of(st.none(), st.none(), hostile_text),
    start=st.one_of(st.none(), days, days, timestamps),
    end=st.one_of(st.none(), days, days, timestamps),
    zone=st.one_of(st.none(), st.none(), st.sampled_from(ZONES), st.text(max_size=12)),
    period=st.sampled_from(["daily", "hourly", "monthly", "weekly", "fortnightly", "YEARLY"]),
    subject_id=maybe,
    fmt=formats,
    summary=st.booleans(),
)
def test_usage_get_and_summary_never_crash(
    shell: Shell,
    extra: str | None,
    start: str | None,
    end: str | None,
    zone: str | None,
    period: str,
    subject_id: str | None,
    fmt: str,
    summary: bool,
) -> None:
    """Reads with hostile ranges, zones, filters and formats end in output or one error line."""
    shell.run("usage", "record", "--timestamp", "2026-03-01T10:00:00Z", "total", "org", "o", "2")
    root = ["--format", fmt] + (["--timezone", zone] if zone is not None else [])
    options: list[str] = []
    for name, value in (("--from", start), ("--to", end), ("--subject-id", subject_id)):
        options += [name, value] if value is not None else []
    if summary:
        options += ["--period", period]
    positional = ["total"] if extra is None else [extra]
    command = ["usage", "summary" if summary else "get", *options, "--", *positional]
    check_output(fmt, shell(*root, *command))


@FUZZ
@given(
    key=hostile_text,
    unit=st.one_of(st.none(), hostile_text),
    aggregation=st.sampled_from(["sum", "count", "avg", "max", "min", "last", "median"]),
    fmt=formats,
)
def test_metric_define_stores_the_key_exactly(
    shell: Shell, key: str, unit: str | None, aggregation: str, fmt: str
) -> None:
    """metric define either refuses a key or stores it character for character."""
    options = ["--aggregation-type", aggregation] + (["--unit", unit] if unit is not None else [])
    result = shell("--format", fmt, "metric", "define", *options, "--", key)
    check_output(fmt, result)
    if result.exit_code == 0:
        with tsmeter.connect(shell.store, mirror=False) as meter:
            metric = meter.get_metric(key)
        assert (metric.key, metric.unit) == (key, unit if unit is not None else "")
        assert metric.aggregation_type.value == aggregation.upper()


@example(
    limit="100",
    warn="80%",
    subject_id=None,
    webhook="https://hooks.example.com/x",
    email="ops@example.com",
    fmt="json",
)
@example(limit="2.5", warn="2", subject_id="org-=1", webhook=None, email=None, fmt="csv")
@FUZZ
@given(
    limit=limits,
    warn=warn_levels,
    subject_id=maybe,
    webhook=st.one_of(
        st.none(),
        st.none(),
        hostile_text,
        st.sampled_from(
            [
                "https://hooks.example.com/x",
                "http://127.0.0.1:99999/x",
                "https://a:b@x.test/p?token=t",
                "http://x.test/\r\nX: y",
                "ftp://x",
            ]
        ),
    ),
    email=st.one_of(st.none(), st.none(), hostile_text, st.just("ops@example.com")),
    fmt=formats,
)
def test_threshold_create_stores_the_limit_exactly(
    shell: Shell,
    limit: str,
    warn: str | None,
    subject_id: str | None,
    webhook: str | None,
    email: str | None,
    fmt: str,
) -> None:
    """threshold create succeeds only for exact numbers, and the limit read back is that one."""
    options: list[str] = []
    for name, value in (
        ("--warn-at", warn), ("--subject-id", subject_id),
        ("--notify-webhook", webhook), ("--notify-email", email),
    ):  # fmt: skip
        options += [name, value] if value is not None else []
    result = shell("--format", fmt, "threshold", "create", *options, "--", "total", "org", limit)
    check_output(fmt, result)
    if result.exit_code != 0:
        return
    assert PLAIN.fullmatch(limit), f"{limit!r} was reinterpreted"
    if warn is not None:
        assert PLAIN.fullmatch(warn.removesuffix("%")), f"{warn!r} was reinterpreted"
    with tsmeter.connect(shell.store, mirror=False) as meter:
        made = meter.list_thresholds("total", "org")
    assert float(limit) in [t.threshold for t in made]


@FUZZ
@given(
    store=st.one_of(
        st.sampled_from(
            [
                "sqlite:///",
                "sqlite:///:memory:",
                "sqlite:////",
                "influxdb://",
                "influxdb://:0/",
                "influxdb://127.0.0.1:99999/db",
                "influxdb2://h/b",
                "postgres://x",
                "http://x",
                "sqlite:///nodir/",
                "sqlite:///a\x00b",
                "~",
                ".",
                "",
                "::",
                "%00",
            ]
        ),
        hostile_text.map(lambda t: "sqlite:///" + t),
        hostile_text,
    ),
    fmt=formats,
)
def test_hostile_store_urls_end_in_one_line(shell: Shell, store: str, fmt: str) -> None:
    """Any --store value opens a store or says why in one line (files land in a scratch dir)."""
    runner_dir = shell.home / "cwd"
    runner_dir.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(runner_dir)
        check_output(
            fmt, shell("--create", "--format", fmt, "metric", "list", store=store or "x.db")
        )


@pytest.mark.parametrize("text", ["1_000", "١٢", "nan", "inf", " 1", "0x10", "1e-2000"])
@pytest.mark.parametrize(
    "command",
    [
        ("usage", "record", "--", "total", "org", "o-1"),
        ("threshold", "create", "--", "total", "org"),
        ("threshold", "create", "--warn-at", "TEXT", "--", "total", "org", "10"),
        ("threshold", "check", "--quantity", "TEXT", "--", "total", "org", "o-1"),
    ],
)
def test_numbers_are_never_reinterpreted(shell: Shell, text: str, command: Sequence[str]) -> None:
    """1_000, Arabic-Indic digits, nan, inf, spaces and a value too small to take as written
    are usage errors."""
    args = [text if a == "TEXT" else a for a in command]
    if "TEXT" not in command:
        args.append(text)
    result = shell(*args)
    assert result.exit_code == 2, result.output
    assert stored(shell, "total", "org", "o-1") == []
    with tsmeter.connect(shell.store, mirror=False) as meter:
        assert meter.list_thresholds("total") == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1e-400", "has 400 decimal places, the metric keeps 6"),
        ("0.0000001", "has 7 decimal places, the metric keeps 6"),
        ("1e400", "must be between -9223372036854.775807 and 9223372036854.775807"),
    ],
)
def test_exact_quantities_beyond_the_metric_are_refused(
    shell: Shell, text: str, problem: str
) -> None:
    """A plain number is taken exactly, never through a float (1e-400 is not 0, 1e400 not
    infinity); one with more places than the metric keeps, or out of its range, is refused
    by the metric in one line (exit 1) and nothing is stored."""
    result = shell("usage", "record", "--", "total", "org", "o-1", text)
    assert result.exit_code == 1, result.output
    assert problem in one_line_error(result)
    assert stored(shell, "total", "org", "o-1") == []
