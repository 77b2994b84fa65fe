"""Optional dependencies: which extra installs which package, and one error that names the
``pip install`` to run when one is missing.

A feature that needs an optional package imports it inside :func:`needs` (or calls
:func:`require` before it starts); a missing package then becomes a
:class:`~tsmeter.errors.MissingExtraError` such as "an InfluxDB store needs the package
'requests' (not installed): pip install 'tsmeter[influxdb]'", never a bare
``ModuleNotFoundError``. Example::

    with needs("influxdb"):
        import requests
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tsmeter.errors import MissingExtraError

__all__ = ["EXTRAS", "Extra", "explain", "needs", "require"]


@dataclass(frozen=True)
class Extra:
    """One extra of the ``tsmeter`` distribution: the top-level modules it installs and the
    feature that needs them (for the message)."""

    modules: tuple[str, ...]
    feature: str


#: every extra with optional packages, as ``pyproject.toml`` declares them
EXTRAS: dict[str, Extra] = {
    "influxdb": Extra(("requests", "influxdb_client"), "an InfluxDB store"),
    "posthog": Extra(("posthog", "requests"), "the PostHog integration"),
    "scheduler": Extra(("apscheduler",), "the scheduler"),
    "postgres": Extra(("psycopg", "psycopg_pool"), "a PostgreSQL state store"),
    "report": Extra(("matplotlib",), "tsmeter report"),
    "api": Extra(("fastapi", "uvicorn", "prometheus_client"), "the HTTP API (tsmeter serve)"),
    "client": Extra(("httpx",), "the HTTP client"),
}


def _top(name: str | None) -> str:
    return (name or "").split(".", 1)[0]


@contextmanager
def needs(extra: str) -> Iterator[None]:
    """Inside the block, an import that fails for want of one of ``extra``'s packages raises
    :class:`~tsmeter.errors.MissingExtraError`; any other failure passes unchanged.

    >>> with needs("report"):  # doctest: +ELLIPSIS
    ...     raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    Traceback (most recent call last):
    tsmeter.errors.MissingExtraError: tsmeter report needs the package 'matplotlib' ...
    """
    known = EXTRAS[extra]
    try:
        yield
    except ModuleNotFoundError as exc:
        module = _top(exc.name)
        if module not in known.modules:
            raise
        raise MissingExtraError(extra, module, known.feature) from exc


def require(extra: str) -> None:
    """Import every package of ``extra`` now: :class:`~tsmeter.errors.MissingExtraError`
    naming the first one missing, so a command fails before it starts any work.

    >>> require("nothing-such")
    Traceback (most recent call last):
    KeyError: 'nothing-such'
    """
    with needs(extra):
        for module in EXTRAS[extra].modules:
            importlib.import_module(module)


def explain(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The :class:`~tsmeter.errors.MissingExtraError` for a missing module an extra installs,
    or None for any other module: the CLI's last resort for an import outside :func:`needs`.
    A module several extras install names them all (installing them all is sure to help).

    >>> print(explain(ModuleNotFoundError("No module named 'apscheduler'", name="apscheduler")))
    the scheduler needs the package 'apscheduler' (not installed): pip install 'tsmeter[scheduler]'
    >>> explain(ModuleNotFoundError("No module named 'requests'", name="requests")).install
    "pip install 'tsmeter[influxdb,posthog]'"
    >>> explain(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    True
    """
    module = _top(exc.name)
    extras = [extra for extra, known in EXTRAS.items() if module in known.modules]
    if not extras:
        return None
    if len(extras) == 1:
        return MissingExtraError(extras[0], module, EXTRAS[extras[0]].feature)
    return MissingExtraError(",".join(extras), module, "this command")
