"""The command line: a thin Typer layer over load → plan → render → execute → publish → verify.

Each command (commands.py, release.py) turns its options into one call of the pipeline and renders
the result; errors are turned into an exit code and one line here, once. Heavy modules
(python-on-whales, rich) are imported inside the commands that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Annotated

import typer

from multibake import __version__
from multibake.cli import commands, inspect, release, upkeep
from multibake.cli.options import State
from multibake.config import settings
from multibake.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, MultibakeError, Terminated

app = typer.Typer(
    name="multibake",
    help="Build families of multi-arch container images from platforms.yaml with docker buildx bake.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: keeps rich (and its start-up cost) out of --help
    context_settings={"help_option_names": ["-h", "--help"]},
)
ci = typer.Typer(help="Helpers for CI systems.", no_args_is_help=True)
app.add_typer(ci, name="ci")

app.command()(commands.validate)
app.command("plan")(commands.plan_cmd)
app.command()(commands.hcl)
app.command()(commands.schema)
app.command()(release.build)
app.command()(commands.lock)
ci.command("matrix")(commands.ci_matrix)
app.command("publish")(release.publish_cmd)
app.command()(release.verify)
app.command("diff")(commands.diff_cmd)
app.command()(commands.update)
app.command("gc")(upkeep.gc_cmd)
app.command("report")(upkeep.report_cmd)
app.command("sbom")(inspect.sbom)
app.command("reproduce")(inspect.reproduce)


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
    State.debug = settings.debug(debug, os.environ)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; every error is turned into a message here, once."""
    try:
        result = app(args=argv, prog_name="multibake", standalone_mode=False)
    except MultibakeError as exc:
        if State.debug:
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
