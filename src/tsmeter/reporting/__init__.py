"""The HTML usage report (``tsmeter report``): data gathered through the Meter
(:mod:`tsmeter.reporting.data`), charts drawn by matplotlib (:mod:`tsmeter.reporting.charts`,
the ``report`` extra) and one self-contained page (:mod:`tsmeter.reporting.page`).

Example::

    from tsmeter.reporting import gather, render
    Path("report.html").write_text(render(gather(meter, start, end)), encoding="utf-8")
"""

from tsmeter.reporting.data import Report, gather
from tsmeter.reporting.page import chart_count, render

__all__ = ["Report", "chart_count", "gather", "render"]
