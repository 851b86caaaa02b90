"""A release as a short pipeline of named steps, each taking and returning plain frozen data.

``build``: resolve the plan and lock → skip what is published → write the bake file → check the
bases → builder preflight → bake → stage (a shard) or promote → verify → record. ``publish``
merges shard results and promotes; ``verify`` reads the registry back. The CLI builds the options,
calls one of these and renders the result; docker, the registry API, sleep and the output are
injected (``Tools``), so every path runs in tests without docker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from multibake.bake import hcl as render
from multibake.bake import invocation
from multibake.bake import run as bake
from multibake.config.nodes import BuilderSpec
from multibake.config.upkeep import Limit, parse_limit
from multibake.errors import BuildError, UsageError
from multibake.kinds import Echo, Mode, Placement, Status
from multibake.plan import buildid, paths
from multibake.plan.model import Plan
from multibake.plan.transforms import select, select_targets, without
from multibake.preflight import bases, nodes
from multibake.preflight.builder import BuilderInfo, check_builder, inspect_builder
from multibake.registry.client import Registry
from multibake.release import gate as size_gate
from multibake.release import journal, publish, shards, signing
from multibake.release.publish import TagCheck
from multibake.release.resolve import BuildOptions, Target, Todo, resolve
from multibake.release.signing import Signing, signature_ref
from multibake.release.sigverify import check_signatures
from multibake.release.tools import Tools, _policy, budget, logged_in, registry_for

if TYPE_CHECKING:
    from multibake.docker import Client


@dataclass(frozen=True, kw_only=True, slots=True)
class DryRun:
    bake_file: str  # its text
    command: str  # `cd ROOT && docker buildx bake …`
    builder_commands: tuple[str, ...] = ()  # `docker buildx create …` of a configured builder, from nothing


@dataclass(frozen=True, kw_only=True, slots=True)
class Built:
    """How a build ended: its report (None for a dry run) and whether it succeeded."""

    ok: bool
    report: bake.BuildReport | None = None
    dry_run: DryRun | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Checked:
    ok: bool
    checks: tuple[TagCheck, ...] | None  # None: refused before anything was checked


def build(opts: BuildOptions, tools: Tools) -> Built:
    """The release, step by step."""
    target = resolve(opts)
    with logged_in(tools, target.release.plan.registry) as with_login, _signing(opts, target, with_login) as signs:
        return _build(opts, with_login, target, signs)


@contextlib.contextmanager
def _signing(opts: BuildOptions, target: Target, tools: Tools) -> Iterator[Signing | None]:
    """A release that pushes public tags signs them (a shard only stages: ``publish --from`` signs)."""
    if opts.sign and target.mode is not Mode.PUSH:
        raise UsageError("--sign signs what a release publishes: add --push")
    if target.mode is not Mode.PUSH or opts.dry_run or target.shard is not None:
        yield None
        return
    with signing.prepared(
        target.release.loaded, _policy(target.release, tools), tools.cosign, tools.login, forced=opts.sign
    ) as s:
        yield s


def _build(opts: BuildOptions, tools: Tools, target: Target, signs: Signing | None = None) -> Built:
    # the steps, in order; each takes and returns frozen data (Target, Todo, Request, BuildReport, Built)
    policy = _policy(target.release, tools)
    if target.mode is Mode.PUSH and not opts.dry_run:
        tools.say(budget(target.release.loaded.config.retry))
    reg = registry_for(target.release, tools)
    todo = skip_published(target, reg, tools.say) if opts.skip_existing else Todo(plan=target.plan)
    # builder: in platforms.yaml, unless --builder names another (whose nodes are then left alone)
    configured = None if opts.builder else target.release.loaded.config.builder
    if configured is not None:
        nodes.check_coverage(configured, todo.plan)
        opts = replace(opts, builder=configured.name)
    req = write_bake_file(target, todo, opts)
    if opts.dry_run:
        return Built(ok=True, dry_run=dry_run(todo, req, configured))
    shown = check_bases(target, todo, tools, check=opts.preflight)
    docker = tools.docker()
    if configured is not None:
        nodes.ensure(tools.buildx(docker), configured, todo.plan, tools.say)
    info = preflight(docker, todo.plan, opts.builder, tools.say)
    workdir = req.bake_file.parent
    with tools.watch(todo.plan, info.nodes) as followed:
        runner = followed(tools.bake_runner(docker))
        report = bake.execute(runner, todo.plan, req, builder=info, policy=policy, echo=tools.echo, workdir=workdir)
    report = replace(report, cells=todo.up_to_date + report.cells, bases=shown)
    if target.shard is not None:
        return stage(target, todo.plan, report, reg, result_dir=opts.result_dir, say=tools.say)
    if target.mode is Mode.PUSH:
        recorded = Journal(release=target.release, ids=target.ids)
        limit = target.release.loaded.config.gate.max_growth
        gated = parse_limit(limit) if limit else None
        detach = target.release.loaded.config.attest.placement is Placement.REFERRERS
        return promote(
            todo.plan,
            report,
            reg,
            tools.say,
            partial=opts.keep_going,
            journal_to=recorded,
            gate=gated,
            detach=detach,
            signing=signs,
        )
    return Built(ok=report.ok, report=report)


def skip_published(target: Target, reg: Registry, say: Echo) -> Todo:
    """Skip what is published (--skip-existing): set aside the cells whose published image carries their build id."""
    found = publish.already_published(reg, target.plan, target.ids)
    skipped = [c for c in target.plan.cells if c.target in found]
    for c in skipped:
        say(f"multibake: {c.target} is up to date ({found[c.target]})")
    return Todo(
        plan=without(target.plan, found),
        up_to_date=tuple(bake.up_to_date(c, found[c.target]) for c in skipped),
    )


def write_bake_file(target: Target, todo: Todo, opts: BuildOptions) -> invocation.Request:
    """Write the bake file, in a work directory of its own (shards may share a checkout)."""
    loaded = target.release.loaded
    workdir = loaded.root / ".multibake" / "build" / (target.shard.id if target.shard else "all")
    workdir.mkdir(parents=True, exist_ok=True)
    bake_file = workdir / "docker-bake.hcl"
    text = render.render_hcl(todo.plan, Path(loaded.file).name, staged=target.mode is Mode.PUSH)
    bake_file.write_text(text, encoding="utf-8")
    return invocation.Request(
        bake_file=bake_file,
        root=loaded.root,
        mode=target.mode,
        output=opts.output,
        sets=target.sets,
        builder=opts.builder,
        keep_going=opts.keep_going,
        allow=paths.entitlements(loaded, todo.plan),
        rewrite_timestamp=loaded.config.reproducible,
    )


def dry_run(todo: Todo, req: invocation.Request, builder: BuilderSpec | None = None) -> DryRun:
    argv = invocation.command_line(todo.plan, req, bake.bake_targets(todo.plan))
    return DryRun(
        bake_file=req.bake_file.read_text(encoding="utf-8"),
        command=f"cd {req.root} && " + " ".join(argv),
        builder_commands=nodes.dry_run_lines(builder) if builder else (),
    )


def check_bases(target: Target, todo: Todo, tools: Tools, *, check: bool) -> dict[str, str]:
    """Check the bases: each cell's base images; refused (exit 2, nothing built) when one lacks a planned platform.

    Returns target → the base each platform builds on, for the summary. ``check=False``
    (``--no-preflight``) reads no registry.
    """
    loaded = target.release.loaded
    found = bases.plan_bases(todo.plan, loaded.root, target.sets, strict=check)
    if check:
        reg = bases.preflight_registry(tools.api, loaded.config.retry, tools.sleep, tools.echo)
        bases.preflight(todo.plan, found, reg, tools.say)
    return {t: bases.shown(cb) for t, cb in found.items()}


def preflight(docker: Client, plan: Plan, builder: str | None, say: Echo) -> BuilderInfo:
    """Builder preflight: the builder, and a refusal (exit 2, nothing built) when it cannot run the plan."""
    info = inspect_builder(docker, builder)
    say(f"buildx {info.buildx_version}, builder {info.name} ({info.driver}), platforms: {', '.join(info.platforms)}")
    check_builder(info, plan)
    return info


def stage(target: Target, plan: Plan, report: bake.BuildReport, reg: Registry, *, result_dir: Path, say: Echo) -> Built:
    """Stage, for a shard: its cells stay staged; a result file says where, for ``publish --from``."""
    assert target.shard is not None
    cells, failed = publish.staged_refs(reg, plan, set(target.members), report)
    result_dir.mkdir(parents=True, exist_ok=True)
    out_file = result_dir / f"{target.shard.id}.json"
    shards.write_result(target.shard, shards.plan_digest(target.release.plan), cells, failed, out_file)
    say(f"multibake: shard {target.shard}: {len(cells)} cells staged, result in {out_file}")
    report = replace(report, cells=tuple(_restatus(c, {Status.BUILT: Status.STAGED}) for c in report.cells))
    return Built(ok=not failed, report=report)  # a shard's cells end "staged": publish --from makes them public


def _restatus(cell: bake.CellResult, change: Mapping[Status, Status], error: str | None = None) -> bake.CellResult:
    if cell.status not in change:
        return cell
    return replace(cell, status=change[cell.status], error=error if error is not None else cell.error)


@dataclass(frozen=True, kw_only=True, slots=True)
class Journal:
    """What a release's journal entry says besides its tags (journal.py)."""

    release: shards.Resolved
    ids: Mapping[str, str] = field(default_factory=dict)  # target → build id


def record(journal_to: Journal, published: publish.Published, checks: list[TagCheck], say: Echo) -> None:
    """Record: write the release into the journal (for ``diff --previous``) when it moved a tag.

    A tag the release did not move pointed before at what it points at now. A journal that cannot be
    written costs a warning, never the release.
    """
    after = {check.ref: check.digest for check in checks}
    before = {ref: published.before.get(ref, digest) for ref, digest in after.items()}
    meta = journal_to.release.meta
    entry = journal.release_of(
        registry=journal_to.release.plan.registry,
        config=journal_to.release.loaded.file,
        tags=checks,
        before=before,
        after=after,
        revision=meta.revision,
        created=meta.created,
        build_ids={t: i for t, i in journal_to.ids.items() if t in published.promoted},
    )
    try:
        written = journal.record(journal_to.release.loaded.root, entry)
    except OSError as exc:
        say(f"multibake: warning: the release journal was not written: {exc}")
        return
    if written is not None:
        say(f"multibake: {len(entry.moved)} tag(s) moved; recorded in {written} (multibake diff --previous)")


def promote(
    plan: Plan,
    report: bake.BuildReport,
    reg: Registry,
    say: Echo,
    *,
    partial: bool,
    journal_to: Journal | None = None,
    gate: Limit | None = None,
    detach: bool = False,
    signing: Signing | None = None,
) -> Built:
    """Promote, then verify: sign and point public tags at the complete staged indexes, then read every one back.

    With a size ``gate``, a cell whose images grew past it is not published: with ``partial`` the
    others are, else none (no tag moves).
    """
    sources = publish.local_sources(plan, report)
    grown = _size_gate(reg, plan, sources, gate, say)
    if grown and not partial:
        return Built(ok=False, report=_held_by_gate(report, grown, gate))
    try:
        kept = {t: s for t, s in sources.items() if t not in grown}
        published = publish.promote(reg, plan, kept, partial=partial, detach=detach, signing=signing)
    except BuildError as exc:  # the registry failed past every retry while tags moved: say so in the report
        why = f"publishing: {exc} (every tag is on a whole index, old or new: rerun to finish)"
        say(f"multibake: {why}")
        failed = tuple(_restatus(cell, {Status.BUILT: Status.FAILED}, why) for cell in report.cells)
        return Built(ok=False, report=replace(report, cells=failed))
    if count := sum(len(images) for images in published.signed.values()):
        say(f"multibake: {count} image(s) signed with cosign before their tags moved (build --json: signatures)")
    for why in published.held_back.values():  # one line naming the image; the cells' errors say it too
        if why.startswith("signing "):
            say(f"multibake: {why}; no public tag moved")
    checks = publish.verify(select_targets(plan, published.promoted), reg)
    if journal_to is not None:
        record(journal_to, published, checks, say)
    indexes = {check.ref: check for check in checks if check.is_index}
    cells = [
        replace(
            _published(cell, indexes.get(cell.tags[0]), cell.target in published.unchanged),
            signed=tuple((i, signature_ref(i)) for i in published.signed.get(cell.target, ())),
        )
        if cell.target in published.promoted
        else _restatus(cell, {Status.BUILT: Status.STAGED}, published.held_back.get(cell.target))
        for cell in report.cells
    ]
    bad = [check for check in checks if not check.ok]
    for check in bad:
        say(f"multibake: verify: {check.ref}: {check.problem}")
    refused = any(why.startswith("signing ") for why in published.held_back.values())
    ok = report.ok and not bad and not refused  # a release whose signing was refused moved no tag: it failed
    return Built(ok=ok, report=replace(report, cells=tuple(cells)))


def _size_gate(
    reg: Registry, plan: Plan, sources: Mapping[str, list[str]], gate: Limit | None, say: Echo
) -> dict[str, list[size_gate.Breach]]:
    """Cells whose staged images grew past the gate, each breach said (image, platform, sizes, layers)."""
    grown = size_gate.staged(reg, plan, sources, gate) if gate is not None else {}
    for found in grown.values():
        for breach in found:
            say(f"multibake: size gate: {breach.describe()}")
    return grown


def _held_by_gate(report: bake.BuildReport, grown: Mapping[str, object], gate: Limit | None) -> bake.BuildReport:
    """A release the gate stopped: the cells that grew failed, the others staged; no tag moved."""
    limit = gate.text if gate is not None else ""
    why = f"held back: the size gate stopped the release ({', '.join(sorted(grown))} grew past {limit})"
    cells = tuple(
        _restatus(c, {Status.BUILT: Status.FAILED if c.target in grown else Status.STAGED}, why) for c in report.cells
    )
    return replace(report, cells=cells)


def _published(cell: bake.CellResult, first: TagCheck | None, unchanged: bool) -> bake.CellResult:
    status = Status.UNCHANGED if unchanged else Status.PUBLISHED
    if first is None:
        return replace(cell, status=status)
    sizes = {size.platform: size for size in first.sizes}
    return replace(cell, status=status, digest=first.digest, platform_digests=dict(first.platforms), sizes=sizes)


def publish_shards(
    config: Path, registry: str | None, lock: Path | None, results: tuple[Path, ...], tools: Tools
) -> Checked:
    """Merge shard results into indexes and public tags, all or nothing, then verify."""
    release = shards.resolve(config, registry, lock, check_files=False)
    with (
        logged_in(tools, release.plan.registry) as with_login,
        signing.prepared(release.loaded, _policy(release, with_login), with_login.cosign, with_login.login) as signs,
    ):
        return _publish_shards(release, results, with_login, signs)


def _publish_shards(
    release: shards.Resolved, results: tuple[Path, ...], tools: Tools, signs: Signing | None = None
) -> Checked:
    sources, problems = shards.merge(list(results), release.plan, shards.plan_digest(release.plan))
    if problems:
        for line in problems:
            tools.say(f"multibake: {line}")
        tools.say("multibake: the release is incomplete, so no public tag was changed")
        return Checked(ok=False, checks=None)
    reg = registry_for(release, tools)
    try:
        detach = release.loaded.config.attest.placement is Placement.REFERRERS
        published = publish.promote(reg, release.plan, sources, partial=False, detach=detach, signing=signs)
    except BuildError as exc:  # the registry failed past every retry while tags moved: still a report
        tools.say(f"multibake: publishing: {exc} (every tag is on a whole index, old or new: rerun to finish)")
        return Checked(ok=False, checks=tuple(publish.verify(release.plan, reg)))
    for target, why in published.held_back.items():
        tools.say(f"multibake: {target}: {why}")
    checks = publish.verify(release.plan, reg)
    if not published.held_back:
        try:  # the build ids of the checkout publish runs in, when it holds every build context
            ids = buildid.compute(release.plan, release.loaded.root)
        except OSError:
            ids = {}
        record(Journal(release=release, ids=ids), published, checks, tools.say)
    return Checked(ok=not published.held_back and all(c.ok for c in checks), checks=tuple(checks))


def verify(config: Path, registry: str | None, selectors: tuple[str, ...], tools: Tools) -> Checked:
    """Read every planned tag back from the registry."""
    release = shards.resolve(config, registry, None, check_files=False)
    plan = select(release.plan, list(selectors))
    with (
        logged_in(tools, release.plan.registry) as with_login,
        signing.prepared(
            release.loaded, _policy(release, with_login), with_login.cosign, with_login.login, verifying=True
        ) as signs,
    ):
        reg = registry_for(release, with_login)
        checks = publish.verify(plan, reg)
        if signs is not None:
            checks = check_signatures(plan, checks, signs, tools.say)
    return Checked(ok=all(c.ok for c in checks), checks=tuple(checks))
