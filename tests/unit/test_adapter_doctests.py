"""The examples in the adapters' docstrings run (pytest collects only tsmeter/ by path)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tsmeter.adapters

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(tsmeter.adapters.__path__, "tsmeter.adapters.")
    if not info.ispkg
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """Every example in the module's docstrings gives the output it shows."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
