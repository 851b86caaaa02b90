"""Distributed releases: the lock file, the CI fan-out, and shard results merged by ``publish --from``.

Where one machine is too slow (arm under QEMU), a release is split across CI runners. The lock file
resolves everything that could differ between runners (creation time, revision, the whole plan) once;
each shard builds its slice, pushes it to staging tags only, and writes a small result file (digests
per cell and platform) that travels as a CI artifact; ``publish --from`` merges the results into
manifest lists and public tags, all or nothing, and verifies.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multibake import platforms as arch
from multibake.errors import UsageError
from multibake.plan import Meta, Plan, select
from multibake.report import plan_json

LOCK_SCHEMA = "multibake.lock/v1"
SHARD_SCHEMA = "multibake.shard/v1"
SPLITS = ("platform", "family", "cell")


def plan_digest(plan: Plan) -> str:
    """A digest of everything a release publishes: equal digests, identical plans."""
    text = json.dumps(plan_json(plan), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def lock_doc(plan: Plan, meta: Meta, config: str) -> dict[str, Any]:
    return {
        "schema": LOCK_SCHEMA,
        "config": config,
        "plan": plan_digest(plan),
        "meta": {"created": meta.created, "revision": meta.revision, "source": meta.source},
    }


def read_lock(path: Path) -> tuple[Meta, str]:
    """The Meta every shard must use, and the plan digest they must reproduce."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable lock file ({exc})") from None
    if doc.get("schema") != LOCK_SCHEMA:
        raise UsageError(f"{path}: not a multibake lock file (schema {doc.get('schema')!r})")
    m = doc["meta"]
    return Meta(created=m["created"], revision=m.get("revision"), source=m.get("source")), str(doc["plan"])


@dataclass(frozen=True, slots=True)
class Shard:
    kind: str  # platform | family | cell
    value: str

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.kind}-{self.value}")

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


def parse_shard(spec: str, plan: Plan) -> Shard:
    kind, eq, value = spec.partition("=")
    if not eq or kind not in SPLITS:
        raise UsageError(f"--shard {spec!r}: expected platform=P, family=NAME or cell=TARGET")
    if kind == "platform":
        try:
            value = arch.normalize(value)
        except ValueError as exc:
            raise UsageError(f"--shard {spec!r}: {exc}") from None
        if not any(value in c.platforms for c in plan.cells):
            raise UsageError(f"--shard {spec!r}: no cell is planned for {value}")
    elif kind == "family" and value not in {f.name for f in plan.families}:
        raise UsageError(f"--shard {spec!r}: no family {value!r}")
    elif kind == "cell" and value not in {c.target for c in plan.cells}:
        raise UsageError(f"--shard {spec!r}: no cell {value!r}")
    return Shard(kind, value)


def fan_out(plan: Plan, split: str) -> list[Shard]:
    """The shards of a release, in plan order."""
    if split == "platform":
        seen: list[str] = []
        for c in plan.cells:
            seen += [p for p in c.platforms if p not in seen]
        return [Shard("platform", p) for p in seen]
    if split == "family":
        return [Shard("family", f.name) for f in plan.families]
    return [Shard("cell", c.target) for c in plan.cells]


def matrix(shards: list[Shard], fmt: str) -> str:
    """The fan-out in the CI's own matrix syntax."""
    rows = [{"shard": str(s), "id": s.id} for s in shards]
    if fmt == "github":  # for `strategy: matrix: ${{ fromJSON(...) }}`
        return json.dumps({"include": rows})
    if fmt == "gitlab":  # a `parallel: matrix:` block
        values = ", ".join(json.dumps(str(s)) for s in shards)
        return f"parallel:\n  matrix:\n    - MULTIBAKE_SHARD: [{values}]\n"
    return json.dumps(rows, indent=2)


def shard_members(shard: Shard, plan: Plan) -> set[str]:
    """The cells a shard is responsible for (it may build their parents too, but not publish them)."""
    if shard.kind == "platform":
        return {c.target for c in plan.cells if shard.value in c.platforms}
    if shard.kind == "family":
        return {c.target for c in plan.cells if c.family == shard.value}
    return {c.target for c in select(plan, [shard.value]).cells if c.target == shard.value}


def result_doc(shard: Shard, digest: str, cells: dict[str, dict[str, Any]], failed: list[str]) -> dict[str, Any]:
    """A shard's result: per cell, its staged index ("index") or its platforms' staged images."""
    return {"schema": SHARD_SCHEMA, "shard": str(shard), "plan": digest, "cells": cells, "failed": failed}


def merge(paths: list[Path], plan: Plan, digest: str) -> tuple[dict[str, list[str]], list[str]]:
    """Per cell, the staged refs to publish; and what is missing or failed (an incomplete release)."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"no shard result files in {', '.join(map(str, paths))}")
    pieces: dict[str, dict[str, str]] = {}
    indexes: dict[str, str] = {}
    problems: list[str] = []
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{f}: not a shard result ({exc})") from None
        if doc.get("schema") != SHARD_SCHEMA:
            raise UsageError(f"{f}: not a multibake shard result")
        if doc["plan"] != digest:
            raise UsageError(f"{f}: built from another plan ({doc['plan'][:19]}…); rebuild it from the same lock file")
        problems += [f"{t}: failed in shard {doc['shard']}" for t in doc.get("failed", [])]
        for target, got in doc["cells"].items():
            if "index" in got:
                indexes[target] = got["index"]
            for platform, ref in got.get("platforms", {}).items():
                pieces.setdefault(target, {})[platform] = ref
    sources: dict[str, list[str]] = {}
    for cell in plan.cells:
        if cell.target in indexes:
            sources[cell.target] = [indexes[cell.target]]
            continue
        have = pieces.get(cell.target, {})
        missing = [p for p in cell.platforms if p not in have]
        if missing:
            problems.append(f"{cell.target}: no shard built {', '.join(missing)}")
        else:
            sources[cell.target] = [have[p] for p in cell.platforms]
    return sources, problems
