"""The embedded store: one SQLite file holding records, summaries, metrics and thresholds."""

from tsmeter.adapters.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
