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
        dir_okay=False,
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


def load_plan(config: Path, registry: str | None, selectors: list[str] | None, check_files: bool = True) -> Any:
    """load → plan → select, shared by every command that needs a plan."""
    from multibake import config as cfg
    from multibake import plan as planner
    from multibake import provenance

    loaded = cfg.load(config, registry)
    full = planner.plan(loaded, provenance.resolve(loaded.root))
    if check_files:
        cfg.check_paths(loaded, [(c.family, c.context, c.dockerfile) for c in full.cells])
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
    dest = output or f"docker-bake.{fmt.value}"
    if dest == "-":
        typer.echo(text, nl=False)
        return
    Path(dest).write_text(text, encoding="utf-8")
    typer.echo(f"wrote {dest} ({len(p.cells)} targets)", err=True)


@app.command()
def schema() -> None:
    """Print the JSON Schema of platforms.yaml (for editors' YAML language servers)."""
    from multibake.config import Config

    doc = Config.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "multibake platforms.yaml"
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


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
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())


__all__ = ["UsageError", "app", "main", "run"]
