"""The commands that read: validate, plan, hcl, schema, lock, ci matrix, diff and update."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from multibake.cli import options
from multibake.cli.options import (
    BakeFormat,
    ConfigOpt,
    MatrixFormat,
    RegistryOpt,
    Selectors,
)
from multibake.config.settings import DEFAULT_CONFIG
from multibake.errors import UsageError
from multibake.kinds import Split

if TYPE_CHECKING:
    from multibake.compare.changes import DiffOptions


def validate(config: ConfigOpt = DEFAULT_CONFIG, registry: RegistryOpt = None) -> None:
    """Check platforms.yaml and the files it names; exit 0 when good, 2 with the first problem."""
    from multibake.release.signing import signers

    loaded, p = options.load_plan(config, registry, None)
    signed = signers(loaded)  # the key files sign: names exist
    more = f", {len(signed)} signed families" if signed else ""
    typer.echo(f"{config}: OK ({len(p.families)} families, {len(p.cells)} cells{more})")


def plan_cmd(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (shape in the README).")] = False,
) -> None:
    """Show the expanded matrix: one row per cell, with the base image each platform builds on."""
    from multibake.cli import report
    from multibake.preflight import bases

    loaded, p = options.load_plan(config, registry, selectors)
    found = bases.plan_bases(p, loaded.root, strict=False)  # no registry read: plan stays offline
    if as_json:
        typer.echo(json.dumps(report.plan_json(p, found), indent=2))
    else:
        typer.echo(report.plan_table(p, found), nl=False)


def hcl(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="File to write; '-' for stdout. [default: docker-bake.hcl]"),
    ] = None,
    fmt: Annotated[BakeFormat, typer.Option("--format", help="Bake file format.")] = BakeFormat.HCL,
) -> None:
    """Write the docker-bake file for the plan (paths are relative to platforms.yaml's directory)."""
    from multibake.bake import hcl as render

    loaded, p = options.load_plan(config, registry, selectors)
    text = render.render_hcl(p, Path(loaded.file).name) if fmt is BakeFormat.HCL else render.render_json(p)
    if output == "-":
        typer.echo(text, nl=False)
        return
    # beside platforms.yaml by default: the file's context paths are relative to that directory
    dest = Path(output) if output else Path(loaded.file).parent / f"docker-bake.{fmt.value}"
    dest.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {dest} ({len(p.cells)} targets)", err=True)


def schema() -> None:
    """Print the JSON Schema of platforms.yaml (for editors' YAML language servers)."""
    from multibake.config.schema import Config

    doc = Config.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "multibake platforms.yaml"
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def lock(
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The lock file to write.")] = Path(
        "multibake.lock.json"
    ),
) -> None:
    """Resolve a release once (creation time, revision, the plan) for every shard to share."""
    from multibake.release import shards

    release = shards.resolve(config, registry, None, check_files=True)
    written = shards.lock_file(release.plan, release.meta, str(config))
    shards.write_lock(written, output)
    typer.echo(f"wrote {output} (plan {written.plan[:19]}…, created {written.meta.created})", err=True)


def ci_matrix(
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    fmt: Annotated[MatrixFormat, typer.Option("--format", help="The CI's matrix syntax.")] = MatrixFormat.JSON,
    split: Annotated[Split, typer.Option("--split", help="How to divide the release.")] = Split.PLATFORM,
) -> None:
    """Print the shards of a release for the CI's own matrix feature (one job per shard)."""
    from multibake.release import shards

    _, p = options.load_plan(config, registry, None)  # a broken checkout must not fan out: validate's checks
    typer.echo(shards.matrix(shards.fan_out(p, split), fmt.value))


def diff_cmd(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Another registry namespace holding the same repositories (e.g. registry.example.com/prod).",
        ),
    ] = None,
    previous: Annotated[
        bool, typer.Option("--previous", help="The last release against what its tags pointed at before it.")
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Show unchanged tags too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON (shape in the README).")] = (
        False
    ),
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 1 when something differs (like git diff --exit-code).")
    ] = False,
    max_growth: Annotated[
        str | None,
        typer.Option(
            "--max-growth",
            help="Exit 1 when a platform image grew by more than this (10%, 50MB); beats limits.max_growth.",
        ),
    ] = None,
) -> int:
    """Compare published tags with what the registry held before: sizes, layers, bases, new and removed tags.

    Without --against or --previous: --previous when a release is recorded in .multibake/releases/.
    """
    from multibake.compare import changes

    opts = changes.DiffOptions(
        config=config, registry=registry, selectors=tuple(selectors or ()), against=against, previous=previous
    )
    return _diff(opts, show_all=show_all, as_json=as_json, exit_code=exit_code, max_growth=max_growth)


def _diff(opts: DiffOptions, *, show_all: bool, as_json: bool, exit_code: bool, max_growth: str | None) -> int:
    from multibake.cli import gcview, report
    from multibake.compare import changes, growth
    from multibake.config.load import load
    from multibake.config.upkeep import parse_limit

    text = max_growth or load(opts.config, opts.registry).config.limits.max_growth
    try:
        limit = parse_limit(text) if text else None
    except ValueError as exc:
        raise UsageError(f"--max-growth: {exc}") from None
    found = changes.diff(opts, options.tools())
    breaches = growth.grown(found, limit) if limit is not None else []
    if as_json:
        doc = report.diff_json(found, show_all)
        if limit is not None:
            doc["gate"] = {"max_growth": limit.text, "breaches": [gcview.breach_json(b) for b in breaches]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(report.diff_table(found, show_all), nl=False)
    for breach in breaches:
        typer.echo(f"multibake: size gate: {breach.describe()}", err=True)
    return 1 if breaches or (exit_code and found.changed) else 0


def update(
    config: ConfigOpt = DEFAULT_CONFIG,
    write: Annotated[
        bool, typer.Option("--write", help="Apply the change to the file (comments, order, quotes kept).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the proposal as JSON (shape in the README).")] = False,
) -> int:
    """Propose newer matrix values from registry tags (update: rules); exit 1 when there is a change to make."""
    import time

    from multibake.cli import report
    from multibake.compare import update as updater

    outcome = updater.run(
        config, write=write, api=options.registry_api(), sleep=time.sleep, echo=lambda line: typer.echo(line, err=True)
    )
    for warning in outcome.stale:
        typer.echo(f"multibake: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(report.update_json(outcome), indent=2))
    else:
        typer.echo(report.update_text(outcome), nl=False)
    return outcome.exit_code
