"""``tsmeter outbox``: what waits in the durable outbox for the store, and what it rejected.

``status``, ``list-quarantined`` and ``purge`` read (or, for purge, change) the outbox file
directly: they start no delivery and leave the retry schedule of a running process alone.
``retry`` opens the store with the outbox in front of it and delivers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from tsmeter.bootstrap import ENV_OUTBOX, ENV_STORE_URL, connect
from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import emit_list, emit_one, table_lines
from tsmeter.cli.params import usage_error
from tsmeter.errors import NotFoundError, ValidationError
from tsmeter.outbox.location import default_outbox_path, outbox_disabled

__all__ = ["OutboxFile", "OutboxFileStatus", "outbox"]

_META_KEY = "tsmeter.outbox.durable"
_QUARANTINE_FIELDS = ["seq", "recordId", "quarantinedAt", "error"]


@dataclass(frozen=True)
class OutboxFileStatus:
    """What an outbox file holds, as any process sees it (records a running process still
    holds in memory are only visible to it: ``meter.outbox.status()``)."""

    pending: int  # records waiting for the store
    batches: int
    deferred: int  # batches waiting for a retry after a failure
    deferred_records: int
    next_attempt: datetime | None  # the earliest retry of a deferred batch
    oldest: datetime | None  # when the oldest pending batch was committed
    attempts: int  # the most delivery attempts any pending batch has had
    quarantined: int
    last_error: str | None  # of the oldest batch that failed


def _time(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, UTC)


class OutboxFile:
    """An outbox file opened without :class:`tsmeter.outbox.durable.Outbox`'s delivery threads.

    Example: ``OutboxFile("outbox.db").status().pending``.
    """

    def __init__(self, path: str, *, write: bool = False) -> None:
        self.path = path
        if not Path(path).is_file():
            raise NotFoundError(f"no outbox file at {path!r}")
        try:
            if write:
                self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            else:
                uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0)
            names = {
                name
                for (name,) in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
        except sqlite3.Error as exc:
            raise ValidationError("outbox", f"{path!r} is not a tsmeter outbox: {exc}") from None
        if not {"outbox_batches", "outbox_quarantine"} <= names:
            self._conn.close()
            raise ValidationError("outbox", f"{path!r} is not a tsmeter outbox")

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def status(self) -> OutboxFileStatus:
        """Counts of the pending, deferred and quarantined records."""
        now = time.time_ns()
        pending, batches, deferred, deferred_n, next_at, oldest, attempts = self._conn.execute(
            "SELECT coalesce(sum(n), 0), count(*), coalesce(sum(next_attempt_at > :now), 0),"
            " coalesce(sum(CASE WHEN next_attempt_at > :now THEN n ELSE 0 END), 0),"
            " min(CASE WHEN next_attempt_at > :now THEN next_attempt_at END),"
            " min(created_at), coalesce(max(attempts), 0) FROM outbox_batches",
            {"now": now},
        ).fetchone()
        (quarantined,) = self._conn.execute("SELECT count(*) FROM outbox_quarantine").fetchone()
        error = self._conn.execute(
            "SELECT last_error FROM outbox_batches WHERE last_error IS NOT NULL"
            " ORDER BY seq LIMIT 1"
        ).fetchone()
        return OutboxFileStatus(
            pending=int(pending),
            batches=int(batches),
            deferred=int(deferred),
            deferred_records=int(deferred_n),
            next_attempt=_time(next_at),
            oldest=_time(oldest),
            attempts=int(attempts),
            quarantined=int(quarantined),
            last_error=error[0] if error else None,
        )

    def quarantined(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The quarantined records, oldest first: seq, record id, when, the server's message."""
        found = self._conn.execute(
            "SELECT seq, record_id, quarantined_at, error FROM outbox_quarantine ORDER BY seq"
            " LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [
            {"seq": seq, "recordId": rid, "quarantinedAt": _time(at), "error": error}
            for seq, rid, at, error in found
        ]

    def purge(self, upto: int) -> int:
        """Delete the quarantined records numbered ``upto`` or lower; return how many."""
        return self._conn.execute("DELETE FROM outbox_quarantine WHERE seq <= ?", (upto,)).rowcount

    def last_quarantined(self) -> int:
        """The number of the newest quarantined record (0: none)."""
        (seq,) = self._conn.execute(
            "SELECT coalesce(max(seq), 0) FROM outbox_quarantine"
        ).fetchone()
        return int(seq)


def _text(state: CliState, value: object) -> str:
    """A value for table output, never shortened (server messages are the point here)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(state.zone()).isoformat(sep=" ", timespec="seconds")
    return str(value)


def _path(state: CliState) -> str:
    """The outbox file: ``outbox --outbox``, else the root ``--outbox``, else $TSMETER_OUTBOX,
    else the default file of the store given (an InfluxDB store's own)."""
    chosen = click.get_current_context().meta.get(_META_KEY)
    path = chosen or state.outbox or os.environ.get(ENV_OUTBOX)
    if not path:
        store = state.store or os.environ.get(ENV_STORE_URL)
        default = default_outbox_path(store) if store else None
        path = str(default) if default is not None else None
    if not path or outbox_disabled(path):
        raise usage_error(f"no outbox: give --outbox PATH (or set {ENV_OUTBOX})")
    return str(path)


def _status_doc(path: str, status: OutboxFileStatus) -> dict[str, Any]:
    age = None
    if status.oldest is not None:
        age = round((datetime.now(UTC) - status.oldest).total_seconds(), 1)
    return {
        "path": path,
        "pending": status.pending,
        "batches": status.batches,
        "deferred": status.deferred,
        "deferredRecords": status.deferred_records,
        "nextAttempt": status.next_attempt,
        "oldest": status.oldest,
        "oldestAgeSeconds": age,
        "attempts": status.attempts,
        "quarantined": status.quarantined,
        "lastError": status.last_error,
    }


@click.group(name="outbox")
@click.option(
    "--outbox",
    "path",
    metavar="PATH",
    default=None,
    help=f"The outbox file [default: the root --outbox, else ${ENV_OUTBOX}, else the"
    " default file of an InfluxDB --store].",
)
@click.pass_context
def outbox(ctx: click.Context, path: str | None) -> None:
    """The durable outbox: records waiting for the store, and those it rejected.

    With an outbox (an InfluxDB store's default; tsmeter.connect(..., outbox=PATH)
    or $TSMETER_OUTBOX), records are committed to a local SQLite file and delivered to the store in
    the background; failed deliveries are retried with backoff, and records the
    store rejects are quarantined with the server's message.

    \b
    Example:
        tsmeter outbox --outbox /var/lib/app/outbox.db status
        TSMETER_OUTBOX=outbox.db tsmeter outbox list-quarantined
        tsmeter --store influxdb://127.0.0.1:8086/metering outbox --outbox outbox.db retry
        tsmeter --store influxdb://127.0.0.1:8086/metering outbox status
    """
    if path is not None:
        ctx.meta[_META_KEY] = path


@outbox.command()
@pass_state
def status(state: CliState) -> None:
    """Show what the outbox holds: pending records, deferred batches, quarantined records.

    Reads the file only: nothing is delivered and a running process's retry
    schedule is left alone. deferred: batches waiting for a retry after a failure
    (nextAttempt: the earliest); oldest: when the oldest pending batch was
    committed; lastError: why the oldest failing batch failed. Records a running
    process holds in memory (durability "memory"), and how many it delivered,
    are seen by that process only (meter.outbox.status()).

    \b
    Example:
        tsmeter outbox --outbox outbox.db status
        tsmeter --format json outbox --outbox outbox.db status
    """
    path = _path(state)
    handle = OutboxFile(path)
    try:
        found = handle.status()
    finally:
        handle.close()
    doc = _status_doc(path, found)
    if state.fmt != "table":
        emit_one(state, doc)
        return
    width = max(len(key) for key in doc)
    for key, value in doc.items():
        click.echo(f"{key.ljust(width)}  {_text(state, value)}".rstrip())


@outbox.command(name="list-quarantined")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N records.")
@pass_state
def list_quarantined(state: CliState, limit: int | None) -> None:
    """List the records the store rejected, oldest first, with the server's message.

    \b
    Example:
        tsmeter outbox --outbox outbox.db list-quarantined
        tsmeter --format json outbox --outbox outbox.db list-quarantined --limit 10
    """
    handle = OutboxFile(_path(state))
    try:
        items = handle.quarantined(limit)
    finally:
        handle.close()
    if state.fmt != "table" or not items:
        emit_list(state, items, [], fields=_QUARANTINE_FIELDS, empty="Nothing quarantined.")
        return
    cells = [[_text(state, item[f]) for f in _QUARANTINE_FIELDS] for item in items]
    headers = ["SEQ", "RECORD ID", "QUARANTINED AT", "SERVER'S MESSAGE"]
    for line in table_lines(headers, cells, {0}):
        click.echo(line)


@outbox.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def purge(state: CliState, yes: bool) -> None:
    """Delete the quarantined records for good (pending records are never touched).

    They are lost then: look at them first with list-quarantined, and send
    them again with retry if the store should now take them.

    \b
    Example:
        tsmeter outbox --outbox outbox.db purge
        tsmeter outbox --outbox outbox.db purge --yes
    """
    path = _path(state)
    handle = OutboxFile(path, write=True)
    try:
        upto = handle.last_quarantined()
        count = len(handle.quarantined()) if upto else 0
        if count and not yes:
            click.confirm(f"Delete {count} quarantined record(s) from {path} for good?", abort=True)
        purged = handle.purge(upto) if count else 0
    finally:
        handle.close()
    text = f"Purged {purged} quarantined record(s) from {path}."
    emit_one(state, {"path": path, "purged": purged}, text=text)


def _flusher_elsewhere(path: str) -> bool:
    """Whether another process holds the outbox's flush lock (and so does the delivering)."""
    try:
        handle = open(f"{path}.flush.lock", "a")  # noqa: SIM115 - closed below
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        handle.close()  # closing releases a lock taken here
    return False


@outbox.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to deliver for before reporting what remains.",
)
@pass_state
def retry(state: CliState, timeout: float) -> None:
    """Make deferred batches due, send quarantined records again, and deliver.

    Delivers to the store given with --store (or $TSMETER_STORE_URL; it must be
    given: the outbox file does not say which store its records are for) for up
    to --timeout seconds, then reports what was delivered and what remains.
    When another process on the same outbox is delivering, this command waits
    for it instead. Exits with status 1 if records remain pending or were
    rejected again.

    \b
    Example:
        tsmeter --store influxdb://127.0.0.1:8086/metering outbox --outbox outbox.db retry
        tsmeter --store usage.db outbox --outbox outbox.db retry --timeout 10
    """
    path = _path(state)
    store = state.store or os.environ.get(ENV_STORE_URL)
    if not store:
        raise usage_error(
            f"retry delivers to the store: give --store URL (or set {ENV_STORE_URL}); the"
            " outbox file does not say which store its records are for"
        )
    handle = OutboxFile(path)
    try:
        before = handle.status()
    finally:
        handle.close()
    elsewhere = _flusher_elsewhere(path)
    started = time.monotonic()
    quiet = logging.getLogger("tsmeter.outbox")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # each failed attempt is a warning: the report says it once
    meter = connect(store, timezone=state.timezone, outbox=path, create=state.create)
    meter.close_timeout = 1.0  # the waiting is done here, bounded by --timeout
    try:
        box = meter.outbox
        assert box is not None
        box.retry()
        done = box.drain(timeout)  # everything that was in the file (and re-queued) left it
        after = box.status()
    finally:
        meter.close()
        quiet.setLevel(level)
    seconds = round(time.monotonic() - started, 2)
    doc = {
        "path": path,
        "madeDue": before.deferred_records,
        "requeued": before.quarantined,
        "deliveredBy": "another process" if elsewhere else "this command",
        "delivered": None if elsewhere else after.delivered,
        "done": done,
        "pending": after.pending,
        "quarantined": after.quarantined,
        "lastError": None if done and not after.quarantined else after.last_error,
        "seconds": seconds,
    }
    if elsewhere:
        outcome = "another process on this outbox delivers them: " + (
            "every record that was pending has left the outbox" if done else "records remain"
        )
    else:
        outcome = f"delivered {after.delivered}"
    text = (
        f"{path}: made due {before.deferred_records} deferred record(s), re-queued"
        f" {before.quarantined} quarantined; {outcome} in {seconds} s;"
        f" {after.pending} pending, {after.quarantined} quarantined"
    )
    emit_one(state, doc, text=text)
    if not done:
        raise click.ClickException(
            f"records still pending after {timeout:g} s"
            f" (last error: {after.last_error or 'none'}); they stay in the outbox"
        )
    if after.quarantined:
        raise click.ClickException(
            f"{after.quarantined} record(s) quarantined: the store rejected them (see"
            " 'tsmeter outbox list-quarantined')"
        )
