"""``--format csv``: one row per group, the totals first as group ``all``.

Cells go through :mod:`outreach.csvsafe` (group values such as tags and job titles come
from CRMs: a value starting with ``=`` must open as text in a spreadsheet).
"""

from __future__ import annotations

from typing import IO, Any

from outreach.csvsafe import SafeCsvWriter
from outreach.reports.model import CONTRACT_TOTALS

__all__ = ["csv_columns", "write_csv"]

_EXTRA = (
    "people_replied",
    "people_engaged",
    "people_converted",
    "conversion_people",
    "people_opted_out",
    "open_events",
)


def csv_columns(report: dict[str, Any]) -> list[str]:
    """Header: ``group``, one column per ``--by`` key, the figures, ``small``."""
    figures = []
    for key in (*CONTRACT_TOTALS, *_EXTRA):
        if key == "time_to_response_hours":
            figures += ["time_to_response_median_hours", "time_to_response_p90_hours"]
        else:
            figures.append(key)
    return ["group", *report["by"], *figures, "small"]


def _row(report: dict[str, Any], group: str, by: dict[str, str], figures: dict, small) -> list:
    cells: list[Any] = [group, *(by.get(key, "") for key in report["by"])]
    for key in (*CONTRACT_TOTALS, *_EXTRA):
        if key == "time_to_response_hours":
            ttr = figures[key]
            cells += [ttr["median"], ttr["p90"]]
        else:
            cells.append(figures[key])
    cells.append(small)
    return cells


def write_csv(report: dict[str, Any], stream: IO[str]) -> None:
    """Write the totals (group ``all``) and every group of ``report`` as CSV to ``stream``."""
    writer = SafeCsvWriter(stream)
    writer.writerow(csv_columns(report))
    writer.writerow(_row(report, "all", {}, report["totals"], ""))
    for group in report["groups"]:
        label = ";".join(f"{key}={value}" for key, value in group["by"].items())
        writer.writerow(_row(report, label, group["by"], group, group["small"]))
