"""HTML building blocks of the reports: escaped text, tables, images as data URIs, one page.

Pages are single files: inline CSS, PNGs as ``data:image/png;base64`` URIs, no script and no
link to anything outside the file, so a report opens offline, mails as one attachment and
cannot fetch anything. The layout is one column at most 1200 px wide; wide tables scroll inside
their own box and ``pre`` blocks wrap, so a page never scrolls sideways in a 1280-px window.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1f24;
 background:#f6f7f9;margin:0}
main{max-width:1240px;margin:0 auto;padding:20px}
h1{font-size:24px;margin:4px 0 4px}h2{font-size:19px;margin:0 0 10px}h3{font-size:16px;margin:14px 0 6px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 18px;margin:14px 0}
.sub{color:#57606a;margin:0 0 6px}.note{color:#57606a;font-size:13px;margin:6px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde1e6;border-radius:6px;padding:8px 12px;min-width:130px;background:#fafbfc}
.card b{display:block;font-size:18px}.card span{color:#57606a;font-size:12px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 10px;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}th:first-child,td:first-child{text-align:left}
td.text,th.text{text-align:left;white-space:normal}
.pos{color:#1a7f37}.neg{color:#cf222e}.diff{background:#fff3c4}
img{max-width:100%;height:auto;display:block;margin:6px 0}
pre{background:#f6f8fa;border:1px solid #e4e7eb;border-radius:6px;padding:10px;font-size:12px;
 white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto}
details summary{cursor:pointer;color:#0969da}
ol{margin:4px 0;padding-left:22px}li.hit{font-weight:600;color:#1a7f37}
.two{display:grid;grid-template-columns:1fr 1fr;gap:16px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A metric for a table: 4 significant decimals, integers with separators, "-" for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e5 else f"{value:,.0f}"
    return esc(value)


def signed(value: float | None, digits: int = 4) -> str:
    """A difference, coloured: green when positive, red when negative."""
    if value is None or not math.isfinite(value):
        return "-"
    cls = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<span class="{cls}">{value:+.{digits}f}</span>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: Sequence[int] = (),
          row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are escaped unless they are :class:`Raw`."""
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="text"' if i in text_columns else ""
        body = value.html if isinstance(value, Raw) else number(value) if tag == "td" else esc(value)
        return f"<{tag}{cls}>{body}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{cls}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


class Raw:
    """Markup that :func:`table` puts in a cell as it is (already escaped by whoever made it)."""

    def __init__(self, markup: str):
        self.html = markup


def image(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def section(title: str, body: str, anchor: str = "") -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>"


def cards(items: Sequence[tuple[str, Any]]) -> str:
    return '<div class="grid">' + "".join(f'<div class="card"><b>{number(v) if not isinstance(v, str) else esc(v)}'
                                          f'</b><span>{esc(k)}</span></div>' for k, v in items) + "</div>"


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>{''.join(sections)}</main></body></html>\n")


__all__ = ["CSS", "Raw", "cards", "esc", "image", "number", "page", "section", "signed", "table"]
