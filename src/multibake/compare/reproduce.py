"""``multibake reproduce``: rebuild the published cells from scratch and compare them with the registry.

Per cell, the published index is read; the release's time is the ``org.opencontainers.image.created``
label multibake wrote (its SOURCE_DATE_EPOCH, else its commit time), else the image config's
``created``. Then every selected cell is built again with that SOURCE_DATE_EPOCH, ``--no-cache`` (no
cache import either), into an OCI tar of its own in a private directory (``rewrite-timestamp=true``,
file times clamped to the epoch), never a tag. Per platform: identical (same manifest digest), or the
config fields and, for each differing layer, the files that differ (layerdiff.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from multibake.bake import invocation
from multibake.bake.run import bake_targets
from multibake.compare import layerdiff
from multibake.docker import DockerFailure
from multibake.errors import BuildError, UsageError
from multibake.failures import first_line
from multibake.plan.model import Cell
from multibake.plan.transforms import select
from multibake.registry.client import Registry
from multibake.registry.manifest import platform_name
from multibake.release import pipeline, shards
from multibake.release.resolve import BuildOptions, Todo, resolve
from multibake.release.tools import Tools, registry_for

CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    config: Path
    registry: str | None = None
    selectors: tuple[str, ...] = ()
    builder: str | None = None
    workdir: Path | None = None  # where the OCI tars go; a temporary directory, removed after, when None


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerDiff:
    index: int
    published: str | None
    rebuilt: str | None
    files: tuple[layerdiff.FileDiff, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformResult:
    target: str
    platform: str
    published: str
    rebuilt: str | None  # None: the rebuild produced no image for this platform
    config: tuple[layerdiff.FieldDiff, ...] = ()
    layers: tuple[LayerDiff, ...] = ()

    @property
    def identical(self) -> bool:
        return self.published == self.rebuilt


@dataclass(frozen=True, kw_only=True, slots=True)
class Reproduced:
    epoch: int
    builder: str
    seconds: float
    platforms: tuple[PlatformResult, ...]

    @property
    def identical(self) -> bool:
        return all(p.identical for p in self.platforms)


class OciTar:
    """An OCI image layout in a tar (BuildKit's ``type=oci`` output): blobs by digest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}  # read once: the comparison reads each blob at most twice
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    self.files[member.name.removeprefix("./")] = handle.read()

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise BuildError(f"{self.path}: no {name} in the rebuilt image layout")
        return self.files[name]

    def blob(self, digest: str) -> bytes:
        return self.read("blobs/" + digest.replace(":", "/", 1))

    def json(self, digest: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.blob(digest))
        return doc

    def images(self) -> dict[str, str]:
        """platform → manifest digest of every platform image in the layout (attestations left out)."""
        out: dict[str, str] = {}
        todo = list(json.loads(self.read("index.json")).get("manifests", []))
        while todo:
            entry = todo.pop(0)
            if "index" in str(entry.get("mediaType")):
                todo += self.json(entry["digest"]).get("manifests", [])
                continue
            platform = entry.get("platform") or {}
            if platform.get("os") == "unknown":
                continue
            if not platform:
                config = self.json(self.json(entry["digest"])["config"]["digest"])
                platform = {k: config[k] for k in ("os", "architecture", "variant") if config.get(k)}
            out[platform_name(platform)] = str(entry["digest"])
        return out


def release_epoch(reg: Registry, cell: Cell, image: str) -> int:
    """The release's SOURCE_DATE_EPOCH, as its image records it."""
    config = reg.image_config(f"{cell.image}@{image}")
    stamp = ((config.get("config") or {}).get("Labels") or {}).get(CREATED) or config.get("created")
    if not stamp:
        raise UsageError(f"{cell.image}@{image}: its config records no creation time to rebuild with")
    return int(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())


def published_images(reg: Registry, cells: tuple[Cell, ...]) -> dict[str, dict[str, str]]:
    """target → platform → digest of each cell's published multi-arch tag (exit 2 when one is missing)."""
    out = {}
    for cell in cells:
        held = reg.manifest(cell.tags[0])
        if held is None or not held.is_index:
            raise UsageError(f"{cell.tags[0]} is not a published multi-arch image: nothing to reproduce")
        out[cell.target] = held.entries()
    return out


@contextlib.contextmanager
def _epoch_env(epoch: int) -> Iterator[None]:
    """SOURCE_DATE_EPOCH for this process while the rebuild resolves and runs: buildx passes it on."""
    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before


def _outputs(cells: tuple[Cell, ...], out_dir: Path) -> tuple[str, ...]:
    """``--set TARGET.output=…`` per bake target: an OCI tar each, file times clamped to the epoch."""
    return tuple(
        f"{t}.output=type=oci,dest={out_dir / (t + '.tar')},rewrite-timestamp=true"
        for c in cells
        for t in c.bake_targets
    )


def rebuild(opts: Options, tools: Tools, out_dir: Path, cells: tuple[Cell, ...]) -> str:
    """Build ``cells`` from scratch into ``out_dir``; the builder's name."""
    build = BuildOptions(
        config=opts.config,
        registry=opts.registry,
        selectors=opts.selectors,
        output="type=cacheonly",  # replaced per target by _outputs
        builder=opts.builder,
        sets=_outputs(cells, out_dir),
        preflight=False,
    )
    target = resolve(build)
    req = pipeline.write_bake_file(target, Todo(plan=target.plan), build)
    req = replace(req, rewrite_timestamp=False)  # the OCI outputs above carry it themselves
    docker = tools.docker()
    info = pipeline.preflight(docker, target.plan, opts.builder, tools.say)
    if not invocation.supports_fs_entitlements(info.buildx_version):
        req = replace(req, allow=())
    argv = invocation.command_line(target.plan, req, bake_targets(target.plan), use_cache=False, redact=False)
    run = tools.bake_runner(docker)
    with contextlib.chdir(req.root):
        try:
            for line in run(argv):
                tools.echo(line)
        except DockerFailure as exc:
            raise BuildError(f"the rebuild failed: {first_line(exc.stderr or '')}") from exc
    return info.name


def _layers(reg: Registry, ref: str, old: dict[str, Any], new: dict[str, Any], oci: OciTar) -> tuple[LayerDiff, ...]:
    a = [str(la["digest"]) for la in old.get("layers", [])]
    b = [str(la["digest"]) for la in new.get("layers", [])]
    out = []
    for i in range(max(len(a), len(b))):
        was, now = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        if was == now:
            continue
        files: tuple[layerdiff.FileDiff, ...] = ()
        if was is not None and now is not None:
            files = tuple(layerdiff.files(reg.blob(ref, was), oci.blob(now)))
        out.append(LayerDiff(index=i, published=was, rebuilt=now, files=files))
    return tuple(out)


def compare_platform(reg: Registry, cell: Cell, platform: str, published: str, oci: OciTar | None) -> PlatformResult:
    rebuilt = oci.images().get(platform) if oci is not None else None
    result = PlatformResult(target=cell.target, platform=platform, published=published, rebuilt=rebuilt)
    if oci is None or rebuilt is None or rebuilt == published:
        return result
    ref = f"{cell.image}@{published}"
    held = reg.manifest(ref)
    if held is None:
        raise BuildError(f"{ref} is no longer in the registry")
    new = oci.json(rebuilt)
    fields = layerdiff.config(reg.config_of(ref, held), oci.json(new["config"]["digest"]))
    return replace(result, config=tuple(fields), layers=_layers(reg, ref, held.doc, new, oci))


def _tar_for(cell: Cell, platform: str, out_dir: Path) -> OciTar | None:
    piece = next((p.target for p in cell.split if p.platform == platform), cell.target)
    path = out_dir / f"{piece}.tar"
    return OciTar(path) if path.exists() else None


def reproduce(opts: Options, tools: Tools) -> Reproduced:
    """Rebuild, then compare each platform image of each selected cell; the report says what differs."""
    release = shards.resolve(opts.config, opts.registry, None, check_files=True)
    cells = select(release.plan, list(opts.selectors)).cells
    reg = registry_for(release, tools)
    published = published_images(reg, cells)
    first = cells[0]
    epoch = release_epoch(reg, first, next(iter(published[first.target].values())))
    started = time.monotonic()
    with _workdir(opts.workdir) as out_dir, _epoch_env(epoch):
        builder = rebuild(opts, tools, out_dir, cells)
        results = [
            compare_platform(reg, cell, platform, digest, _tar_for(cell, platform, out_dir))
            for cell in cells
            for platform, digest in published[cell.target].items()
        ]
    return Reproduced(epoch=epoch, builder=builder, seconds=time.monotonic() - started, platforms=tuple(results))


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="multibake-reproduce-") as tmp:
        yield Path(tmp)
