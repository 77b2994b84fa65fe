"""The import rule and the no-probing rule, checked on the source with ``ast``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tsmeter"
MODULES = sorted(SRC.rglob("*.py"))
PROBED = re.compile(r"store|catalog|meter", re.IGNORECASE)


def _name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _text(node: ast.expr) -> str:
    """The source name of an expression such as ``self.store`` or ``meter``."""
    return ast.unparse(node)


def test_the_checks_see_every_layer() -> None:
    """The walk finds the package's layers (a moved tree would make the checks vacuous)."""
    names = {_name(p) for p in MODULES}
    assert {"tsmeter.domain", "tsmeter.bootstrap", "tsmeter.adapters.sqlite"} <= names


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_adapters_and_bootstrap_import_adapters(path: Path) -> None:
    """Core, the CLI and jobs never import an adapter: only bootstrap chooses adapters."""
    module = _name(path)
    if module.startswith("tsmeter.adapters") or module == "tsmeter.bootstrap":
        return
    bad = [(line, m) for line, m in _imports(path) if m.startswith("tsmeter.adapters")]
    assert not bad, f"{module} imports adapters: {bad}"


CORE = ("tsmeter.domain", "tsmeter.metering", "tsmeter.limits", "tsmeter.outbox")


@pytest.mark.parametrize("path", [p for p in MODULES if _name(p).startswith(CORE)], ids=_name)
def test_core_never_imports_the_api_or_the_cli(path: Path) -> None:
    """Core (domain, metering, limits, outbox) never imports the HTTP API or the CLI: they
    are entry points over it."""
    bad = [
        (line, m)
        for line, m in _imports(path)
        if m.startswith(("tsmeter.api", "tsmeter.cli", "fastapi", "starlette", "uvicorn"))
    ]
    assert not bad, f"{_name(path)} imports {bad}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if _name(p).startswith((*CORE, "tsmeter.client"))], ids=_name
)
def test_the_client_stands_apart(path: Path) -> None:
    """The HTTP client is a way in from another process: core never imports it (nor httpx),
    and it imports neither the server, the CLI, the adapters nor bootstrap itself, so a
    service that only calls a server needs neither the api extra nor a store's packages."""
    module = _name(path)
    if module.startswith("tsmeter.client"):
        banned: tuple[str, ...] = (
            "tsmeter.api",
            "tsmeter.cli",
            "tsmeter.adapters",
            "tsmeter.bootstrap",
            "fastapi",
            "starlette",
            "uvicorn",
        )
    else:
        banned = ("tsmeter.client", "httpx")
    dotted = tuple(f"{name}." for name in banned)  # tsmeter.cli is not tsmeter.client
    bad = [(line, m) for line, m in _imports(path) if m in banned or m.startswith(dotted)]
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if _name(p).startswith("tsmeter.domain")], ids=_name
)
def test_domain_imports_only_domain_and_errors(path: Path) -> None:
    """The domain imports nothing else of tsmeter."""
    bad = [
        (line, m)
        for line, m in _imports(path)
        if m.startswith("tsmeter") and not (m.startswith("tsmeter.domain") or m == "tsmeter.errors")
    ]
    assert not bad, f"{_name(path)} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_probing_of_stores_catalogs_or_meters(path: Path) -> None:
    """No ``getattr``/``hasattr`` on a store, catalog or meter: a capability is used only
    where a port declares it."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and PROBED.search(_text(node.args[0]))
        ):
            bad.append((node.lineno, ast.unparse(node)))
    assert not bad, f"{_name(path)} probes: {bad}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if _name(p).startswith("tsmeter.access")], ids=_name
)
def test_access_imports_only_domain_ports_and_errors(path: Path) -> None:
    """The API keys service is core: it reaches its store through the KeyStore port, and
    knows nothing of the HTTP server or the CLI that use it."""
    allowed = ("tsmeter.access", "tsmeter.domain", "tsmeter.ports", "tsmeter.errors")
    bad = [
        (line, m)
        for line, m in _imports(path)
        if m.startswith("tsmeter") and not m.startswith(allowed)
    ]
    assert not bad, f"{_name(path)} imports {bad}"
