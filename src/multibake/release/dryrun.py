"""What a build would run, shown instead of run (build --dry-run): the bake file, the builder, the command."""

from __future__ import annotations

from dataclasses import dataclass

from multibake.bake import invocation
from multibake.bake import run as bake
from multibake.config.nodes import BuilderSpec
from multibake.preflight import nodes
from multibake.release.resolve import Todo


@dataclass(frozen=True, kw_only=True, slots=True)
class DryRun:
    bake_file: str  # its text
    command: str  # `cd ROOT && docker buildx bake …`
    builder_commands: tuple[str, ...] = ()  # `docker buildx create …` of a configured builder, from nothing
    placement: tuple[str, ...] = ()  # which node of a configured builder builds each platform


def dry_run(todo: Todo, req: invocation.Request, builder: BuilderSpec | None = None) -> DryRun:
    argv = invocation.command_line(todo.plan, req, bake.bake_targets(todo.plan))
    return DryRun(
        bake_file=req.bake_file.read_text(encoding="utf-8"),
        command=f"cd {req.root} && " + " ".join(argv),
        builder_commands=nodes.dry_run_lines(builder) if builder else (),
        placement=nodes.placement_lines(builder) if builder else (),
    )
