"""The root ``tsmeter`` command: global options, the command tree and error handling.

User errors never end in a traceback: :class:`~tsmeter.errors.TsmeterError`
and click's usage errors become one ``Error: ...`` line on stderr and the exit status
:func:`exit_code` gives (see :class:`~tsmeter.cli.exit_codes.ExitCode`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, cast

import click
from click.exceptions import NoArgsIsHelpError

from tsmeter.cli.aggregate import aggregate
from tsmeter.cli.alert import alert
from tsmeter.cli.apikey import apikey
from tsmeter.cli.apply import apply
from tsmeter.cli.context import CliState, OutputFormat
from tsmeter.cli.demo import demo
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.health import health
from tsmeter.cli.influx import influx
from tsmeter.cli.jobs import jobs, scheduler
from tsmeter.cli.metric import metric
from tsmeter.cli.notifications import notifications
from tsmeter.cli.outbox import outbox
from tsmeter.cli.output import visible
from tsmeter.cli.posthog import posthog
from tsmeter.cli.reconcile import reconcile
from tsmeter.cli.report import report
from tsmeter.cli.serve import serve
from tsmeter.cli.state import state
from tsmeter.cli.threshold import threshold
from tsmeter.cli.usage import usage
from tsmeter.errors import (
    NotFoundError,
    QuotaExceededError,
    StorageUnavailableError,
    TsmeterError,
)
from tsmeter.extras import explain

__all__ = ["TsmeterGroup", "cli", "exit_code", "main"]

#: the exit status of each kind of error tsmeter reports, most specific first
_EXIT_CODES: list[tuple[type[TsmeterError], ExitCode]] = [
    (NotFoundError, ExitCode.NOT_FOUND),
    (StorageUnavailableError, ExitCode.STORE),
    (QuotaExceededError, ExitCode.OVER_LIMIT),
    (TsmeterError, ExitCode.ERROR),
]


def exit_code(exc: BaseException) -> ExitCode:
    """The exit status for an error: :data:`_EXIT_CODES` for tsmeter's own errors, USAGE for
    click's usage errors, ERROR for the rest.

    >>> from tsmeter.errors import NotFoundError, ValidationError
    >>> exit_code(NotFoundError("metric 'x' not found")), exit_code(ValidationError("f", "bad"))
    (<ExitCode.NOT_FOUND: 6>, <ExitCode.ERROR: 1>)
    """
    if isinstance(exc, click.UsageError):
        return ExitCode.USAGE
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return ExitCode.ERROR


class UsageLineError(click.ClickException):
    """A click usage error shown as one line that points at ``--help``."""

    exit_code = ExitCode.USAGE

    def __init__(self, error: click.UsageError | str) -> None:
        if isinstance(error, str):
            super().__init__(error)
            return
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
        super().__init__(_line(error.format_message()) + hint)


#: an ``Error:`` line class per exit status (click reads the status from the class)
_ERROR_LINES: dict[ExitCode, type[click.ClickException]] = {
    code: type(f"ErrorLine{code.value}", (click.ClickException,), {"exit_code": int(code)})
    for code in ExitCode
}


def _line(message: str) -> str:
    """A message as one line a terminal shows as it is: newlines, bidi and other hidden
    characters (which a message may quote from the input) as visible escapes."""
    return visible(message, backslash=False)


def _one_line(exc: BaseException) -> click.ClickException:
    """The one-line error to show for an exception a user can fix, with its exit status."""
    if isinstance(exc, click.UsageError):
        return UsageLineError(exc)
    if isinstance(exc, click.ClickException):
        line = _line(exc.format_message())
        if line == exc.format_message():
            return exc
        # the exit status stays: 2 for bad usage, 1 for the rest
        return UsageLineError(line) if exc.exit_code == 2 else click.ClickException(line)
    if isinstance(exc, ModuleNotFoundError):  # an optional package imported outside needs()
        missing = explain(exc)
        if missing is None:
            raise exc
        exc = missing
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else ""
        return click.ClickException(_line(f"{name}: {exc.strerror}" if name else str(exc)))
    return _ERROR_LINES[exit_code(exc)](_line(str(exc)))


class TsmeterGroup(click.Group):
    """A click group that turns tsmeter's errors into one ``Error:`` line, never a traceback.

    Used for the root command; the errors of every subcommand pass through its
    :meth:`invoke`. Example: ``@click.group(cls=TsmeterGroup)``.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the root options, reporting a bad one in one line."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise UsageLineError(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        """Run the chosen command; user errors become :class:`click.ClickException`."""
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(1)
        except (TsmeterError, click.ClickException, OSError, ModuleNotFoundError) as exc:
            raise _one_line(exc) from None


def _silence_stdout() -> None:
    """After the reader of a pipe went away (``| head``), drop what is still buffered."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group(
    name="tsmeter",
    cls=TsmeterGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=ExitCode.summary() + " The CLI reference (docs/cli.md) explains each.",
)
@click.option(
    "--store",
    metavar="URL",
    default=None,
    help="Store URL: sqlite:///PATH, a file path, influxdb://HOST:PORT/DB or "
    "influxdb2://HOST:PORT/BUCKET?org=ORG [default: $TSMETER_STORE_URL, else "
    "tsmeter/tsmeter.db in $XDG_DATA_HOME or ~/.local/share].",
)
@click.option(
    "--create",
    is_flag=True,
    help="Create the embedded store if its file does not exist. Without it a store file "
    "named by --store or $TSMETER_STORE_URL must exist (exit status 5 otherwise); the "
    "default store is created on first use.",
)
@click.option(
    "--outbox",
    metavar="PATH",
    envvar="TSMETER_OUTBOX",
    default=None,
    help="Durable outbox file in front of the store (see 'tsmeter outbox'); 'off' for none "
    "[default: $TSMETER_OUTBOX, else a file of its own for an InfluxDB store, none for "
    "the embedded one].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"], case_sensitive=False),
    default="table",
    show_default=True,
    help="How results are printed.",
)
@click.option(
    "--timezone",
    metavar="ZONE",
    envvar="TSMETER_TIMEZONE",
    default=None,
    help="IANA time zone that periods are computed and shown in [default: "
    "$TSMETER_TIMEZONE, else UTC].",
)
@click.option(
    "--csv-neutralise/--no-csv-neutralise",
    default=True,
    show_default=True,
    help="With --format csv, put ' before text cells starting with = + - @ TAB or CR "
    "(after any quotes), so spreadsheets show them instead of running them as formulas.",
)
@click.version_option(package_name="tsmeter")
@click.pass_context
def cli(
    ctx: click.Context,
    store: str | None,
    create: bool,
    outbox: str | None,
    fmt: str,
    timezone: str | None,
    csv_neutralise: bool,
) -> None:
    """tsmeter: usage metering for SaaS products.

    Define metrics, record usage, aggregate it into hourly to yearly summaries
    and set limits, on the embedded store (a SQLite file) or another store URL.
    Results print as a table, JSON or CSV.

    \b
    Example:
        tsmeter demo
        tsmeter --store usage.db --create metric define api_calls --aggregation-type count
        tsmeter --store usage.db usage record api_calls org org-1
        tsmeter --store usage.db --format json usage summary api_calls --period daily
    """
    state = CliState(
        store=store,
        create=create,
        fmt=cast(OutputFormat, fmt.lower()),
        timezone=timezone,
        outbox=outbox,
        csv_neutralise=csv_neutralise,
    )
    ctx.obj = state
    ctx.call_on_close(state.close)


for _command in (metric, usage, threshold, alert, aggregate, demo, influx, scheduler, jobs,
                 notifications, posthog, reconcile, outbox, state, apply, report,
                 health, serve, apikey):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    """The ``tsmeter`` console script."""
    cli(prog_name="tsmeter")
