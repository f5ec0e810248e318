"""CSV output a spreadsheet opens as data, never as formulas (CSV injection).

Names, subjects and reply text come from candidates and CRMs. A cell such as
``=CMD|' /C calc'!A0`` or ``@SUM(1+1)`` runs when Excel, LibreOffice or Google Sheets
opens the export, so every text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return gets a leading ``'`` (OWASP's advice): the spreadsheet shows the
text, and a reader of the raw file sees at once what happened. Numbers, booleans and
times are written as they are.

Example::

    writer = SafeCsvWriter(sys.stdout)
    writer.writerow(["name", "note"])
    writer.writerow(["=1+1", 42])      # written as '=1+1,42
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date, datetime, time
from typing import IO, Any

__all__ = ["FORMULA_STARTS", "SafeCsvWriter", "safe_cell"]

#: first characters that make a spreadsheet read a cell as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str | int | float:
    """``value`` as a CSV cell: ``None`` empty, times ISO-8601, formula-like text quoted."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


class SafeCsvWriter:
    """A :func:`csv.writer` whose every cell goes through :func:`safe_cell`."""

    def __init__(self, stream: IO[str], **options: Any) -> None:
        options.setdefault("lineterminator", "\n")
        self._writer = csv.writer(stream, **options)

    def writerow(self, row: Iterable[Any]) -> None:
        """Write one row of neutralised cells."""
        self._writer.writerow([safe_cell(value) for value in row])
