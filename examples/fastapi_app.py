"""A FastAPI service that meters every request without making the request wait for tsmeter.

Each request to the service adds one ``api_calls`` record for the org named by its
``X-Org-Id`` header to a batcher: ``add`` only appends to a list and returns, and a task on
the same event loop sends the records in batches (every 1,000 records or 200 ms, whichever
comes first) through the :class:`~tsmeter.client.AsyncClient`. The batch call is
asynchronous, so while it waits for the tsmeter server the loop serves other requests.
Shutting the service down sends what is still pending.

``X-Request-Id`` becomes the record's id, the idempotency key: a caller that retries a request
with the same id is counted once. Run it with::

    TSMETER_URL=http://127.0.0.1:8080 TSMETER_API_KEY=... uvicorn examples.fastapi_app:app

(``TSMETER_API_KEY`` needs the ``ingest`` and ``read`` scopes, and ``admin`` the first time,
when start-up defines the metric; leave it unset for a server started with ``--no-auth``.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from tsmeter.client import AsyncClient
from tsmeter.errors import OutboxFullError

TSMETER_URL = os.environ.get("TSMETER_URL", "http://127.0.0.1:8080")
TSMETER_API_KEY = os.environ.get("TSMETER_API_KEY") or None

log = logging.getLogger("example")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One client and one batcher for the life of the service; leaving the batcher's block
    (at shutdown) sends every record still pending."""
    async with AsyncClient(TSMETER_URL, TSMETER_API_KEY) as client:
        await client.define_metric("api_calls", aggregation_type="COUNT", exist_ok=True)
        async with client.batcher(max_records=1000, max_delay=0.2) as batcher:
            app.state.batcher = batcher
            yield


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def meter_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count the request for its org once it is answered; never waits for tsmeter."""
    response = await call_next(request)
    org = request.headers.get("X-Org-Id")
    if org:
        record_id = request.headers.get("X-Request-Id")
        try:
            request.app.state.batcher.add(
                "api_calls",
                "org",
                org,
                id=record_id,
                metadata={"path": request.url.path, "status": response.status_code},
            )
        except OutboxFullError:
            # tsmeter has been unreachable for so long that max_pending records wait: this
            # service chooses to answer and log what it could not meter (answering 503 here
            # instead would refuse use that cannot be billed)
            log.error("not metered: api_calls for org %r, request %r", org, record_id)
    return response


@app.get("/hello")
async def hello() -> dict[str, str]:
    """The service's own work."""
    return {"hello": "world"}
