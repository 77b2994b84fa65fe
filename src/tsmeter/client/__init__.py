"""HTTP clients of a tsmeter server (``tsmeter serve``), sync and asyncio, over httpx.

They have the Meter's method names, arguments and return types (the domain models, with exact
Decimal quantities) and raise tsmeter's errors, so code written against a local Meter runs
against a server by changing how it is built. Record ids are made by the client before the
first try, so a retried call counts once. ``client.batcher()`` sends records in batches in the
background. Needs ``pip install 'tsmeter[client]'``. See docs/clients.md.
"""

from tsmeter.extras import needs

with needs("client"):  # httpx: a missing package names the extra to install
    from tsmeter.client._protocol import ApiError, Retry
    from tsmeter.client.aio import AsyncClient
    from tsmeter.client.batching import AsyncBatcher, Batcher, Rejected
    from tsmeter.client.sync import Client

__all__ = ["ApiError", "AsyncBatcher", "AsyncClient", "Batcher", "Client", "Rejected", "Retry"]
