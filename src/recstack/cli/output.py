"""Plain-text tables for the command line's results."""

from __future__ import annotations

import math
from typing import Any


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table: text columns left-aligned, numbers right-aligned (floats: 4 decimals)."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None or _is_number(row[i]) for row in rows)
               for i in range(len(header))]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line([str(h) for h in header]), *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4f}"
    return "-" if value is None else str(value)
