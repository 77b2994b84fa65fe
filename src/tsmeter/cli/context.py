"""What every command shares: the root options and a Meter opened on first use."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Concatenate, Literal, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from tsmeter.bootstrap import ENV_TIMEZONE, connect, is_default_store
from tsmeter.cli.params import calendar_date
from tsmeter.domain import PeriodType
from tsmeter.domain.validation import from_ns, parse_timestamp, to_ns
from tsmeter.metering.meter import Meter

__all__ = ["CliState", "OutputFormat", "pass_state"]

OutputFormat = Literal["table", "json", "csv"]
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class CliState:
    """The root options (``--store``, ``--create``, ``--format``, ``--timezone``,
    ``--outbox``, ``--csv-neutralise``) and the open Meter.

    ``store`` and ``timezone`` are None when not given; :func:`tsmeter.connect` then
    falls back to the environment and the defaults. The Meter is opened lazily,
    so ``--help`` and argument errors never touch the store. A missing embedded store file
    is an error unless ``create`` (``--create``) or the store is the default one.
    Example: ``state.meter().list_metrics()`` inside a command decorated with ``@pass_state``.
    """

    store: str | None = None
    create: bool = False  # --create: a missing embedded store file is created
    fmt: OutputFormat = "table"
    timezone: str | None = None
    outbox: str | None = None  # a root --outbox PATH or "off"; None: connect() decides
    csv_neutralise: bool = True  # --format csv: a ' before text cells a spreadsheet would run
    _meters: list[Meter] = field(default_factory=list)

    def meter(self, *, mirror: bool | None = None) -> Meter:
        """The Meter on the configured store, opened on first call and closed on exit.

        ``mirror=False`` keeps the PostHog mirror off (commands that only read or manage
        the mirror themselves); by default the environment decides (see ``connect``).
        """
        if not self._meters:
            create = self.create or is_default_store(self.store)
            self._meters.append(
                connect(
                    self.store,
                    timezone=self.timezone,
                    outbox=self.outbox,
                    mirror=mirror,
                    create=create,
                )
            )
        return self._meters[0]

    def open(self, url: str) -> Meter:
        """Open an extra Meter on ``url`` (closed on exit, like :meth:`meter`). The store
        named by ``--store`` follows its rule (it must exist unless ``--create``); a URL the
        command chose itself (the demo's own file) is created when missing."""
        create = self.create or url != self.store
        meter = connect(url, timezone=self.timezone, outbox=self.outbox, create=create)
        self._meters.append(meter)
        return meter

    def close(self) -> None:
        """Close every Meter this state opened."""
        while self._meters:
            self._meters.pop().close()

    # -- time arguments ---------------------------------------------------------------
    def when(self, option: str, text: str | None) -> datetime | None:
        """Parse a ``--from``/``--to`` value: an ISO-8601 timestamp with an offset, or a date
        (``2026-01-31``), a month (``2026-01``) or a year (``2026``), each meaning the local
        midnight it starts at in the configured time zone (so ``--from 2026-11 --to 2026-12``
        is November there)."""
        if text is None:
            return None
        day = calendar_date(option, text)
        if day is None:
            return parse_timestamp(option, text)
        meter = self.meter()
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=meter.calendar.zone)
        return from_ns(meter.calendar.start_of(PeriodType.DAILY, to_ns(noon.astimezone(UTC))))

    def current_month(self) -> tuple[datetime, datetime]:
        """``(start, end)`` of the calendar month containing now, in the configured zone."""
        calendar = self.meter().calendar
        start, end = calendar.bounds(PeriodType.MONTHLY, to_ns(datetime.now(UTC)))
        return from_ns(start), from_ns(end)

    def zone(self) -> tzinfo:
        """The zone every format shows times in: the open Meter's, else the configured one
        (``--timezone``, ``$TSMETER_TIMEZONE``, else UTC; a name no zone has is the Meter's
        error to report, so UTC here)."""
        if self._meters:
            return self._meters[0].calendar.zone
        name = self.timezone or os.environ.get(ENV_TIMEZONE) or "UTC"
        try:
            return ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            return UTC


_pass_state = click.make_pass_decorator(CliState)


def pass_state(command: Callable[Concatenate[CliState, P], R]) -> Callable[P, R]:
    """Decorator: call the command with the :class:`CliState` as its first argument.

    Example: ``@pass_state`` under ``@click.command()``, then ``def cmd(state, ...)``.
    """
    return _pass_state(command)
