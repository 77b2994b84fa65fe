"""PostHog: the mirror (every record, summary and threshold event sent as an analytics event)
and its settings.

::

    from tsmeter.integrations.posthog import PostHogMirror, PostHogSettings

    # on a meter from tsmeter.connect(..., mirror=False): a meter has one mirror
    mirror = PostHogMirror(PostHogSettings.from_env(), meter)   # off without an API key
    ...
    mirror.status()              # mirrored / retried / failed / pending / dropped
    mirror.shutdown(timeout=10)

The ``posthog`` SDK (the ``posthog`` extra) is imported only when a mirror is enabled.
"""

from tsmeter.integrations.posthog.backfill import BackfillResult, backfill
from tsmeter.integrations.posthog.events import CaptureEvent
from tsmeter.integrations.posthog.job import mirror_job
from tsmeter.integrations.posthog.journal import Journal
from tsmeter.integrations.posthog.mirror import MirrorStatus, PostHogMirror, journal_path_of
from tsmeter.integrations.posthog.sdk import PingResult, ping
from tsmeter.integrations.posthog.settings import PostHogSettings

__all__ = [
    "BackfillResult",
    "CaptureEvent",
    "Journal",
    "MirrorStatus",
    "PingResult",
    "PostHogMirror",
    "PostHogSettings",
    "backfill",
    "journal_path_of",
    "mirror_job",
    "ping",
]
