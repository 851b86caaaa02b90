"""The commands for living with a registry of releases: gc and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from multibake.cli import options
from multibake.cli.options import ConfigOpt, RegistryOpt, Selectors
from multibake.config.settings import DEFAULT_CONFIG

if TYPE_CHECKING:
    from multibake.maintain.report import ReportOptions


def gc_cmd(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    apply: Annotated[bool, typer.Option("--apply", help="Delete; without it, print what would go (a dry run).")] = (
        False
    ),
    grace: Annotated[
        str | None,
        typer.Option("--grace", help="Keep staging tags built less than this ago (90s, 30m, 12h, 1d); beats the file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (shape in the README).")] = False,
) -> int:
    """Delete staging leftovers and what retention: no longer keeps, never what a kept tag needs (dry run first).

    Deletes manifests through the registry API; the registry's own garbage collection then frees their blobs.
    """
    from multibake.cli import gcview
    from multibake.maintain import gc

    found = gc.gc(
        gc.GcOptions(config=config, registry=registry, selectors=tuple(selectors or ()), apply=apply, grace=grace),
        options.tools(),
    )
    typer.echo(json.dumps(gcview.gc_json(found), indent=2) if as_json else gcview.gc_table(found), nl=as_json)
    return 0 if found.ok else 1


def report_cmd(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the release page here: one static HTML file, no assets.")
    ] = None,
    markdown: Annotated[
        str | None,
        typer.Option(
            "--markdown", help="Append a Markdown summary to this file ('-': stdout), e.g. $GITHUB_STEP_SUMMARY."
        ),
    ] = None,
    previous: Annotated[
        bool, typer.Option("--previous", help="Show what the last release changed: sizes before and after.")
    ] = False,
) -> int:
    """The release report: families by matrix values by platforms, with status, digest, size, layers, tags, base.

    Without --html or --markdown, the Markdown summary is printed.
    """
    from multibake.maintain.report import ReportOptions

    opts = ReportOptions(config=config, registry=registry, selectors=tuple(selectors or ()), previous=previous)
    return write_report(opts, html_file, markdown if markdown or html_file else "-")


def write_report(opts: ReportOptions, html_file: Path | None, markdown: str | None) -> int:
    """Gather the report and write the page and/or the summary; 0, or 1 when a tag fails verify."""
    from multibake.cli import html
    from multibake.maintain import report

    page = report.gather(opts, options.tools())
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(html.html(page), encoding="utf-8")
        typer.echo(f"multibake: wrote the release report {html_file}", err=True)
    if markdown == "-":
        typer.echo(html.markdown(page), nl=False)
    elif markdown:
        with Path(markdown).open("a", encoding="utf-8") as out:  # GitHub's step summary is appended to
            out.write(html.markdown(page))
    return 0 if page.failed == 0 else 1
