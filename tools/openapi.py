"""The OpenAPI document of the HTTP API, ``docs/api/openapi.json``, generated from the app.

The routes and their pydantic models are the source of truth; a test
(``tests/api/test_openapi.py``) fails while the committed file differs from this output.
Regenerate after changing a route or a model::

    .venv/bin/python -m tools.openapi docs/api/openapi.json

The app is built over an in-memory store with authentication off; the document is the same
with keys required (the bearer scheme is declared either way).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["document", "main", "render"]


def document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    import tsmeter
    from tsmeter.api import ApiSettings, create_app
    from tsmeter.api.auth import Authenticator

    with tsmeter.connect("sqlite:///:memory:", mirror=False) as meter:
        app = create_app(meter, authenticator=Authenticator(None), settings=ApiSettings())
        spec: dict[str, Any] = app.openapi()
    return spec


def render() -> str:
    """The document as the committed file holds it: sorted keys, two-space indents."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the document to the path given, or print it."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = render()
    if args:
        Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
