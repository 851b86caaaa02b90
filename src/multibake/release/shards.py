"""Distributed releases: the lock file, the CI fan-out, and shard results merged by ``publish --from``.

Where one machine is too slow (arm under QEMU), a release is split across CI runners. The lock file
resolves everything that could differ between runners (creation time, revision, the whole plan) once;
each shard builds its slice, pushes it to staging tags only, and writes a small result file (digests
per cell and platform) that travels as a CI artifact; ``publish --from`` merges the results into
manifest lists and public tags, all or nothing, and verifies. Both files are read into frozen models:
a malformed one is a usage error naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multibake import platforms as arch
from multibake.config.load import Loaded, load
from multibake.errors import UsageError
from multibake.kinds import Split
from multibake.plan import paths, planner
from multibake.plan.model import Meta, Plan
from multibake.plan.transforms import select
from multibake.release import provenance

LOCK_SCHEMA = "multibake.lock/v1"
SHARD_SCHEMA = "multibake.shard/v1"


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class LockMeta(_File):
    created: str
    revision: str | None = None
    source: str | None = None


class LockFile(_File):
    schema_id: Literal["multibake.lock/v1"] = Field(alias="schema")
    config: str
    plan: str  # the plan's digest: every shard must reproduce it
    meta: LockMeta


class ShardCell(_File):
    """One cell a shard staged: its index, or (built one target per platform) each platform's image."""

    index: str | None = None
    platforms: dict[str, str] | None = None


class ShardResult(_File):
    schema_id: Literal["multibake.shard/v1"] = Field(alias="schema")
    shard: str
    plan: str
    cells: dict[str, ShardCell]
    failed: list[str] = Field(default_factory=list)


M = TypeVar("M", bound=BaseModel)


def read_model(path: Path, model: type[M], what: str) -> M:
    """``path`` parsed into ``model``; anything else is a usage error naming the file and the problem."""
    try:
        return model.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read this {what}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'the document'}: {err['msg']}" for err in exc.errors()
        )
        raise UsageError(f"{path}: not a valid {what}: {problems}") from exc


def plan_digest(plan: Plan) -> str:
    """A digest of everything a release publishes (every field of every cell, view and family).

    Equal digests, identical releases: annotations and per-platform args count too, though the
    ``plan --json`` view leaves them out.
    """
    doc = {
        "registry": plan.registry,
        "families": [dataclasses.asdict(f) for f in plan.families],
        "cells": [dataclasses.asdict(c) for c in plan.cells],
        "views": [dataclasses.asdict(v) for v in plan.views],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def lock_file(plan: Plan, meta: Meta, config: str) -> LockFile:
    return LockFile(
        schema_id=LOCK_SCHEMA,
        config=config,
        plan=plan_digest(plan),
        meta=LockMeta(created=meta.created, revision=meta.revision, source=meta.source),
    )


def write_lock(lock: LockFile, path: Path) -> None:
    path.write_text(json.dumps(lock.model_dump(by_alias=True), indent=2) + "\n", encoding="utf-8")


def read_lock(path: Path) -> tuple[Meta, str]:
    """The Meta every shard must use, and the plan digest they must reproduce."""
    lock = read_model(path, LockFile, "lock file")
    m = lock.meta
    return Meta(created=m.created, revision=m.revision, source=m.source), lock.plan


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolved:
    """A release resolved once: its loaded config, provenance and full plan."""

    loaded: Loaded
    meta: Meta
    plan: Plan


def resolve(config: Path, registry: str | None, lock: Path | None, check_files: bool) -> Resolved:
    """load → plan, each resolved once; with a lock file, its time and revision, and its plan or an error."""
    loaded = load(config, registry)
    if lock is not None:
        meta, locked = read_lock(lock)
    else:
        meta, locked = provenance.resolve(loaded.root, config), None
    full = planner.plan(loaded, meta)
    if locked is not None and plan_digest(full) != locked:
        raise UsageError(f"{lock}: {config} or the checkout changed since this lock was written; write a new one")
    if check_files:
        paths.check_files(loaded, full)
    return Resolved(loaded=loaded, meta=meta, plan=full)


@dataclass(frozen=True, slots=True)
class Shard:
    kind: Split
    value: str

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.kind}-{self.value}")

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


def parse_shard(spec: str, plan: Plan) -> Shard:
    kind, eq, value = spec.partition("=")
    if not eq or kind not in set(Split):
        raise UsageError(f"--shard {spec!r}: expected platform=P, family=NAME or cell=TARGET")
    if kind == Split.PLATFORM:
        try:
            value = arch.normalize(value)
        except ValueError as exc:
            raise UsageError(f"--shard {spec!r}: {exc}") from exc
        if not any(value in c.platforms for c in plan.cells):
            raise UsageError(f"--shard {spec!r}: no cell is planned for {value}")
    elif kind == Split.FAMILY and value not in {f.name for f in plan.families}:
        raise UsageError(f"--shard {spec!r}: no family {value!r}")
    elif kind == Split.CELL and value not in {c.target for c in plan.cells}:
        raise UsageError(f"--shard {spec!r}: no cell {value!r}")
    return Shard(Split(kind), value)


def fan_out(plan: Plan, split: Split) -> list[Shard]:
    """The shards of a release, in plan order."""
    if split is Split.PLATFORM:
        seen: list[str] = []
        for c in plan.cells:
            seen += [p for p in c.platforms if p not in seen]
        return [Shard(split, p) for p in seen]
    if split is Split.FAMILY:
        return [Shard(split, f.name) for f in plan.families]
    return [Shard(split, c.target) for c in plan.cells]


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
    if shard.kind is Split.PLATFORM:
        return {c.target for c in plan.cells if shard.value in c.platforms}
    if shard.kind is Split.FAMILY:
        return {c.target for c in plan.cells if c.family == shard.value}
    return {c.target for c in select(plan, [shard.value]).cells if c.target == shard.value}


def write_result(shard: Shard, digest: str, cells: dict[str, ShardCell], failed: list[str], path: Path) -> None:
    """A shard's result file: per cell, its staged index ("index") or its platforms' staged images."""
    doc = ShardResult(schema_id=SHARD_SCHEMA, shard=str(shard), plan=digest, cells=cells, failed=failed)
    path.write_text(json.dumps(doc.model_dump(by_alias=True, exclude_none=True), indent=2) + "\n")


def _result_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"no shard result files in {', '.join(map(str, paths))}")
    return files


@dataclass(frozen=True, kw_only=True, slots=True)
class _Staged:
    """What the shards staged: whole indexes per cell, or per-platform images to join into one."""

    indexes: dict[str, str]
    pieces: dict[str, dict[str, str]]  # cell → platform → staged ref
    failed: list[str]


def _read_results(files: list[Path], digest: str) -> _Staged:
    staged = _Staged(indexes={}, pieces={}, failed=[])
    for f in files:
        doc = read_model(f, ShardResult, "shard result")
        if doc.plan != digest:
            raise UsageError(f"{f}: built from another plan ({doc.plan[:19]}…); rebuild it from the same lock file")
        staged.failed.extend(f"{t}: failed in shard {doc.shard}" for t in doc.failed)
        for target, got in doc.cells.items():
            if got.index is not None:
                staged.indexes[target] = got.index
            for platform, ref in (got.platforms or {}).items():
                staged.pieces.setdefault(target, {})[platform] = ref
    return staged


def merge(paths: list[Path], plan: Plan, digest: str) -> tuple[dict[str, list[str]], list[str]]:
    """Per cell, the staged refs to publish; and what is missing or failed (an incomplete release)."""
    staged = _read_results(_result_files(paths), digest)
    problems = list(staged.failed)
    sources: dict[str, list[str]] = {}
    for cell in plan.cells:
        if cell.target in staged.indexes:
            sources[cell.target] = [staged.indexes[cell.target]]
            continue
        have = staged.pieces.get(cell.target, {})
        missing = [p for p in cell.platforms if p not in have]
        if missing:
            problems.append(f"{cell.target}: no shard built {', '.join(missing)}")
        else:
            sources[cell.target] = [have[p] for p in cell.platforms]
    return sources, problems
