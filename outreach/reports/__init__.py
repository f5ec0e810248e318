"""Reports: KPIs, SLA, A/B results and ratings from the ledger and events.

:func:`build_report` returns the report object (the JSON contract of DESIGN.md plus the
extra keys of docs/report-plan.md §11); ``render_table``, ``render_csv`` and
``render_html`` turn it into the ``--format`` outputs, and ``schema/report.schema.json``
describes it.
"""

from outreach.reports.breakdown import BY_KEYS, parse_by
from outreach.reports.model import build_report
from outreach.reports.window import Window, parse_time, resolve_window

__all__ = ["BY_KEYS", "Window", "build_report", "parse_by", "parse_time", "resolve_window"]
