"""The commands for living with a registry of releases: gc and report."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from multibake.cli import options
from multibake.cli.options import ConfigOpt, RegistryOpt, Selectors
from multibake.config.settings import DEFAULT_CONFIG


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
