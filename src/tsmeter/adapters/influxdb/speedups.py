"""The InfluxDB adapter's compiled fast paths (``_speedups.c`` here: point placement and line
protocol), or ``None`` where they are not built.

They stay compiled because ``benchmarks/compiled_paths.py`` measures each well above the
Python code on a store's write, and no library does the job. ``pip install`` compiles them
when a C compiler is at hand; without one tsmeter runs on its Python code, which stays the
reference: every compiled function only takes the cases it can decide without doubt and
hands the rest back. Set ``TSMETER_PURE_PYTHON=1`` to run on
the Python code alone (the benchmarks print which one ran).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["describe", "native"]


def _load(name: str) -> ModuleType | None:
    if os.environ.get("TSMETER_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(f"tsmeter.adapters.influxdb.{name}")
    except ImportError:
        return None


native = _load("_speedups")


def describe() -> str:
    """``compiled`` or ``pure Python`` (and why), for benchmark and status output."""
    if native is not None:
        return "compiled fast paths"
    if os.environ.get("TSMETER_PURE_PYTHON", "") not in ("", "0"):
        return "pure Python (TSMETER_PURE_PYTHON is set)"
    return "pure Python (tsmeter.adapters.influxdb._speedups is not built)"
