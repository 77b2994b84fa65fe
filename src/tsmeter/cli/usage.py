"""``tsmeter usage``: record, import, read, summarise (also by dimension), correct and export
usage records."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.corrections import amend, cancel, corrections
from tsmeter.cli.importer import ImportResult, import_stream
from tsmeter.cli.output import Column, emit_list, emit_one, json_fields, progress
from tsmeter.cli.params import (
    NUMBER,
    PERIODS,
    json_object,
    org_option,
    range_options,
    subject_options,
    usage_error,
)
from tsmeter.domain import UsageRecord, UsageSummary
from tsmeter.domain.filters import parse_group_by, parse_where
from tsmeter.errors import ValidationError
from tsmeter.files import replaced_whole
from tsmeter.metering.meter import Meter

__all__ = ["usage"]

_RECORD_COLUMNS = [
    Column("TIMESTAMP", "timestamp"),
    Column("SUBJECT TYPE", "subject_type"),
    Column("SUBJECT ID", "subject_id"),
    Column("QUANTITY", "quantity", right=True),
    Column("ID", "id"),
    Column("SOURCE", "source"),
]
_SUMMARY_COLUMNS = [
    Column("PERIOD START", "period_start"),
    Column("SUBJECT TYPE", "subject_type"),
    Column("SUBJECT ID", "subject_id"),
    Column("TOTAL", "total_quantity", right=True),
    Column("RECORDS", "record_count", right=True),
    Column("AGGREGATION", "aggregation_type"),
]


@click.group()
def usage() -> None:
    """Record usage and read it back: raw records, summaries, exports.

    \b
    Example:
        tsmeter usage record api_calls org org-1
        tsmeter usage summary api_calls --period daily
    """


@usage.command()
@click.argument("metric_key", metavar="METRIC")
@click.argument("subject_type")
@click.argument("subject_id")
@click.argument("quantity", type=NUMBER, required=False)
@click.option(
    "--timestamp", metavar="TIME", help="When it happened (ISO-8601 with offset) [default: now]."
)
@click.option(
    "--id",
    "record_id",
    metavar="KEY",
    help="Idempotency key: recording the same key again counts once.",
)
@click.option(
    "--metadata",
    metavar="JSON",
    callback=json_object,
    help='A JSON object stored with the record, e.g. \'{"region": "eu"}\'.',
)
@click.option("--source", metavar="S", help="Where the record comes from.")
@org_option("Organisation whose metric definition applies (default: the global one).")
@pass_state
def record(
    state: CliState,
    metric_key: str,
    subject_type: str,
    subject_id: str,
    quantity: Decimal | None,
    timestamp: str | None,
    record_id: str | None,
    metadata: dict[str, Any] | None,
    source: str | None,
    org_id: str | None,
) -> None:
    """Record QUANTITY of METRIC used by one subject (QUANTITY defaults to 1 for count metrics).

    QUANTITY is an exact decimal (never a float): more decimal places than the
    metric's precision are an error unless the metric declares a rounding.
    Options go first; put -- before a negative QUANTITY.

    \b
    Example:
        tsmeter usage record api_calls org org-123 --id req-42
        tsmeter usage record storage_gb org org-123 42.5 --timestamp 2026-01-05T10:00:00Z
        tsmeter usage record spend_usd org org-123 0.10
        tsmeter usage record credits org org-123 --id refund-7 -- -5
    """
    item = state.meter().record(
        metric_key,
        subject_type,
        subject_id,
        quantity,
        timestamp=timestamp,
        id=record_id,
        metadata=metadata,
        source=source,
        org_id=org_id,
    )
    emit_one(state, item)


def _input_format(path: str, given: str | None) -> Literal["jsonl", "csv"]:
    if given is not None:
        return "csv" if given.lower() == "csv" else "jsonl"
    suffix = Path(path).suffix.lower()
    if path == "-" or suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise usage_error(f"cannot tell the format of {path!r} from its name: give --input-format")


@usage.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, exists=True))
@click.option(
    "--input-format",
    type=click.Choice(["jsonl", "csv"], case_sensitive=False),
    help="Format of FILE [default: from its extension; jsonl for stdin].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Records per record_batch call (bounds memory).",
)
@click.option(
    "--batch-id",
    "--name",
    "batch_id",
    metavar="TEXT",
    help="Name this delivery (1-256 printable characters): lines without an id get ids "
    "derived from it instead of from FILE's content. For the same content delivered twice, "
    "or a file that grows between imports. --name is its former spelling.",
)
@click.option(
    "--csv-neutralised/--no-csv-neutralised",
    default=True,
    show_default=True,
    help="Undo the neutralising of CSV text cells done by 'usage export' (one leading ' "
    "before ', =, +, -, @, TAB or CR is removed); turn off for hand-written files whose "
    "cells really start that way.",
)
@pass_state
def import_(
    state: CliState,
    file: str,
    input_format: str | None,
    batch_size: int,
    batch_id: str | None,
    csv_neutralised: bool,
) -> None:
    """Record usage from FILE (JSON Lines or CSV; - for stdin), skipping bad lines.

    Each bad line is reported as "line N: field: problem" and every other line
    is accounted for in the summary: LINES = header + blank lines + lines
    inside quoted CSV cells + ROWS, and ROWS = new + already recorded + bad.
    A CSV quote left open is one bad row; the lines after it are read again.
    Exits with status 1 if any line was bad. CSV columns: id, metricKey,
    subjectType, subjectId, quantity, timestamp, metadata (JSON), source,
    orgId; empty cells mean absent. Quantities (JSON numbers, JSON strings or
    CSV cells) are taken as exact decimals, never through a float, and must be
    plain ASCII decimals.

    Lines without an id get one derived from the delivery key, the line number
    and the text. The key is the SHA-256 of FILE's content (stdin is copied to
    a private temporary file to hash it): importing the same content again
    records nothing new, and any other content is a new delivery. The summary
    shows the key; --batch-id KEY imports a grown or re-sent file as the same
    delivery.

    \b
    Example:
        tsmeter usage import usage.jsonl
        tsmeter usage import - --input-format csv --batch-id march-2026 < march.csv
    """
    fmt = _input_format(file, input_format)
    meter = state.meter()
    with ExitStack() as stack:
        stream: IO[bytes] = stack.enter_context(click.open_file(file, "rb"))
        size = None if file == "-" else os.path.getsize(file)
        advance, say = stack.enter_context(progress(size, "Importing", step=1 << 18))
        result = import_stream(
            meter,
            stream,
            fmt,
            batch_id=batch_id,
            neutralised=csv_neutralised,
            batch_size=batch_size,
            report=lambda b: say(str(b)),
            progress=advance,
        )
    shown = "stdin" if file == "-" else file
    doc = {
        "file": file,
        "delivery": result.delivery,
        "lines": result.lines,
        "header": result.header,
        "blank": result.blank,
        "continued": result.continued,
        "rows": result.rows,
        "recorded": result.recorded,
        "duplicates": result.duplicates,
        "queued": result.queued,
        "bad": result.bad,
    }
    emit_one(state, doc, text=_import_summary(shown, fmt, result, batch_id is not None))
    unit = "rows" if fmt == "csv" else "lines"
    if result.bad:
        raise click.ClickException(
            f"{result.bad} of {result.rows} {unit} in {shown} were bad and skipped (listed "
            f"above); the other {result.rows - result.bad} are "
            + ("queued for the store" if result.queued else "recorded")
        )


def _import_summary(shown: str, fmt: str, result: ImportResult, named: bool) -> str:
    """One line saying how every line of the input was accounted for."""
    unit = "rows" if fmt == "csv" else "records"
    if result.queued:  # through an outbox: ids already stored are dropped on delivery
        outcome = (
            f"{result.queued} queued for the store (ids it has already are dropped on "
            f"delivery), {result.bad} bad"
        )
    else:
        outcome = f"{result.recorded} new, {result.duplicates} already recorded, {result.bad} bad"
    parts = [f"{result.rows} {unit} ({outcome})"]
    if result.header:
        parts.insert(0, f"{result.header} header")
    if result.blank:
        parts.append(f"{result.blank} blank")
    if result.continued:
        parts.append(f"{result.continued} inside quoted cells")
    text = f"{shown}: {result.lines} lines = {' + '.join(parts)}; delivery {result.delivery}"
    if not named and result.duplicates and not result.recorded and not result.queued:
        text += " (this content was imported before: if it is a new delivery, use --batch-id)"
    return text


@usage.command()
@click.argument("metric_key", metavar="METRIC")
@subject_options
@range_options("default: unbounded")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many records, oldest first (0: no limit).",
)
@org_option()
@pass_state
def get(
    state: CliState,
    metric_key: str,
    subject_type: str | None,
    subject_id: str | None,
    start: str | None,
    end: str | None,
    limit: int,
    org_id: str | None,
) -> None:
    """Show raw records of METRIC, oldest first.

    \b
    Example:
        tsmeter usage get api_calls --subject-id org-1 --from 2026-01-01 --limit 20
    """
    records = state.meter().get_usage(
        metric_key,
        subject_type,
        subject_id,
        start=state.when("--from", start),
        end=state.when("--to", end),
        org_id=org_id,
        limit=limit or None,
    )
    emit_list(state, records, _RECORD_COLUMNS, fields=json_fields(UsageRecord), empty="No records.")


@usage.command()
@click.argument("metric_key", metavar="METRIC")
@click.option(
    "--period",
    type=PERIODS,
    default=None,
    help="Period type [default: the metric's reset period; monthly if never].",
)
@range_options("default: the current month")
@subject_options
@org_option()
@pass_state
def summary(
    state: CliState,
    metric_key: str,
    period: str | None,
    start: str | None,
    end: str | None,
    subject_type: str | None,
    subject_id: str | None,
    org_id: str | None,
) -> None:
    """Show METRIC's usage per subject and period (every period overlapping the range).

    Summaries are always fresh: records that arrived since the last aggregation
    are included. Totals are exact, with the metric's decimal places (JSON:
    decimal strings such as "1250.500000"; an avg is rounded half to even).

    \b
    Example:
        tsmeter usage summary api_calls --period daily --from 2026-01-01 --to 2026-02-01
    """
    month_start, month_end = state.current_month()
    summaries = state.meter().get_usage_summaries(
        metric_key,
        period,
        start=state.when("--from", start) or month_start,
        end=state.when("--to", end) or month_end,
        subject_type=subject_type,
        subject_id=subject_id,
        org_id=org_id,
    )
    emit_list(
        state,
        summaries,
        _SUMMARY_COLUMNS,
        fields=json_fields(UsageSummary),
        empty="No usage in that range.",
    )


@usage.command()
@click.argument("metric_key", metavar="METRIC")
@click.option(
    "--group-by",
    "-g",
    "group_by",
    metavar="NAME",
    multiple=True,
    help="A dimension to group by (repeat, or separate with commas; in the order given).",
)
@click.option(
    "--where",
    "-w",
    "where",
    metavar="NAME=VALUE",
    multiple=True,
    help="Only records whose dimension NAME is VALUE (repeat for several dimensions); "
    "NAME= for records without a value.",
)
@click.option(
    "--period",
    type=PERIODS,
    default=None,
    help="Period type [default: the metric's reset period; monthly if never].",
)
@range_options("default: the current month")
@subject_options
@click.option(
    "--as-of",
    metavar="TIME",
    default=None,
    help="Read as at this time (a time-weighted sum's last reading holds until then) "
    "[default: now].",
)
@org_option()
@pass_state
def breakdown(
    state: CliState,
    metric_key: str,
    group_by: tuple[str, ...],
    where: tuple[str, ...],
    period: str | None,
    start: str | None,
    end: str | None,
    subject_type: str | None,
    subject_id: str | None,
    as_of: str | None,
    org_id: str | None,
) -> None:
    """Show METRIC's usage per period, subject and group of dimension values.

    One row per combination of the --group-by dimensions' values (a record
    without a value for one is in a group of its own, shown as "(none)"; JSON
    null), counting only the records that match every --where. Totals are
    exact, computed as "usage summary" computes them.

    \b
    Example:
        tsmeter usage breakdown tokens --group-by model --from 2026-11 --to 2026-12
        tsmeter usage breakdown tokens -g model,region -w region=eu --period daily
        tsmeter usage breakdown gb_hours --where tier= --subject-id org-1
    """
    try:
        filters = parse_where(where, "--where")
    except ValidationError as exc:
        raise usage_error(str(exc)) from None
    names = parse_group_by(group_by)
    month_start, month_end = state.current_month()
    summaries = state.meter().get_usage_breakdown(
        metric_key,
        period,
        start=state.when("--from", start) or month_start,
        end=state.when("--to", end) or month_end,
        group_by=names,
        where=filters or None,
        subject_type=subject_type,
        subject_id=subject_id,
        org_id=org_id,
        as_of=state.when("--as-of", as_of),
    )
    empty = "No usage in that range."
    if state.fmt != "table":
        emit_list(state, summaries, _SUMMARY_COLUMNS, fields=json_fields(UsageSummary), empty=empty)
        return
    shown = names or tuple(filters)
    columns = [
        *_SUMMARY_COLUMNS[:3],
        *(Column(name.upper(), f"dimension:{name}", none="(none)") for name in shown),
        *_SUMMARY_COLUMNS[3:],
    ]
    rows = [
        {
            **{c.attr: getattr(s, c.attr) for c in _SUMMARY_COLUMNS},
            **{f"dimension:{n}": (s.dimensions or filters).get(n) for n in shown},
        }
        for s in summaries
    ]
    emit_list(state, rows, columns, empty=empty)


@usage.command()
@click.argument("metric_key", metavar="[METRIC]", required=False)
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    default="-",
    show_default=True,
    help="File to write, - for stdout.",
)
@click.option(
    "--export-format",
    type=click.Choice(["jsonl", "csv"], case_sensitive=False),
    help="[default: csv if FILE ends in .csv, else jsonl]",
)
@click.option(
    "--csv-neutralise/--no-csv-neutralise",
    default=None,
    help="In CSV, put ' before text cells (ids, names, metadata; never numbers or "
    "timestamps) that start with =, +, -, @, TAB or CR, so spreadsheets do not run them as "
    "formulas; 'usage import' removes it again [default: the root option's, on].",
)
@range_options("default: unbounded")
@subject_options
@org_option("The org's own METRIC, or without METRIC every metric of that org.")
@pass_state
def export(
    state: CliState,
    metric_key: str | None,
    output: str,
    export_format: str | None,
    csv_neutralise: bool | None,
    start: str | None,
    end: str | None,
    subject_type: str | None,
    subject_id: str | None,
    org_id: str | None,
) -> None:
    """Stream the records of METRIC (default: every metric) as JSON Lines or CSV.

    The output can be imported again with "tsmeter usage import": ids are kept,
    so importing an export into a store that has the records changes nothing.
    A new FILE is created readable by its owner only (0600); an existing FILE
    is replaced whole and keeps its permissions.

    Records are written oldest first, each metric from one snapshot of the store
    (records written meanwhile are not included, none is skipped or repeated);
    timestamps are in the configured time zone with their offset, quantities
    exact decimals. On a terminal, a progress bar counts the records.

    \b
    Example:
        tsmeter usage export api_calls --from 2026-01-01 --to 2026-02-01 -o january.csv
    """
    meter = state.meter()
    csv_name = output.lower().endswith(".csv")
    fmt: Literal["jsonl", "csv"] = (
        "csv"
        if (export_format or "").lower() == "csv" or (export_format is None and csv_name)
        else "jsonl"
    )
    options: dict[str, Any] = {
        "fmt": fmt,
        "start": state.when("--from", start),
        "end": state.when("--to", end),
        "subject_type": subject_type,
        "subject_id": subject_id,
        "org_id": org_id,
        "neutralise": state.csv_neutralise if csv_neutralise is None else csv_neutralise,
    }
    if output == "-":
        with click.open_file("-", "w", encoding="utf-8") as stdout:
            count = _export(meter, stdout, metric_key, options)
        click.echo(f"Exported {count} records.", err=True)
        return
    try:
        with replaced_whole(output, newline="") as out:
            count = _export(meter, out, metric_key, options)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    doc = {"output": output, "format": fmt, "records": count}
    emit_one(state, doc, text=f"Exported {count} records to {output}.")


def _export(meter: Meter, out: IO[str], metric_key: str | None, options: dict[str, Any]) -> int:
    """Export with a progress bar on a terminal, against the number of records the store
    counts beforehand (no count is asked for without a terminal, nor shown where the store
    cannot count)."""
    total = None
    if sys.stderr.isatty():
        total = meter.count_usage(
            metric_key, **{k: v for k, v in options.items() if k not in ("fmt", "neutralise")}
        )
    with progress(total, "Exporting", step=10_000) as (advance, _say):
        return meter.export_usage(out, metric_key, progress=advance, **options)


for _command in (cancel, amend, corrections):  # corrections of stored records
    usage.add_command(_command)
