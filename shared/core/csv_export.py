"""CSV files people open in Excel or WPS: UTF-8 with a BOM, CRLF, and no formulas.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is taken as a
formula by spreadsheet programs (CSV injection): a village-chosen ``item_name`` such as
``=HYPERLINK(...)`` would run on the supervisor's PC. Following OWASP's CSV-injection guidance,
such cells get a leading apostrophe, which the spreadsheet shows as text and does not evaluate;
the csv module quotes cells holding separators or quotes. Every CSV export goes through
:func:`to_csv`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """One cell as text that no spreadsheet evaluates (``None`` is an empty cell)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(rows: Iterable[Iterable[object]]) -> bytes:
    """UTF-8 CSV with a BOM (so Excel opens the Chinese correctly), CRLF line ends, safe cells."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows([safe_cell(v) for v in row] for row in rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")
