"""The release report for people: one static HTML page from a Jinja2 template, and a short Markdown summary.

The page carries everything it shows (styles inline; no script, font, image or link to load), so
it works opened from a file or a CI artifact. Values are escaped by the template engine
(autoescape), never glued into markup here.
"""

from __future__ import annotations

from importlib.resources import files

import jinja2

from multibake.maintain.report import Page, PlatformCell
from multibake.release.gate import size_text

TEMPLATE = "templates/report.html.j2"


def _delta(n: int) -> str:
    return ("+" if n > 0 else "-") + size_text(abs(n))


def _short_base(base: str) -> str:
    """A base image without its digest: ``127.0.0.1:5000/x/bb:latest``."""
    return base.partition("@")[0]


def html(page: Page) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(size=size_text, delta=_delta, short_base=_short_base)
    text = files("multibake.cli").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return env.from_string(text).render(page=page)


def _cell_md(cell: PlatformCell | None) -> str:
    if cell is None:
        return "·"
    if cell.status != "ok" or cell.bytes is None:
        return f"**{cell.status}**"
    grew = f" ({_delta(cell.bytes_delta)})" if cell.bytes_delta else ""
    return f"{size_text(cell.bytes)}{grew}" + (" ⚠" if cell.over_gate else "")


def markdown(page: Page) -> str:
    """A few lines for a CI run's summary ($GITHUB_STEP_SUMMARY): counts, then one table per family."""
    lines = [f"### {page.title}", ""]
    counts = f"{page.cells} images: {page.ok} ok" + (f", **{page.failed} failing verify**" if page.failed else "")
    if page.compared_with:
        counts += f"; {page.changed} changed since {page.compared_with}"
    lines += [counts, ""]
    for fam in page.families:
        lines.append(f"| {fam.name} | tags | " + " | ".join(fam.platforms) + " |")
        lines.append("|" + "---|" * (2 + len(fam.platforms)))
        for row in fam.rows:
            name = ", ".join(row.values) or row.target
            cells = " | ".join(_cell_md(c) for c in row.cells)
            lines.append(f"| {name} | {', '.join(row.tags)} | {cells} |")
        lines.append("")
    lines += [f"- {note}" for note in page.notes]
    return "\n".join(lines).rstrip() + "\n"
