"""Where each platform was built: the node of a configured builder, and whether under emulation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multibake.bake.run import BuildReport


def placement_json(report: BuildReport) -> dict[str, dict[str, dict[str, Any]]]:
    """Per cell and platform: the node of a configured builder that built it, emulated or not, and the cell's time."""
    if not report.placement:
        return {}
    return {
        c.target: {
            p: {"node": report.placement[p][0], "emulated": report.placement[p][1], "seconds": round(c.duration, 1)}
            for p in c.platforms
            if p in report.placement
        }
        for c in report.cells
    }


def placement_lines(report: BuildReport) -> str:
    """``nodes: linux/amd64 on amd64 (native), linux/arm64 on arm (native)``, or nothing."""
    if not report.placement:
        return ""
    parts = [f"{p} on {node} ({'emulated' if emu else 'native'})" for p, (node, emu) in report.placement.items()]
    return "nodes: " + ", ".join(parts) + "\n"
