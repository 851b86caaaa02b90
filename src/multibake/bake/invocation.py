"""The bake invocation: its argv, per-target outputs, entitlements, and what its metadata file says.

Kept apart from bake.py's retry and keep-going logic: this is what changes from one buildx version
or builder driver to the next (push-by-digest, ``--allow``, metadata keys), and it is pure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multibake.docker import BakeFlags, bake_argv
from multibake.kinds import Mode
from multibake.plan.model import Plan
from multibake.preflight.builder import BuilderInfo
from multibake.refs import untagged

_SECRETISH = re.compile(r"token|passw|secret|key|auth|cred", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    bake_file: Path  # absolute
    root: Path  # bake runs here: the plan's context paths are relative to it
    mode: Mode = Mode.CACHE
    output: str | None = None
    sets: Mapping[str, str] = field(default_factory=dict)
    builder: str | None = None
    keep_going: bool = False
    allow: tuple[str, ...] = ()  # bake's --allow entitlements (fs.read=PATH) for paths outside ``root``
    by_digest: bool = False  # push untagged, by digest (builders other than the docker driver)
    rewrite_timestamp: bool = False  # clamp file times in layers to SOURCE_DATE_EPOCH (reproducible layers)


# An image pushed untagged: nothing but its digest (read from the metadata file) names it until
# publish points the public tags at it, so no staging tag is ever left in the registry.
_BY_DIGEST = "type=image,push=true,push-by-digest=true,name-canonical=true"


def by_digest(builder: BuilderInfo) -> bool:
    """The docker driver refuses push-by-digest; BuildKit's own drivers take it."""
    return builder.driver in ("docker-container", "remote", "kubernetes")


def rewrites_timestamps(builder: BuilderInfo) -> bool:
    """Whether the image exporter takes ``rewrite-timestamp=true``: BuildKit's own drivers from BuildKit 0.13.

    The docker driver's exporter (dockerd's) refuses it: "exporter option rewrite-timestamp conflicts
    with unpack" (docker 28.5, measured).
    """
    versions = [re.match(r"v?(\d+)\.(\d+)", v) for v in builder.buildkit]
    return (
        by_digest(builder)
        and bool(versions)
        and all(m is not None and (int(m.group(1)), int(m.group(2))) >= (0, 13) for m in versions)
    )


def repositories(plan: Plan) -> dict[str, str]:
    """bake target → the repository its image is pushed to."""
    staging = {c.target: c.staging for c in plan.cells} | {p.target: p.staging for c in plan.cells for p in c.split}
    return {target: untagged(ref) for target, ref in staging.items()}


def output_sets(plan: Plan, req: Request) -> dict[str, str]:
    """Per-target outputs: only planned cells push or load; parent views stay cache-only."""
    out = {
        Mode.CACHE: "type=cacheonly",
        Mode.PUSH: (_BY_DIGEST + (",rewrite-timestamp=true" if req.rewrite_timestamp else ""))
        if req.by_digest
        else "type=registry",
        Mode.LOAD: "type=docker",
        Mode.OUTPUT: req.output or "type=cacheonly",
    }[req.mode]
    sets = {f"{t}.output": out for c in plan.cells for t in c.bake_targets}
    if req.mode is Mode.PUSH and req.by_digest:
        # BuildKit refuses to push a tagged name by digest: each target names its bare repository
        repos = repositories(plan)
        sets.update({f"{t}.tags": repos[t] for c in plan.cells for t in c.bake_targets})
    sets.update(req.sets)
    return sets


def command_line(
    plan: Plan,
    req: Request,
    targets: Sequence[str],
    *,
    use_cache: bool = True,
    metadata: Path | None = None,
    redact: bool = True,
) -> list[str]:
    """The bake command multibake runs; secret-looking --set values redacted unless ``redact`` is False."""
    sets = {k: "***" if redact and _SECRETISH.search(k) else v for k, v in output_sets(plan, req).items()}
    flags = BakeFlags(
        file=req.bake_file,
        builder=req.builder,
        no_cache=not use_cache,
        allow=req.allow,
        metadata=metadata,
        sets=sets,
        targets=tuple(targets),
    )
    return bake_argv(flags)


def supports_fs_entitlements(buildx_version: str) -> bool:
    """buildx 0.19 added bake's fs entitlements (and 0.20 enforces them); older ones reject the flag."""
    m = re.match(r"v?(\d+)\.(\d+)", buildx_version)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (0, 19)


def interrupt_children(pid: int | None = None) -> None:
    """Send SIGINT to every process below ``pid`` (this one): a bake run cancels its build on it.

    A terminal's Ctrl-C reaches the whole process group; a SIGTERM sent to multibake alone (a CI
    runner, ``timeout``) does not, and python-on-whales leaves its child running when we unwind.
    """
    for child in _children(os.getpid() if pid is None else pid):
        interrupt_children(child)
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGINT)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):  # Linux; elsewhere there are none to find
        with contextlib.suppress(OSError, ValueError):
            found += [int(c) for c in task.read_text().split()]
    return found


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def pushed_images(metadata: Mapping[str, Any], repos: Mapping[str, str]) -> dict[str, str]:
    """target → the image it pushed, pinned by the digest in bake's metadata file.

    ``repos`` (target → repository) names the image where the metadata does not: buildx leaves
    ``image.name`` out for an index it assembled from the nodes of a multi-node builder.
    """
    out = {}
    for target, entry in metadata.items():
        digest = entry.get("containerimage.digest") if isinstance(entry, dict) else None
        name = str(entry.get("image.name") or repos.get(target, "")).split(",")[0] if digest else ""
        if digest and name:
            out[target] = f"{untagged(name)}@{digest}"
    return out


def nodes(metadata: Mapping[str, Any]) -> dict[str, str]:
    """target → the builder node that built it, from bake's ``buildx.build.ref`` (builder/node/ref)."""
    out = {}
    for target, entry in metadata.items():
        ref = entry.get("buildx.build.ref") if isinstance(entry, dict) else None
        if isinstance(ref, str) and ref.count("/") >= 2:
            out[target] = ref.split("/")[1]
    return out
