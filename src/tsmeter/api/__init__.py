"""tsmeter's HTTP API (``tsmeter serve``): a FastAPI application over one Meter.

See ``docs/api.md``. Needs the ``api`` extra (``pip install 'tsmeter[api]'``).
"""

from __future__ import annotations

from tsmeter.extras import needs

with needs("api"):
    from tsmeter.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
