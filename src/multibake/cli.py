"""The command line: a thin Typer layer over load → plan → render → execute → publish → verify.

Commands parse options, call the pipeline and print; errors are caught once in ``run``.
Heavy modules (python-on-whales, rich) are imported inside the commands that need them, so
``--help``, ``plan`` and ``hcl`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from multibake import __version__
from multibake.errors import EXIT_INTERRUPTED, EXIT_USAGE, MultibakeError, UsageError

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


def _load(config: Path, registry: str | None, lock: Path | None, check_files: bool) -> tuple[Any, Any, Any]:
    """load → plan: the loaded config, the release's Meta and the full plan, each resolved once.

    With a lock file, its creation time and revision are used, and the plan must be the one it locked.
    """
    from multibake import config as cfg
    from multibake import paths, provenance, shards
    from multibake import plan as planner

    loaded = cfg.load(config, registry)
    if lock is not None:
        meta, locked = shards.read_lock(lock)
    else:
        meta, locked = provenance.resolve(loaded.root), None
    full = planner.plan(loaded, meta)
    if locked is not None and shards.plan_digest(full) != locked:
        raise UsageError(f"{lock}: {config} or the checkout changed since this lock was written; write a new one")
    if check_files:
        paths.check_files(loaded, full)
    return loaded, meta, full


def load_plan(
    config: Path,
    registry: str | None,
    selectors: list[str] | None,
    check_files: bool = True,
    lock: Path | None = None,
) -> Any:
    """load → plan → select, shared by every command that needs a plan."""
    from multibake import plan as planner

    loaded, _, full = _load(config, registry, lock, check_files)
    return loaded, planner.select(full, selectors or [])


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
    """Show the expanded matrix: one row per cell."""
    from multibake import report

    _, p = load_plan(config, registry, selectors)
    if as_json:
        typer.echo(json.dumps(report.plan_json(p), indent=2))
    else:
        typer.echo(report.plan_table(p), nl=False)


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
    from multibake import hcl as render

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
    from multibake.config import Config

    doc = Config.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "multibake platforms.yaml"
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


class Progress(StrEnum):
    AUTO = "auto"
    PLAIN = "plain"
    TTY = "tty"


def _echo_for(progress: Progress, quiet: bool) -> Any:
    """Where buildx's lines go: stderr, condensed through rich on a terminal, verbatim otherwise."""
    tty = progress is Progress.TTY or (progress is Progress.AUTO and sys.stderr.isatty())
    if quiet:
        return lambda line: None
    if not tty:
        return lambda line: print(line, file=sys.stderr, flush=True)
    from rich.console import Console

    console = Console(stderr=True, highlight=False)

    def echo(line: str) -> None:
        # on a terminal show step headers, errors and multibake's own lines; the full log is in CI mode
        if line.startswith("multibake:") or " ERROR" in line or line.startswith("ERROR"):
            console.print(line, style="bold red" if "ERROR" in line else "yellow", markup=False)
        elif line.startswith("#") and "[" in line:
            console.print(line, style="dim", markup=False)

    return echo


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
    progress: Annotated[Progress, typer.Option("--progress", help="How to show buildx output.")] = Progress.AUTO,
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
) -> int:
    """Build the plan with docker buildx bake: all platforms, cached, pushes retried."""
    from multibake import bake, publish, report
    from multibake import hcl as render
    from multibake import plan as planner
    from multibake import platforms as arch

    modes = [m for m, on in ((bake.Mode.PUSH, push), (bake.Mode.LOAD, load), (bake.Mode.OUTPUT, output)) if on]
    if len(modes) > 1:
        raise UsageError("choose one of --push, --load and --output")
    mode = modes[0] if modes else bake.Mode.CACHE
    sets: dict[str, str] = {}
    for item in set_ or []:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise UsageError(f"--set {item!r}: expected target.key=value")
        sets[key] = value
    loaded, meta, full = _load(config, registry, lock, check_files=True)
    p = planner.select(full, selectors or [])
    from multibake import buildid, shards

    # build ids describe the release, not a shard of it or a --platform subset: computed from the full plan
    ids = buildid.compute(p, loaded.root)
    digest = shards.plan_digest(full)
    the_shard = None
    members: set[str] = set()
    if shard is not None:
        if mode is not bake.Mode.PUSH:
            raise UsageError("--shard stages a slice of a release in the registry: add --push")
        the_shard = shards.parse_shard(shard, p)
        if the_shard.kind == "platform":
            # every cell built one target per platform, this platform only; publish merges them
            p = planner.select(planner.plan(loaded, meta, split_all=True), selectors or [])
            p = planner.restrict(p, [the_shard.value])
        else:
            p = planner.select(p, [the_shard.value])
        members = shards.shard_members(the_shard, p)
    if platform:
        wanted = []
        for spelling in platform:
            try:
                wanted.append(arch.normalize(spelling))
            except ValueError as exc:
                raise UsageError(f"--platform {spelling}: {exc}") from None
        if mode is bake.Mode.PUSH:
            raise UsageError(
                "--platform with --push would publish multi-arch tags missing platforms; "
                "build all planned platforms, shard the release (--shard platform=P), or build without --push"
            )
        p = planner.restrict(p, wanted)
        if not p.cells:
            raise UsageError(f"no selected cell is planned for {', '.join(wanted)}")
    retry = loaded.config.retry
    policy = bake.RetryPolicy(attempts=retry.attempts, initial_delay=retry.initial_delay, max_delay=retry.max_delay)
    echo = _echo_for(progress, quiet=False)
    p = planner.with_labels(p, {t: (buildid.LABEL, i) for t, i in ids.items()})
    up_to_date: dict[str, str] = {}
    skipped_cells: list[Any] = []
    if skip_existing:
        up_to_date = publish.already_published(p, ids, policy=policy, echo=echo)
        skipped_cells = [c for c in p.cells if c.target in up_to_date]
        p = planner.without(p, up_to_date)
        for c in skipped_cells:
            typer.echo(f"multibake: {c.target} is up to date ({up_to_date[c.target]})", err=True)
    # one work directory per shard: shards of a release may run side by side in one checkout
    workdir = loaded.root / ".multibake" / "build" / (the_shard.id if the_shard else "all")
    workdir.mkdir(parents=True, exist_ok=True)
    bake_file = workdir / "docker-bake.hcl"
    bake_file.write_text(render.render_hcl(p, Path(loaded.file).name, staged=mode is bake.Mode.PUSH), encoding="utf-8")
    req = bake.Request(
        bake_file=bake_file,
        root=loaded.root,
        mode=mode,
        output=output,
        sets=sets,
        builder=builder,
        keep_going=keep_going,
    )
    if dry_run:
        typer.echo(bake_file.read_text(encoding="utf-8"))
        argv = bake.command_line(p, req, bake.bake_targets(p))
        typer.echo(f"# cd {loaded.root} && " + " ".join(argv))
        return 0
    docker = bake.docker_client()
    info = bake.inspect_builder(docker, builder)
    typer.echo(
        f"buildx {info.buildx_version}, builder {info.name} ({info.driver}), platforms: {', '.join(info.platforms)}",
        err=True,
    )
    bake.check_builder(info, p)
    result = bake.execute(docker, p, req, builder=info, policy=policy, echo=echo, workdir=workdir)
    result.cells[:0] = [bake.up_to_date(cell, up_to_date[cell.target]) for cell in skipped_cells]
    ok = result.ok
    if the_shard is not None:
        cells, failed = publish.staged_refs(p, members, result, policy=policy, echo=echo)
        result_dir.mkdir(parents=True, exist_ok=True)
        out_file = result_dir / f"{the_shard.id}.json"
        out_file.write_text(json.dumps(shards.result_doc(the_shard, digest, cells, failed), indent=2) + "\n")
        typer.echo(f"multibake: shard {the_shard}: {len(cells)} cells staged, result in {out_file}", err=True)
        for cell in result.cells:
            if cell.status == "built":
                cell.status = "staged"
        ok = not failed  # a shard's cells end "staged": publish --from makes them public
    elif mode is bake.Mode.PUSH:
        sources = publish.local_sources(p, result)
        published = publish.promote(docker, p, sources, policy=policy, echo=echo, partial=keep_going)
        promoted = planner.select_targets(p, published.promoted)
        checks = publish.verify(promoted, policy, echo)
        indexes = {check.ref: check for check in checks if check.kind == "index"}
        for cell in result.cells:
            if cell.target in published.promoted:
                cell.status = "published"
                if (first := indexes.get(cell.tags[0])) is not None:
                    cell.digest, cell.platform_digests = first.digest, dict(first.platforms)
            elif cell.status == "built":
                cell.status, cell.error = "staged", published.held_back.get(cell.target)
        bad = [check for check in checks if not check.ok]
        for check in bad:
            typer.echo(f"multibake: verify: {check.ref}: {check.problem}", err=True)
        ok = ok and not bad
    if as_json:
        typer.echo(json.dumps(report.build_json(result), indent=2))
    else:
        typer.echo(report.build_table(result), nl=False)
    return 0 if ok else 1


@app.command()
def lock(
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The lock file to write.")] = Path(
        "multibake.lock.json"
    ),
) -> None:
    """Resolve a release once (creation time, revision, the plan) for every shard to share."""
    from multibake import shards

    _, meta, full = _load(config, registry, None, check_files=True)
    doc = shards.lock_doc(full, meta, str(config))
    output.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote {output} (plan {doc['plan'][:19]}…, created {doc['meta']['created']})", err=True)


class MatrixFormat(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    JSON = "json"


class Split(StrEnum):
    PLATFORM = "platform"
    FAMILY = "family"
    CELL = "cell"


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
    from multibake import shards

    _, p = load_plan(config, registry, None)  # a broken checkout must not fan out: validate's checks
    typer.echo(shards.matrix(shards.fan_out(p, split.value), fmt.value))


@app.command("publish")
def publish_cmd(
    from_: Annotated[list[Path], typer.Option("--from", help="Shard result files or directories (repeatable).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    lock: LockOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verify report as JSON.")] = False,
) -> int:
    """Merge shard results into manifest lists and public tags, all or nothing, then verify."""
    from multibake import bake, publish, report, shards

    loaded, p = load_plan(config, registry, None, check_files=False, lock=lock)
    sources, problems = shards.merge(from_, p, shards.plan_digest(p))
    if problems:
        for line in problems:
            typer.echo(f"multibake: {line}", err=True)
        typer.echo("multibake: the release is incomplete, so no public tag was changed", err=True)
        return 1
    retry = loaded.config.retry
    policy = bake.RetryPolicy(attempts=retry.attempts, initial_delay=retry.initial_delay, max_delay=retry.max_delay)
    echo = lambda line: typer.echo(line, err=True)  # noqa: E731
    docker = bake.docker_client()
    published = publish.promote(docker, p, sources, policy=policy, echo=echo, partial=False)
    for target, why in published.held_back.items():
        typer.echo(f"multibake: {target}: {why}", err=True)
    checks = publish.verify(p, policy, echo)
    if as_json:
        typer.echo(json.dumps(report.verify_json(checks), indent=2))
    else:
        typer.echo(report.verify_table(checks), nl=False)
    return 0 if not published.held_back and all(c.ok for c in checks) else 1


@app.command()
def verify(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (shape in the README).")] = False,
) -> int:
    """Read the registry and check every planned tag; exit 1 on any mismatch."""
    from multibake import bake, publish, report

    loaded, p = load_plan(config, registry, selectors, check_files=False)
    retry = loaded.config.retry
    policy = bake.RetryPolicy(attempts=retry.attempts, initial_delay=retry.initial_delay, max_delay=retry.max_delay)
    checks = publish.verify(p, policy, lambda line: typer.echo(line, err=True))
    if as_json:
        typer.echo(json.dumps(report.verify_json(checks), indent=2))
    else:
        typer.echo(report.verify_table(checks), nl=False)
    return 0 if all(c.ok for c in checks) else 1


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
    code = result if isinstance(result, int) else 0
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into that exit code, quietly
        typer.echo("multibake: interrupted", err=True)
    return code


def main() -> None:
    sys.exit(run())


__all__ = ["UsageError", "app", "main", "run"]
