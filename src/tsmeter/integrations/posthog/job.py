"""The ``posthog-flush`` job: a scheduler-driven flush of a running mirror, with its counts.

Register it next to the default jobs where a mirror runs (the scheduler's process)::

    mirror = PostHogMirror(PostHogSettings.from_env(), meter)
    registry.add(mirror_job(mirror))
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from tsmeter.integrations.posthog.mirror import PostHogMirror
from tsmeter.jobs.registry import Counts, Every, Job

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["JOB_NAME", "mirror_job"]

JOB_NAME = "posthog-flush"


def mirror_job(
    mirror: PostHogMirror,
    every: timedelta = timedelta(seconds=30),
    timeout: float = 10.0,
) -> Job:
    """A job that flushes ``mirror`` (at most ``timeout`` seconds) every ``every`` and returns
    its counts (``mirrored``, ``retried``, ``failed``, ``pending``, ``dropped``, ...).

    The mirror sends on its own thread anyway; the job bounds how long anything waits and
    puts the counts in the scheduler's log line. Example: ``registry.add(mirror_job(mirror))``.
    """

    def run(meter: Meter) -> Counts:
        mirror.flush(timeout)
        status = mirror.status()
        return {
            "mirrored": status.mirrored,
            "retried": status.retried,
            "failed": status.failed,
            "pending": status.pending,
            "dropped": status.dropped,
            "rejected": status.rejected,
        }

    return Job(
        JOB_NAME,
        run,
        Every(every),
        "Send buffered usage events to PostHog now and report the mirror's counts.",
    )
