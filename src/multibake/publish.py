"""publish and verify: point public tags at complete staged indexes, then read back what the registry holds.

``build --push`` never pushes a public tag directly. On the docker driver buildx pushes twice, the
second time through dockerd, which writes each platform's manifest to the tag before the index: the
public tag would point at a single platform for a while, or for good if that push fails. So bake
pushes to a private staging tag per cell; here each staged index is checked to hold exactly the
planned platforms, and only then are the public tags pointed at it, one manifest write each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multibake.errors import BuildError
from multibake.plan import Cell, Plan

if TYPE_CHECKING:
    from python_on_whales import DockerClient

    from multibake.bake import BuildReport, Echo, RetryPolicy


@dataclass(frozen=True, kw_only=True, slots=True)
class TagCheck:
    ref: str
    target: str
    ok: bool
    platforms: tuple[str, ...]  # what the registry lists (attestations aside)
    platforms_digests: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    error: str | None = None


@dataclass(kw_only=True)
class Published:
    promoted: list[str] = field(default_factory=list)  # targets whose public tags now point at the release
    held_back: dict[str, str] = field(default_factory=dict)  # target → why its tags were left alone


def _check(cell: Cell, ref: str, found: dict[str, str]) -> TagCheck:
    want, have = set(cell.platforms), set(found)
    return TagCheck(
        ref=ref,
        target=cell.target,
        ok=want == have,
        platforms=tuple(sorted(have)),
        platforms_digests=tuple(sorted(found.items())),
        missing=tuple(sorted(want - have)),
        extra=tuple(sorted(have - want)),
    )


def promote(
    docker: DockerClient, plan: Plan, report: BuildReport, *, policy: RetryPolicy, echo: Echo, partial: bool
) -> Published:
    """Point public tags at staged indexes; all cells or none unless ``partial`` (--keep-going)."""
    from multibake import bake

    out = Published()
    built = {c.target for c in report.cells if c.status == "built"}
    if not partial and len(built) != len(plan.cells):
        for cell in plan.cells:
            out.held_back[cell.target] = "the release is incomplete: no public tag was changed"
        return out
    for cell in plan.cells:
        if cell.target not in built:
            out.held_back[cell.target] = "not built"
            continue
        try:
            check = _check(cell, cell.staging, bake.read_index(docker, cell.staging, policy, echo))
        except BuildError as exc:
            out.held_back[cell.target] = str(exc)
            continue
        if not check.ok:
            out.held_back[cell.target] = f"staged index lacks {', '.join(check.missing) or '-'}"
            continue
        bake.copy_index(docker, cell.staging, cell.tags, policy, echo)
        out.promoted.append(cell.target)
    return out


def verify(docker: DockerClient, plan: Plan, policy: RetryPolicy, echo: Echo) -> list[TagCheck]:
    """Read every planned multi-arch tag back from the registry and compare it with the plan."""
    from multibake import bake

    checks = []
    for cell in plan.cells:
        for ref in cell.tags:
            try:
                found = bake.read_index(docker, ref, policy, echo)
            except BuildError as exc:
                checks.append(TagCheck(ref=ref, target=cell.target, ok=False, platforms=(), error=str(exc)))
                continue
            checks.append(_check(cell, ref, found))
    return checks
