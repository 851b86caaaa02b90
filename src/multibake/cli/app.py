"""The command line: a thin Typer layer over load → plan → render → execute → publish → verify.

Commands parse options, call the pipeline and print; errors are caught once in ``run``.
Heavy modules (python-on-whales, rich) are imported inside the commands that need them, so
``--help``, ``plan`` and ``hcl`` start fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multibake import __version__
from multibake.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, MultibakeError, Terminated, UsageError
from multibake.kinds import Progress, Split

if TYPE_CHECKING:
    from multibake.registry.client import Api
    from multibake.release.pipeline import Built, Checked, Tools

app = typer.Typer(
    name="multibake",
    help="Build families of multi-arch container images from platforms.yaml with docker buildx bake.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: keeps rich (and its start-up cost) out of --help
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="MULTIBAKE_CONFIG",
        help="The matrix file.",
        show_default=True,
    ),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", help="Registry/namespace for images; beats $MULTIBAKE_REGISTRY and the file."),
]
Selectors = Annotated[
    list[str] | None,
    typer.Argument(
        help="Families, targets, globs on target names, optionally ':axis=value,...' (e.g. nodejs:node=22).",
        show_default=False,
    ),
]
DEFAULT_CONFIG = Path("platforms.yaml")
LockOpt = Annotated[
    Path | None,
    typer.Option("--lock", help="A lock file from `multibake lock`: every shard of a release uses the same one."),
]


class BakeFormat(StrEnum):
    HCL = "hcl"
    JSON = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"multibake {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and docker commands.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    global _debug
    _debug = debug or os.environ.get("MULTIBAKE_DEBUG") == "1"


def load_plan(
    config: Path,
    registry: str | None,
    selectors: list[str] | None,
    check_files: bool = True,
) -> Any:
    """load → plan → select, shared by every command that needs a plan."""
    from multibake.plan import planner
    from multibake.release import shards

    release = shards.resolve(config, registry, None, check_files)
    return release.loaded, planner.select(release.plan, selectors or [])


@app.command()
def validate(config: ConfigOpt = DEFAULT_CONFIG, registry: RegistryOpt = None) -> None:
    """Check platforms.yaml and the files it names; exit 0 when good, 2 with the first problem."""
    _, p = load_plan(config, registry, None)
    typer.echo(f"{config}: OK ({len(p.families)} families, {len(p.cells)} cells)")


@app.command("plan")
def plan_cmd(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (shape in the README).")] = False,
) -> None:
    """Show the expanded matrix: one row per cell, with the base image each platform builds on."""
    from multibake.cli import report
    from multibake.preflight import bases

    loaded, p = load_plan(config, registry, selectors)
    found = bases.plan_bases(p, loaded.root, strict=False)  # no registry read: plan stays offline
    if as_json:
        typer.echo(json.dumps(report.plan_json(p, found), indent=2))
    else:
        typer.echo(report.plan_table(p, found), nl=False)


@app.command()
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

    loaded, p = load_plan(config, registry, selectors)
    text = render.render_hcl(p, Path(loaded.file).name) if fmt is BakeFormat.HCL else render.render_json(p)
    if output == "-":
        typer.echo(text, nl=False)
        return
    # beside platforms.yaml by default: the file's context paths are relative to that directory
    dest = Path(output) if output else Path(loaded.file).parent / f"docker-bake.{fmt.value}"
    dest.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {dest} ({len(p.cells)} targets)", err=True)


@app.command()
def schema() -> None:
    """Print the JSON Schema of platforms.yaml (for editors' YAML language servers)."""
    from multibake.config.schema import Config

    doc = Config.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "multibake platforms.yaml"
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def _tools(progress: Progress = Progress.PLAIN) -> Tools:
    """What the release pipeline talks to: docker (made when needed), the registry, stderr."""
    from multibake import docker as door
    from multibake.bake import display
    from multibake.release import pipeline as release

    out = display.output(progress)
    return release.Tools(
        docker=lambda: door.client(debug=_debug),
        echo=out.echo,
        watch=out.watch,
        say=lambda line: typer.echo(line, err=True),
    )


@app.command()
def build(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    platform: Annotated[
        list[str] | None, typer.Option("--platform", help="Build only these platforms (repeatable).")
    ] = None,
    push: Annotated[bool, typer.Option("--push", help="Push multi-arch images to the registry.")] = False,
    load: Annotated[bool, typer.Option("--load", help="Load images into the local image store.")] = False,
    output: Annotated[str | None, typer.Option("--output", help="A buildx output spec for every cell.")] = None,
    builder: Annotated[str | None, typer.Option("--builder", help="The buildx builder to use.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a target value: target.key=value (repeatable).")
    ] = None,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Build every other cell when one fails.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the bake file and command, build nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (shape in the README).")] = False,
    progress: Annotated[
        Progress,
        typer.Option(
            "--progress",
            help="tty: a live table of cells and platforms; plain: buildx's lines, and every "
            "$MULTIBAKE_PROGRESS_INTERVAL seconds (30) what still runs; quiet: multibake's lines and errors only; "
            "auto: tty on a terminal.",
        ),
    ] = Progress.AUTO,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard", help="Build one slice of a release (platform=P, family=NAME, cell=TARGET), staged only."
        ),
    ] = None,
    lock: LockOpt = None,
    result_dir: Annotated[Path, typer.Option("--result-dir", help="Where a shard writes its result file.")] = Path(
        ".multibake/shards"
    ),
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip cells whose published image has the same build id.")
    ] = False,
    no_preflight: Annotated[
        bool,
        typer.Option("--no-preflight", help="Do not check in the registry that base images publish every platform."),
    ] = False,
    attest: Annotated[
        list[str] | None,
        typer.Option(
            "--attest",
            help="provenance=min|max|off: the provenance attestation of every image; beats attest: in platforms.yaml.",
        ),
    ] = None,
) -> int:
    """Build the plan with docker buildx bake: all platforms, cached, pushes retried.

    Registry credentials: docker's own (docker login, credHelpers, credsStore), or, for the host of the
    release's registry, $MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD (docker is logged in
    with them for this run only, the password on its stdin).
    """
    from multibake.release import pipeline as release

    opts = release.BuildOptions(
        config=config,
        registry=registry,
        selectors=tuple(selectors or ()),
        platforms=tuple(platform or ()),
        push=push,
        load=load,
        output=output,
        builder=builder,
        sets=tuple(set_ or ()),
        keep_going=keep_going,
        dry_run=dry_run,
        shard=shard,
        lock=lock,
        result_dir=result_dir,
        skip_existing=skip_existing,
        preflight=not no_preflight,
        attest=tuple(attest or ()),
    )
    return _render_build(release.build(opts, _tools(progress)), as_json)


def _render_build(built: Built, as_json: bool) -> int:
    from multibake.cli import report

    if built.dry_run is not None:
        typer.echo(built.dry_run.bake_file)
        for line in built.dry_run.builder_commands:  # what a build would run first, on a builder that does not exist
            typer.echo(f"# {line}")
        typer.echo(f"# {built.dry_run.command}")
    elif built.report is not None and as_json:
        typer.echo(json.dumps(report.build_json(built.report), indent=2))
    elif built.report is not None:
        typer.echo(report.build_table(built.report), nl=False)
    return 0 if built.ok else 1


@app.command()
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


class MatrixFormat(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    JSON = "json"


ci = typer.Typer(help="Helpers for CI systems.", no_args_is_help=True)
app.add_typer(ci, name="ci")


@ci.command("matrix")
def ci_matrix(
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    fmt: Annotated[MatrixFormat, typer.Option("--format", help="The CI's matrix syntax.")] = MatrixFormat.JSON,
    split: Annotated[Split, typer.Option("--split", help="How to divide the release.")] = Split.PLATFORM,
) -> None:
    """Print the shards of a release for the CI's own matrix feature (one job per shard)."""
    from multibake.release import shards

    _, p = load_plan(config, registry, None)  # a broken checkout must not fan out: validate's checks
    typer.echo(shards.matrix(shards.fan_out(p, split), fmt.value))


@app.command("publish")
def publish_cmd(
    from_: Annotated[list[Path], typer.Option("--from", help="Shard result files or directories (repeatable).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    lock: LockOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verify report as JSON.")] = False,
) -> int:
    """Merge shard results into manifest lists and public tags, all or nothing, then verify.

    Registry credentials: as for build ($MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD for the
    release's registry host, else docker's own).
    """
    from multibake.release import pipeline as release

    checked = release.publish_shards(config, registry, lock, tuple(from_), _tools())
    return _render_checks(checked, as_json)


@app.command()
def verify(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (shape in the README).")] = False,
) -> int:
    """Read the registry and check every planned tag; exit 1 on any mismatch.

    Registry credentials: as for build ($MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD for the
    release's registry host, else docker's own).
    """
    from multibake.release import pipeline as release

    checked = release.verify(config, registry, tuple(selectors or ()), _tools())
    return _render_checks(checked, as_json)


@app.command("diff")
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
) -> int:
    """Compare published tags with what the registry held before: sizes, layers, bases, new and removed tags.

    Without --against or --previous: --previous when a release is recorded in .multibake/releases/.
    """
    from multibake.cli import report
    from multibake.compare import changes

    found = changes.diff(
        changes.DiffOptions(
            config=config,
            registry=registry,
            selectors=tuple(selectors or ()),
            against=against,
            previous=previous,
        ),
        _tools(),
    )
    if as_json:
        typer.echo(json.dumps(report.diff_json(found, show_all), indent=2))
    else:
        typer.echo(report.diff_table(found, show_all), nl=False)
    return 1 if exit_code and found.changed else 0


def _render_checks(checked: Checked, as_json: bool) -> int:
    from multibake.cli import report

    if checked.checks is not None and as_json:
        typer.echo(json.dumps(report.verify_json(list(checked.checks)), indent=2))
    elif checked.checks is not None:
        typer.echo(report.verify_table(list(checked.checks)), nl=False)
    return 0 if checked.ok else 1


def _registry_api() -> Api:
    """The registry API commands read through (tests put an in-memory registry here)."""
    from multibake.registry.client import Http

    return Http()


@app.command()
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
        config, write=write, api=_registry_api(), sleep=time.sleep, echo=lambda line: typer.echo(line, err=True)
    )
    for warning in outcome.stale:
        typer.echo(f"multibake: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(report.update_json(outcome), indent=2))
    else:
        typer.echo(report.update_text(outcome), nl=False)
    return outcome.exit_code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; every error is turned into a message here, once."""
    try:
        result = app(args=argv, prog_name="multibake", standalone_mode=False)
    except MultibakeError as exc:
        if _debug:
            traceback.print_exc()
        typer.echo(f"multibake: error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # Typer's own usage errors (unknown option, bad value)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"multibake: error: {exc.format_message()}", err=True)
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("multibake: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        typer.echo("multibake: terminated", err=True)
        return EXIT_TERMINATED
    code = result if isinstance(result, int) else 0
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into that exit code, quietly
        typer.echo("multibake: interrupted", err=True)
    return code


def _terminate(signum: int, frame: object) -> None:
    from multibake.bake.invocation import interrupt_children

    interrupt_children()  # a bake run of ours stops too, as on Ctrl-C
    raise Terminated


def main() -> None:
    # SIGTERM unwinds like Ctrl-C: a private docker config holding a login is removed, no tag moves after it
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(run())


__all__ = ["UsageError", "app", "main", "run"]
