"""Resolve, the first step of a release: the options a user gave, resolved into the plan to build.

The lock, the selection, a shard or some platforms, the build-id and base labels, attestations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from multibake import platforms as arch
from multibake.bake import run as bake
from multibake.errors import UsageError
from multibake.kinds import Mode, NodeLoss, Split
from multibake.plan import attest, buildid, planner
from multibake.plan.model import Plan
from multibake.plan.transforms import map_attest, restrict, select, with_labels
from multibake.preflight import bases
from multibake.release import shards

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildOptions:
    """``multibake build``'s options, as given."""

    config: Path
    registry: str | None = None
    selectors: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    push: bool = False
    load: bool = False
    output: str | None = None
    builder: str | None = None
    sets: tuple[str, ...] = ()  # target.key=value
    keep_going: bool = False
    dry_run: bool = False
    shard: str | None = None
    lock: Path | None = None
    result_dir: Path = Path(".multibake/shards")
    skip_existing: bool = False
    preflight: bool = True  # check every base image's platforms in the registry before building
    attest: tuple[str, ...] = ()  # provenance=min|max|off, sbom=on|off|generator=IMAGE: beat platforms.yaml's attest:
    on_node_loss: NodeLoss | None = None  # beats builder.on_node_loss of platforms.yaml
    sign: bool | None = None  # --sign / --no-sign: beats platforms.yaml's sign:


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """What this run builds: the selected plan, narrowed to a shard or to platforms, and how."""

    release: shards.Resolved
    plan: Plan
    ids: Mapping[str, str]  # target → build id, from the whole release
    mode: Mode
    sets: Mapping[str, str]
    shard: shards.Shard | None = None
    members: frozenset[str] = frozenset()  # a shard's own cells


@dataclass(frozen=True, kw_only=True, slots=True)
class Todo:
    """What is left to build once published cells are set aside."""

    plan: Plan
    up_to_date: tuple[bake.CellResult, ...] = ()


def _mode(opts: BuildOptions) -> Mode:
    modes = [m for m, on in ((Mode.PUSH, opts.push), (Mode.LOAD, opts.load), (Mode.OUTPUT, opts.output)) if on]
    if len(modes) > 1:
        raise UsageError("choose one of --push, --load and --output")
    return modes[0] if modes else Mode.CACHE


def _sets(items: tuple[str, ...]) -> dict[str, str]:
    sets: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise UsageError(f"--set {item!r}: expected target.key=value")
        sets[key] = value
    return sets


def attest_option(items: tuple[str, ...]) -> attest.Choice:
    """``--attest provenance=min|max|off``, ``--attest sbom=on|off|generator=IMAGE`` (the last of each wins)."""
    return attest.parse_option(items)


def resolve(opts: BuildOptions) -> Target:
    """Resolve: the plan (from the lock, when given), selected, narrowed to a shard or to platforms."""
    mode, sets, chosen = _mode(opts), _sets(opts.sets), attest_option(opts.attest)
    release = shards.resolve(opts.config, opts.registry, opts.lock, check_files=True)
    p = select(release.plan, list(opts.selectors))
    # build ids describe the release, not a shard of it or a --platform subset: computed from the full plan
    ids = buildid.compute(p, release.loaded.root)
    target = Target(release=release, plan=p, ids=ids, mode=mode, sets=sets)
    if opts.shard is not None:
        target = _shard(target, opts.shard, opts.selectors)
    if opts.platforms:
        target = replace(target, plan=_platforms(target, opts.platforms))
    labels = {t: (buildid.LABEL, i) for t, i in ids.items()}
    p = with_labels(target.plan, labels)
    p = with_labels(p, bases.base_labels(p, release.loaded.root, sets))
    if chosen != attest.Choice():  # like --set, the command line is not part of the plan a lock pins
        epoch = attest.epoch(release.meta.created)
        p = map_attest(p, lambda cell: attest.overridden(cell.attest, chosen, epoch))
    return replace(target, plan=p)


def _shard(target: Target, spec: str, selectors: tuple[str, ...]) -> Target:
    if target.mode is not Mode.PUSH:
        raise UsageError("--shard stages a slice of a release in the registry: add --push")
    shard = shards.parse_shard(spec, target.plan)
    if shard.kind is Split.PLATFORM:
        # every cell built one target per platform, this platform only; publish merges them
        release = target.release
        split = select(planner.plan(release.loaded, release.meta, split_all=True), list(selectors))
        p = restrict(split, [shard.value])
    else:
        p = select(target.plan, [shard.value])
    return replace(target, plan=p, shard=shard, members=frozenset(shards.shard_members(shard, p)))


def _platforms(target: Target, spellings: tuple[str, ...]) -> Plan:
    wanted = []
    for spelling in spellings:
        try:
            wanted.append(arch.normalize(spelling))
        except ValueError as exc:
            raise UsageError(f"--platform {spelling}: {exc}") from exc
    if target.mode is Mode.PUSH:
        raise UsageError(
            "--platform with --push would publish multi-arch tags missing platforms; "
            "build all planned platforms, shard the release (--shard platform=P), or build without --push"
        )
    p = restrict(target.plan, wanted)
    if not p.cells:
        raise UsageError(f"no selected cell is planned for {', '.join(wanted)}")
    return p
