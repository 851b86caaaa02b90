"""The release commands: build, publish (shard results) and verify."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from multibake.cli import options
from multibake.cli.options import ConfigOpt, LockOpt, RegistryOpt, Selectors, render_build, render_checks
from multibake.config.settings import DEFAULT_CONFIG
from multibake.errors import UsageError
from multibake.kinds import NodeLoss, Progress

if TYPE_CHECKING:
    from multibake.release.resolve import BuildOptions


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
    on_node_loss: Annotated[
        NodeLoss | None,
        typer.Option(
            "--on-node-loss",
            help="A node of builder: that does not answer: fail its cells, or emulate its platforms on a "
            "remaining node (default: builder.on_node_loss, else fail).",
        ),
    ] = None,
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
            help="provenance=min|max|off, sbom=on|off|generator=IMAGE: the attestations of every image; "
            "beat attest: in platforms.yaml.",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="With --push: write the release page (static HTML) here when the release ends."),
    ] = None,
    sign: Annotated[
        bool | None,
        typer.Option(
            "--sign/--no-sign",
            help="Sign every index and platform image with cosign before tags move (--push); beats sign: in "
            "platforms.yaml. The key's password comes from $COSIGN_PASSWORD.",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Build the plan with docker buildx bake: all platforms, cached, pushes retried.

    Registry credentials: docker's own (docker login, credHelpers, credsStore), or, for the host of the
    release's registry, $MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD (docker is logged in
    with them for this run only, the password on its stdin).
    """
    from multibake.release.resolve import BuildOptions

    return _build(
        BuildOptions(
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
            on_node_loss=on_node_loss,
            sign=sign,
        ),
        progress,
        as_json,
        report,
    )


def _build(opts: BuildOptions, progress: Progress, as_json: bool, report: Path | None) -> int:
    """The release, then its report (with what it changed) when one is asked for."""
    from multibake.release import pipeline as release

    if report is not None and (not opts.push or opts.dry_run or opts.shard):
        raise UsageError("--report needs --push (a whole release, not a shard or a dry run)")
    code = render_build(release.build(opts, options.tools(progress)), as_json)
    if report is not None:  # the report's modules load only when one is asked for
        from multibake.cli import upkeep
        from multibake.maintain.report import ReportOptions

        reported = ReportOptions(config=opts.config, registry=opts.registry, selectors=opts.selectors, previous=True)
        upkeep.write_report(reported, report, None)
    return code


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

    checked = release.publish_shards(config, registry, lock, tuple(from_), options.tools())
    return render_checks(checked, as_json)


def verify(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (shape in the README).")] = False,
) -> int:
    """Read the registry and check every planned tag; exit 1 on any mismatch.

    With sign: in platforms.yaml, every index and platform image a tag serves must also carry a
    signature that verifies with the public key (cosign verify); a missing or bad one is exit 1.

    Registry credentials: as for build ($MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD for the
    release's registry host, else docker's own).
    """
    from multibake.release import pipeline as release

    checked = release.verify(config, registry, tuple(selectors or ()), options.tools())
    return render_checks(checked, as_json)
