"""Builder preflight: the docker client, the buildx builder it drives, and whether a plan can run on it.

Everything here happens before anything is built: a plan the builder cannot run (a missing
emulator, the docker driver without the containerd image store, an unknown builder) is refused
with exit 2 and the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from multibake import docker as door
from multibake.docker import DockerFailure, EngineFacts
from multibake.errors import UsageError
from multibake.failures import first_line
from multibake.plan.model import Plan

if TYPE_CHECKING:
    from multibake.docker import Client

# Emulators the kernel must know for a platform to run on a builder that is not native for it.
_BINFMT = {"linux/arm64": "qemu-aarch64", "linux/arm/v7": "qemu-arm", "linux/arm/v6": "qemu-arm"}


@dataclass(frozen=True, kw_only=True, slots=True)
class BuilderInfo:
    buildx_version: str
    name: str
    driver: str
    platforms: tuple[str, ...]  # what the builder reports, plus emulators registered with the kernel
    multi_platform: bool
    problem: str | None = None  # why multi-platform builds cannot work, with the fix
    nodes: int = 1  # a multi-node builder splits a target's platforms across its nodes
    buildkit: tuple[str, ...] = ()  # each node's BuildKit version, as far as buildx knows them


def _binfmt_platforms() -> set[str]:
    found = set()
    for platform, handler in _BINFMT.items():
        entry = Path("/proc/sys/fs/binfmt_misc") / handler
        with contextlib.suppress(OSError):
            if entry.read_text().startswith("enabled"):
                found.add(platform)
    return found


def inspect_builder(docker: Client, name: str | None) -> BuilderInfo:
    # two independent round-trips, run at once: start-up is part of every release's time
    with ThreadPoolExecutor(max_workers=2) as pool:
        asked_builder = pool.submit(door.inspect_builder, docker, name)
        asked_engine = pool.submit(door.engine, docker)
    try:
        engine = asked_engine.result()
    except DockerFailure as exc:
        raise UsageError(f"the docker daemon does not answer: {first_line(exc.stderr)}") from exc
    try:
        builder = asked_builder.result()
    except DockerFailure as exc:
        raise _builder_refused(name, engine, exc) from exc
    local = builder.driver in ("docker", "docker-container")
    problem = None
    if builder.driver == "docker" and not engine.snapshotter:
        problem = (
            "the 'docker' driver without the containerd image store cannot build multi-platform images; "
            'enable it ("features": {"containerd-snapshotter": true} in /etc/docker/daemon.json, restart '
            "dockerd) or use another builder: docker buildx create --use"
        )
    reported = {p.rstrip("*") for n in builder.nodes for p in n.platforms}
    return BuilderInfo(
        buildx_version=engine.buildx_version or "unknown",
        name=builder.name or (name or "default"),
        driver=builder.driver or "unknown",
        platforms=tuple(sorted(reported | (_binfmt_platforms() if local else set()))),
        multi_platform=problem is None,
        problem=problem,
        nodes=len(builder.nodes) or 1,
        buildkit=tuple(n.version for n in builder.nodes),
    )


def _builder_refused(name: str | None, engine: EngineFacts, exc: DockerFailure) -> UsageError:
    if engine.buildx_version is None:
        return UsageError(
            "docker buildx is not available: install the buildx plugin (Debian: apt-get install docker-buildx) "
            "or run scripts/setup-stack.sh"
        )
    which = f"builder {name!r}" if name else "the current builder"
    return UsageError(
        f"cannot use {which}: {first_line(exc.stderr)}\n  list builders with `docker buildx ls`; "
        "create one with `docker buildx create --use`, or start dockerd (scripts/setup-stack.sh)"
    )


def check_builder(info: BuilderInfo, plan: Plan) -> None:
    """Refuse, before building anything, a plan this builder cannot run."""
    wanted = sorted({p for c in plan.cells for p in c.platforms})
    if info.problem and any(len(c.platforms) > 1 for c in plan.cells):
        raise UsageError(info.problem)
    missing = [p for p in wanted if not _runnable(p, info.platforms)]
    if missing:
        raise UsageError(
            f"builder {info.name!r} ({info.driver}) cannot run {', '.join(missing)}; it runs "
            f"{', '.join(info.platforms) or 'nothing'}\n  register QEMU emulators: "
            "docker run --privileged --rm tonistiigi/binfmt --install all (or apt-get install qemu-user-static)"
        )


def _runnable(platform: str, available: Iterable[str]) -> bool:
    have = set(available)
    if platform in have:
        return True
    # an arm64 node runs arm/v7 natively when the kernel allows; buildx lists it then, so be strict
    return platform == "linux/arm/v6" and "linux/arm/v7" in have
