"""The base images each cell builds on, and the preflight that checks their platforms in the registry.

``plan_bases`` reads each cell's Dockerfile (dockerfile.py) once per platform it builds, with the
cell's args (per-platform ones included) and its named contexts: ``FROM base`` is the parent cell of
this plan (checked against the plan: its platforms must cover the child's) or, once the parent is
published and not rebuilt, that image. ``preflight`` reads every distinct external base once,
a few at a time, and refuses (exit 2, nothing built) a cell asking for a platform its base does not
publish, or a base the registry does not hold. A registry that cannot be reached is warned about
once per host and the build goes on: the base may be cached in the builder, and bake will say.

Platform matching follows containerd's for 32-bit arm only (an arm/v7 build may use an arm/v6 or v5
base: BuildKit picks it and it runs on v7); arm64 on a 32-bit arm base, or amd64 on a 386 one, is
refused although BuildKit would take it: the image would be labelled 64-bit and hold 32-bit code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from multibake import platforms as arch
from multibake.config.schema import Retry
from multibake.errors import BuildError, UsageError
from multibake.kinds import Echo
from multibake.plan.model import Cell, Plan
from multibake.plan.paths import is_remote
from multibake.platforms import Scheme
from multibake.preflight import dockerfile as df
from multibake.refs import untagged

if TYPE_CHECKING:  # the registry client (wire.py, http.client) is imported only when preflight runs:
    # `multibake plan` shows the bases without reading any registry, and starts faster for it
    from multibake.registry.client import Api, Registry

TIMEOUT = 10.0  # seconds per request: an unreachable host costs at most ATTEMPTS of these
ATTEMPTS = 2
THREADS = 4
BASE = "base"  # the named context a child's `FROM base` resolves to (hcl.py renders it)
HINT = (
    "restrict the cell's platforms (platforms: of its family or include entry, or an exclude) "
    "or choose a base that publishes them; --no-preflight skips this check"
)
_ARM_FALLBACK = {"linux/arm/v7": ("linux/arm/v6", "linux/arm/v5"), "linux/arm/v6": ("linux/arm/v5",)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Need:
    """One image a cell's build of one platform pulls."""

    ref: str  # as the Dockerfile resolves it (``alpine:3.21``); for a plan parent, ``<family>``
    parent: str | None  # the plan cell behind ``FROM base``, checked against the plan
    platform: str | None  # the platform it must publish; None: the builder's own (existence only)
    serves: str  # the cell's platform this build is for
    line: int
    final: bool  # the image's own base (not a builder stage's)


@dataclass(frozen=True, kw_only=True, slots=True)
class CellBases:
    target: str
    dockerfile: str  # context/dockerfile, for messages
    needs: tuple[Need, ...] = ()
    shown: tuple[tuple[str, str], ...] = ()  # platform → the base it builds on, for summaries


def _args(cell: Cell, piece_args: tuple[tuple[str, str], ...], sets: Mapping[str, str]) -> dict[str, str]:
    """The build args bake passes: the plan's, then ``--set target.args.NAME=…`` (or ``*.args``)."""
    out = dict(piece_args)
    for key, value in sets.items():
        target, _, name = key.partition(".args.")
        if name and target in ("*", cell.target, *cell.bake_targets):
            out[name] = value
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class _Build:
    """One build of a cell: its platform, build args, the plan parent and the published base it starts from."""

    platform: str
    args: tuple[tuple[str, str], ...]
    parent: str | None
    published: str | None


def _builds(cell: Cell) -> list[_Build]:
    if cell.split:
        return [
            _Build(
                platform=p.platform,
                args=p.args,
                parent=cell.parent if p.base_context else None,
                published=cell.base_image,
            )
            for p in cell.split
        ]
    parent = cell.parent if cell.base_context else None
    return [_Build(platform=p, args=cell.args, parent=parent, published=cell.base_image) for p in cell.platforms]


def cell_bases(cell: Cell, parsed: df.Dockerfile, family_of: Mapping[str, str], sets: Mapping[str, str]) -> CellBases:
    """Every base of every platform of ``cell``; ``family_of`` maps plan targets to their family."""
    needs: list[Need] = []
    shown: list[tuple[str, str]] = []
    for build in _builds(cell):
        platform, piece_args, parent, published = build.platform, build.args, build.parent, build.published
        contexts = frozenset({BASE}) if parent or published else frozenset()
        uses = df.uses(
            parsed, platform=platform, args=_args(cell, piece_args, sets), stage=cell.stage, contexts=contexts
        )
        for use in uses:
            ref, from_plan = use.image, None
            if use.context:
                ref, from_plan = (f"<{family_of[parent]}>", parent) if parent else (published or ref, None)
            needs.append(
                Need(ref=ref, parent=from_plan, platform=use.platform, serves=platform, line=use.line, final=use.final)
            )
        shown.append((platform, next((n.ref for n in needs if n.final and n.serves == platform), "scratch")))
    return CellBases(
        target=cell.target, dockerfile=f"{cell.context}/{cell.dockerfile}", needs=tuple(needs), shown=tuple(shown)
    )


def plan_bases(
    plan: Plan, root: Path, sets: Mapping[str, str] | None = None, *, strict: bool = True
) -> dict[str, CellBases]:
    """target → its bases, each Dockerfile read once. Remote contexts (git URLs, …) are left to bake.

    ``strict``: a Dockerfile whose bases cannot be worked out is an error (exit 2); otherwise its
    cells show ``?`` (``plan`` shows what it can).
    """
    texts: dict[str, df.Dockerfile] = {}
    family_of = {c.target: c.family for c in plan.cells}
    out: dict[str, CellBases] = {}
    for cell in plan.cells:
        where = f"{cell.context}/{cell.dockerfile}"
        if is_remote(cell.context):
            out[cell.target] = CellBases(target=cell.target, dockerfile=where)
            continue
        try:
            if where not in texts:
                texts[where] = df.parse((root / cell.context / cell.dockerfile).read_text(encoding="utf-8"))
            out[cell.target] = cell_bases(cell, texts[where], family_of, sets or {})
        except (OSError, UnicodeDecodeError, df.DockerfileError) as exc:
            if strict and not isinstance(exc, df.Unsupported):
                raise UsageError(f"cell {cell.target}: {where}: {exc}") from exc
            out[cell.target] = CellBases(
                target=cell.target, dockerfile=where, shown=tuple((p, "?") for p in cell.platforms)
            )
    return out


def shown(bases: CellBases) -> str:
    """One cell's bases for a table: ``alpine:3.21``, or ``amd64=a,armv7=b`` when platforms differ."""
    values = {ref for _, ref in bases.shown}
    if len(values) <= 1:
        return values.pop() if values else "-"
    return ",".join(f"{arch.name(p, Scheme.SHORT) if p in arch.ARCHES else p}={ref}" for p, ref in bases.shown)


BASE_NAME = "org.opencontainers.image.base.name"


def base_labels(plan: Plan, root: Path, sets: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """target → the OCI ``base.name`` label of each cell whose base image is one external image on every
    platform, fully qualified (``docker.io/library/alpine:3.21``), for ``multibake diff`` to show a base
    change. A child already names its parent cell's tag; ``scratch``, or bases that differ by platform
    or cannot be worked out, get none. A label the family sets itself is left alone.
    """
    found = plan_bases(plan, root, sets, strict=False)
    out: dict[str, tuple[str, str]] = {}
    for cell in plan.cells:
        refs = {ref for _, ref in found[cell.target].shown}
        if cell.parent is not None or len(refs) != 1 or BASE_NAME in dict(cell.labels):
            continue
        ref = refs.pop()
        if ref not in ("scratch", "?") and not ref.startswith("<"):
            out[cell.target] = (BASE_NAME, canonical_ref(ref))
    return out


def canonical_platform(platform: str) -> str:
    try:
        return arch.normalize(platform)
    except ValueError:
        # containerd reads a 32-bit arm entry without a variant as v7
        return "linux/arm/v7" if platform == "linux/arm" else platform


def covers(published: frozenset[str], platform: str) -> bool:
    wanted = canonical_platform(platform)
    return wanted in published or any(p in published for p in _ARM_FALLBACK.get(wanted, ()))


def canonical_ref(ref: str) -> str:
    """``alpine:3.21`` → ``docker.io/library/alpine:3.21`` (docker's rules): one read per image."""
    from multibake.registry.connect import parse

    name, at, digest = ref.partition("@")
    parsed = parse(f"{untagged(name)}@{digest}" if at else name)
    sep = "@" if parsed.reference.startswith("sha256:") else ":"
    return f"{parsed.host}/{parsed.repo}{sep}{parsed.reference}"


def preflight_registry(api: Api, retry: Retry, sleep: Callable[[float], None], echo: Echo) -> Registry:
    """A registry client with short timeouts and few attempts: preflight must not hang on a dead host."""
    from multibake.registry.client import impatient

    return impatient(api, retry, sleep, echo, timeout=TIMEOUT, attempts=ATTEMPTS)


@dataclass
class _HostFailure:
    """A registry host that could not be read: the first reason, and the references left unread."""

    reason: str
    refs: list[str]


@dataclass
class _Reads:
    """What a run learnt from the registry: published platforms (None: no such image), and failures."""

    held: dict[str, frozenset[str] | None]
    failed: dict[str, _HostFailure]


def published_platforms(reg: Registry, ref: str) -> frozenset[str] | None:
    """The platforms ``ref`` publishes (an index's entries, or a single image's config), None if absent."""
    from multibake.registry.manifest import platform_name

    held = reg.manifest(ref)
    if held is None:
        return None
    if held.is_index:
        return frozenset(canonical_platform(p) for p in held.entries())
    return frozenset({canonical_platform(platform_name(reg.config_of(ref, held)))})


def read_all(reg: Registry, refs: list[str], threads: int = THREADS) -> _Reads:
    """Read each reference once, ``threads`` at a time. A host that failed transiently (unreachable,
    timing out, 5xx after retries) is not asked again in this run: one timeout per host, not per image.
    """
    from multibake.registry.connect import parse
    from multibake.retry import Transient

    reads = _Reads(held={}, failed={})
    down: set[str] = set()
    lock = threading.Lock()

    def read(ref: str) -> None:
        host = parse(ref).host
        with lock:
            if host in down:
                reads.failed[host].refs.append(ref)
                return
        try:
            got = published_platforms(reg, ref)
        except (BuildError, ValueError, KeyError) as exc:
            with lock:
                refs_of_host = reads.failed.setdefault(host, _HostFailure(str(exc), [])).refs
                refs_of_host.append(ref)
                if isinstance(exc.__cause__, Transient):
                    down.add(host)
            return
        with lock:
            reads.held[ref] = got

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(refs)))) as pool:
        list(pool.map(read, refs))
    return reads


def problems(plan: Plan, bases: Mapping[str, CellBases], held: Mapping[str, frozenset[str] | None]) -> list[str]:
    """What makes a build impossible: a missing base, or a platform a base (or plan parent) lacks."""
    out: list[str] = []
    for cb in bases.values():
        missing: dict[tuple[str, str | None], list[str]] = {}  # (ref, parent) → platforms it lacks
        for need in cb.needs:
            if need.parent is not None:
                ok = need.platform is None or need.platform in plan.cell(need.parent).platforms
            else:
                key = canonical_ref(need.ref)
                if key not in held:
                    continue  # not read (its registry was unreachable): warned about already
                if held[key] is None:
                    out.append(f"cell {cb.target}: base image {need.ref} ({cb.dockerfile}:{need.line}) does not exist")
                    break
                published = held[key] or frozenset()
                ok = need.platform is None or covers(published, need.platform)
            if not ok and need.platform is not None:
                lacking = missing.setdefault((need.ref, need.parent), [])
                if need.platform not in lacking:
                    lacking.append(need.platform)
        for (ref, parent), plats in missing.items():
            what = f"its parent {parent} ({ref}) is not planned for" if parent else f"its base {ref} does not publish"
            out.append(f"cell {cb.target}: {what} {', '.join(plats)}")
    return out


def preflight(plan: Plan, bases: Mapping[str, CellBases], reg: Registry, say: Echo) -> None:
    """Refuse (exit 2) a plan whose bases are missing or lack a planned platform; warn on unreadable hosts."""
    refs = sorted({canonical_ref(n.ref) for cb in bases.values() for n in cb.needs if n.parent is None})
    reads = read_all(reg, refs) if refs else _Reads(held={}, failed={})
    for host, failure in sorted(reads.failed.items()):
        reason, unread = failure.reason, failure.refs
        say(
            f"multibake: warning: could not read {len(unread)} base image(s) from {host}, "
            f"their platforms are not checked: {reason}"
        )
    found = problems(plan, bases, reads.held)
    if found:
        lines = "\n".join(found[:20]) + (f"\n… and {len(found) - 20} more" if len(found) > 20 else "")
        raise UsageError(f"preflight: {lines}\n  {HINT}")
