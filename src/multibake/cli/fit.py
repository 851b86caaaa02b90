"""Tables that fit the terminal: columns are dropped in a stated order, then the widest is cut.

Only where the width is known: ``$COLUMNS``, else the terminal stdout is. Piped output (CI logs,
files, other programs) keeps every column whole, and ``--json`` always has everything.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence

GAP = 2  # spaces between columns
MIN_COLUMN = 8  # a cut column keeps at least this much


def terminal_width(environ: Mapping[str, str] = os.environ) -> int | None:
    """The width to fit: $COLUMNS, else the terminal's when stdout is one, else None (no limit)."""
    given = environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def total(ws: Sequence[int]) -> int:
    return sum(ws) + GAP * max(0, len(ws) - 1)


def fit(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None, drop: Sequence[str] = ()
) -> tuple[list[str], list[list[str]], list[str]]:
    """``headers`` and ``rows`` narrowed to ``width``: the ``drop`` columns left out in that order until the
    table fits, then the widest remaining column cut with ``…``. Also the names of the columns left out."""
    keep = list(range(len(headers)))
    dropped: list[str] = []
    for name in drop:
        if width is None or total(widths([headers[i] for i in keep], [[r[i] for i in keep] for r in rows])) <= width:
            break
        if name in headers and headers.index(name) in keep and len(keep) > 1:
            keep.remove(headers.index(name))
            dropped.append(name)
    heads = [headers[i] for i in keep]
    body = [[r[i] for i in keep] for r in rows]
    if width is None:
        return heads, body, dropped
    ws = widths(heads, body)
    while total(ws) > width and max(ws) > MIN_COLUMN:
        widest = ws.index(max(ws))
        ws[widest] = max(MIN_COLUMN, ws[widest] - (total(ws) - width))
    cut = [[_cut(v, w) for v, w in zip(r, ws, strict=True)] for r in body]
    return [_cut(h, w) for h, w in zip(heads, ws, strict=True)], cut, dropped


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: max(0, width - 1)] + "…"
