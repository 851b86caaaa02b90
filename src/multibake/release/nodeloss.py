"""A node of a configured builder that stops answering during a release: named, with its endpoint.

BuildKit's own last line for a lost node is a gRPC error (``error reading from server: EOF``,
``connection refused``) that names neither the node nor where it was. When a build on a
``builder:`` of platforms.yaml fails, multibake connects to each ``tcp://`` node itself
(preflight/tls.py); a node that no longer answers is named in one line, and each failed cell with a
platform that node builds says so as its error. Its cells are failed cells like any other: no public
tag moves for them, and ``--keep-going`` publishes the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from multibake.bake.run import BuildReport, CellResult
from multibake.config.nodes import BuilderSpec, NodeSpec, placement
from multibake.kinds import Echo
from multibake.preflight.nodes import Buildx, lost_nodes


def blame(report: BuildReport, spec: BuilderSpec, buildx: Buildx, say: Echo) -> tuple[BuildReport, dict[str, str]]:
    """``report`` with the failed cells of a node that stopped answering saying so, and the lost nodes (name → why)."""
    if report.ok:
        return report, {}
    lost = lost_nodes(buildx, spec)
    if not lost:
        return report, {}
    for node, why in lost:
        say(f"multibake: error: node {node.name} ({node.endpoint}) stopped answering during the build: {why}")
    by_platform = {p: node for p, (node, _) in placement(spec).items()}
    gone = {node.name: (node, why) for node, why in lost}
    cells = tuple(_blamed(c, by_platform, gone) for c in report.cells)
    return replace(report, cells=cells), {node.name: why for node, why in lost}


def watcher(spec: BuilderSpec, buildx: Buildx) -> Callable[[], str | None]:
    """For the bake runs: why a node of ``spec`` no longer answers (None while all do)."""

    def gone() -> str | None:
        lost = lost_nodes(buildx, spec)
        return "; ".join(f"node {n.name} ({n.endpoint}) stopped answering: {why}" for n, why in lost) or None

    return gone


def merged(first: BuildReport, again: BuildReport) -> BuildReport:
    """The first build's report with the cells built ``again`` (elsewhere) in their place."""
    redone = {c.target: c for c in again.cells}
    return replace(
        first,
        cells=tuple(redone.get(c.target, c) for c in first.cells),
        runs=(*first.runs, *again.runs),
        retries=(*first.retries, *again.retries),
        pushed={**first.pushed, **again.pushed},
        nodes={**first.nodes, **again.nodes},
        duration=first.duration + again.duration,
    )


def _blamed(cell: CellResult, by_platform: dict[str, NodeSpec], gone: dict[str, tuple[NodeSpec, str]]) -> CellResult:
    if cell.status.ok:
        return cell
    names = sorted({by_platform[p].name for p in cell.platforms if p in by_platform} & set(gone))
    if not names:
        return cell
    node, why = gone[names[0]]
    said = f"node {node.name} ({node.endpoint}) stopped answering: {why}"
    return replace(cell, error=said, log_tail=(*cell.log_tail, *([cell.error] if cell.error else [])))
