"""What docker says, parsed into frozen data: a builder and its nodes (``buildx inspect``), the engine.

Pure: docker.py runs the commands and asks the Engine API; this module only reads what they said."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeFacts:
    name: str
    endpoint: str
    platforms: tuple[str, ...]  # as buildx prints them: declared ones marked with a trailing *
    status: str
    version: str = ""  # the node's BuildKit version (v0.34.2), when buildx knows it


@dataclass(frozen=True, kw_only=True, slots=True)
class BuilderFacts:
    name: str
    driver: str
    nodes: tuple[NodeFacts, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineFacts:
    buildx_version: str | None  # None: no buildx plugin
    snapshotter: bool  # dockerd stores images in containerd (multi-platform on the docker driver)


def parse_inspect(text: str) -> BuilderFacts:
    """``docker buildx inspect``'s text: the builder's name and driver, then a block per node."""
    builder: dict[str, str] = {}
    nodes: list[dict[str, str]] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or line.startswith(" "):  # labels and GC policies are indented
            continue
        if key == "Nodes":
            nodes.append({})
        elif nodes and key == "Name" and "Name" in nodes[-1]:
            nodes.append({"Name": value.strip()})
        else:
            (nodes[-1] if nodes else builder).setdefault(key, value.strip())
    return BuilderFacts(
        name=builder.get("Name", ""),
        driver=builder.get("Driver", ""),
        nodes=tuple(
            NodeFacts(
                name=n.get("Name", ""),
                endpoint=n.get("Endpoint", ""),
                platforms=tuple(p.strip() for p in n.get("Platforms", "").split(",") if p.strip()),
                status=n.get("Status", ""),
                version=n.get("BuildKit version", ""),
            )
            for n in nodes
            if n
        ),
    )
