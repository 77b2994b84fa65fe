"""The posthog SDK, wrapped so nothing it does is silent: the capture protocol pinned, upload
failures collected by event uuid, and whether its queue has drained.

What the SDK (7.x) tells and does not tell:

* ``capture()`` returns the event uuid when the event was queued, None when it was not
  (queue full, client shut down): :meth:`SdkClient.capture` returns that as a bool;
* an upload that failed after the SDK's own retries is reported to ``on_error(exc, batch)``
  with the batch's events (each with its uuid); :meth:`SdkClient.take_errors` hands those
  over;
* a successful upload is reported nowhere. The mirror therefore counts an event as sent
  when the SDK's queue has *drained* (every queued event was uploaded or reported to
  ``on_error``) and ``on_error`` did not name it. Drained is read from the queue's
  ``unfinished_tasks`` (the SDK calls ``task_done`` only after an upload and its
  ``on_error`` returned); with an SDK that lacks it, from ``flush()`` returning before its
  timeout. The SDK also drops, with a log line only, events over 900 KiB: tsmeter's events
  are far below that (metadata is at most 64 KiB).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tsmeter.integrations.posthog.events import CaptureEvent, event_uuid
from tsmeter.integrations.posthog.settings import PostHogSettings

__all__ = ["CAPTURE_MODE", "PingResult", "SdkClient", "ping"]

log = logging.getLogger("tsmeter.posthog")

#: The capture protocol, pinned: ``POST {host}/batch/`` (PostHog's v0 endpoint, which every
#: PostHog accepts). Without it the SDK follows ``$POSTHOG_CAPTURE_MODE``.
CAPTURE_MODE = "v0"


def describe_error(exc: BaseException) -> str:
    """One line for an upload error: ``APIError: [PostHog] ... (500)``."""
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SdkClient:
    """One ``posthog.Client`` (v0 capture protocol, one sender thread, no geoip, no flags)
    and the upload errors it reported, by event uuid.

    ``historical`` sends with ``historical_migration=True`` (PostHog's path for backfills).
    Example: ``sdk = SdkClient(settings); sdk.capture(event); sdk.flush(5.0)``.
    """

    def __init__(self, settings: PostHogSettings, *, historical: bool = False) -> None:
        from posthog.capture_mode import CaptureMode
        from posthog.client import Client

        self.settings = settings
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}
        self.last_error: str | None = None
        self.client = Client(
            settings.api_key or "",
            host=settings.host,
            on_error=self._on_error,
            max_queue_size=settings.queue_size,
            flush_at=settings.batch_size,
            flush_interval=settings.flush_interval,
            gzip=settings.gzip,
            max_retries=settings.sdk_retries,
            timeout=settings.timeout,
            thread=1,
            historical_migration=historical,
            capture_mode=CaptureMode(CAPTURE_MODE),
            disable_geoip=True,
            enable_local_evaluation=False,
        )

    def _on_error(self, exc: Exception, batch: list[Any]) -> None:
        """The SDK's callback (on its sender thread): remember which events failed, and why."""
        reason = describe_error(exc)
        with self._lock:
            self.last_error = reason
            for message in batch:
                uid = message.get("uuid") if isinstance(message, dict) else None
                if uid is not None:
                    self._errors[str(uid)] = reason

    def capture(self, event: CaptureEvent) -> bool:
        """Queue ``event`` in the SDK; False when the SDK refused it (queue full, shut down)."""
        try:
            uid = self.client.capture(
                event.name,
                distinct_id=event.distinct_id,
                properties=dict(event.properties),
                timestamp=event.timestamp,
                uuid=event.uuid,
                groups=dict(event.groups) or None,
            )
        except Exception:  # the SDK swallows its errors unless debug is on; be sure
            log.exception("posthog capture() raised for %s", event.uuid)
            return False
        return uid is not None

    def unfinished(self) -> int | None:
        """Events queued in the SDK and not yet uploaded or reported (None: cannot tell)."""
        lane = getattr(self.client, "_analytics_lane", None)
        queue = getattr(lane, "queue", None)
        count = getattr(queue, "unfinished_tasks", None)
        return count if isinstance(count, int) else None

    def flush(self, timeout: float) -> bool:
        """Ask the SDK to upload what it holds, waiting at most ``timeout`` seconds; return
        whether its queue drained (every event uploaded or reported to ``on_error``)."""
        started = time.monotonic()
        self.client.flush(timeout_seconds=timeout)
        count = self.unfinished()
        if count is not None:
            return count == 0
        return time.monotonic() - started < timeout

    def take_errors(self) -> dict[str, str]:
        """The upload errors reported since the last call, by event uuid."""
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    def shutdown(self, timeout: float) -> bool:
        """Shut the SDK client down, waiting at most ``timeout`` seconds (its own shutdown has
        no time limit, so it runs on a daemon thread); return whether it finished."""
        done = threading.Thread(target=self.client.shutdown, name="posthog-shutdown", daemon=True)
        done.start()
        done.join(max(timeout, 0.0))
        return not done.is_alive()


class PingResult:
    """What :func:`ping` found: ``ok``, the ``error`` if not, and how long it took."""

    def __init__(self, ok: bool, error: str | None, seconds: float, uuid: str) -> None:
        self.ok = ok
        self.error = error
        self.seconds = seconds
        self.uuid = uuid

    def to_json_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "ok": self.ok,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "uuid": self.uuid,
        }


def ping(settings: PostHogSettings, timeout: float = 10.0) -> PingResult:
    """Send one ``{prefix}.ping`` event through the SDK and wait for the upload's outcome.

    The event is real: it appears in the project (distinct id ``tsmeter:ping``, no person
    profile). Example: ``ping(PostHogSettings.from_env()).ok``.
    """
    started = time.monotonic()
    now = datetime.now(UTC)
    name = settings.event_name("ping")
    event = CaptureEvent(
        name=name,
        uuid=event_uuid(name, f"{socket.gethostname()}:{time.time_ns()}"),
        distinct_id="tsmeter:ping",
        timestamp=now,
        properties={"$process_person_profile": False, "hostname": socket.gethostname()},
        kind="ping",
    )
    quick = replace(settings, sdk_retries=0)
    sdk = SdkClient(quick)
    try:
        if not sdk.capture(event):
            return PingResult(False, "the PostHog SDK refused the event", 0.0, event.uuid)
        drained = sdk.flush(timeout)
        error = sdk.take_errors().get(event.uuid)
        if error is None and not drained:
            error = f"no answer within {timeout:g} s"
        return PingResult(error is None, error, time.monotonic() - started, event.uuid)
    finally:
        sdk.shutdown(1.0)
