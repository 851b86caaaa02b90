"""What the commands share: option types, the plan they load, the tools a release runs with, renderers."""

from __future__ import annotations

import json
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multibake.config import settings
from multibake.kinds import Progress

if TYPE_CHECKING:
    from multibake.registry.client import Api
    from multibake.release.pipeline import Built, Checked
    from multibake.release.tools import Tools


class State:
    """What the global options set for the command that runs (``--debug``)."""

    debug = False


def _config_path(ctx: typer.Context, param: typer.CallbackParam, value: Path) -> Path:
    source = ctx.get_parameter_source(param.name) if param.name else None
    given = source is not None and source.name != "DEFAULT"  # -c given, not Typer's default
    return settings.config_path(value if given else None, os.environ)


ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="The matrix file. [default: $MULTIBAKE_CONFIG, else platforms.yaml]",
        show_default=False,
        callback=_config_path,
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
LockOpt = Annotated[
    Path | None,
    typer.Option("--lock", help="A lock file from `multibake lock`: every shard of a release uses the same one."),
]


class BakeFormat(StrEnum):
    HCL = "hcl"
    JSON = "json"


class MatrixFormat(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    JSON = "json"


def load_plan(
    config: Path,
    registry: str | None,
    selectors: list[str] | None,
    check_files: bool = True,
) -> Any:
    """load → plan → select, shared by every command that needs a plan."""
    from multibake.plan.transforms import select
    from multibake.release import shards

    release = shards.resolve(config, registry, None, check_files)
    return release.loaded, select(release.plan, selectors or [])


def tools(progress: Progress = Progress.PLAIN) -> Tools:
    """What the release pipeline talks to: docker (made when needed), the registry, stderr."""
    started, startup = time.monotonic(), process_age()
    from multibake import docker as door
    from multibake.bake import display
    from multibake.release.tools import Tools

    out = display.output(progress)
    return Tools(
        docker=lambda: door.client(debug=State.debug),
        echo=out.echo,
        watch=out.watch,
        say=lambda line: typer.echo(line, err=True),
        started=started,
        startup=startup,
    )


def process_age() -> float:
    """Seconds since this process started (the interpreter, imports, the command line); 0 where unknown.

    Linux's /proc gives the start in clock ticks since boot, and the time since boot.
    """
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        started = int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - started)


def render_build(built: Built, as_json: bool) -> int:
    from multibake.cli import report
    from multibake.cli.placement import placement_json, placement_lines

    if built.dry_run is not None:
        typer.echo(built.dry_run.bake_file)
        for line in built.dry_run.builder_commands:  # what a build would run first, on a builder that does not exist
            typer.echo(f"# {line}")
        for line in built.dry_run.placement:
            typer.echo(f"# {line}")
        typer.echo(f"# {built.dry_run.command}")
    elif built.report is not None and as_json:
        # where each platform was built, beside the stable document's keys (a configured builder only)
        doc = {**report.build_json(built.report, ok=built.ok), "placement": placement_json(built.report)}
        typer.echo(json.dumps(doc, indent=2))
    elif built.report is not None:
        typer.echo(report.build_table(built.report) + placement_lines(built.report), nl=False)
    return 0 if built.ok else 1


def render_checks(checked: Checked, as_json: bool) -> int:
    from multibake.cli import report

    if checked.checks is not None and as_json:
        typer.echo(json.dumps(report.verify_json(list(checked.checks)), indent=2))
    elif checked.checks is not None:
        typer.echo(report.verify_table(list(checked.checks)), nl=False)
    return 0 if checked.ok else 1


def registry_api() -> Api:
    """The registry API commands read through (tests put an in-memory registry here)."""
    from multibake.registry.client import Http

    return Http()
