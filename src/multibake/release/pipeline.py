"""A release as a short pipeline of named steps, each taking and returning plain frozen data.

``build``: resolve the plan and lock → skip what is published → write the bake file → check the
bases → builder preflight → bake → stage (a shard) or promote → verify → record. ``publish``
merges shard results and promotes; ``verify`` reads the registry back. The CLI builds the options,
calls one of these and renders the result; docker, the registry API, sleep and the output are
injected (``Tools``), so every path runs in tests without docker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from multibake import preload
from multibake.bake import hcl as render
from multibake.bake import invocation
from multibake.bake import run as bake
from multibake.bake.run import restatus
from multibake.config.nodes import BuilderSpec, placement
from multibake.config.upkeep import Limit, parse_limit
from multibake.docker import Client
from multibake.errors import BuildError
from multibake.kinds import Echo, Mode, NodeLoss, Placement, Status, Step
from multibake.plan import buildid, paths
from multibake.plan.model import Plan
from multibake.plan.transforms import select, select_targets, without
from multibake.preflight import bases, nodes
from multibake.preflight.builder import BuilderInfo, check_builder, inspect_builder, unasked
from multibake.registry.client import HTTP_LIBRARIES, Registry
from multibake.release import gate as size_gate
from multibake.release import nodeloss, publish, shards, signing
from multibake.release.dryrun import DryRun, dry_run
from multibake.release.publish import TagCheck
from multibake.release.recording import Journal, record
from multibake.release.resolve import BuildOptions, Target, Todo, resolve
from multibake.release.signing import Signing, signature_ref
from multibake.release.sigverify import check_signatures
from multibake.release.timing import Stopwatch
from multibake.release.tools import Tools, _policy, budget, logged_in, registry_for
from multibake.retry import RetryPolicy


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
    """The release, step by step; the report says how long each step took."""
    watch = Stopwatch(tools.started)
    target = resolve(opts)
    with (
        logged_in(tools, target.release.plan.registry) as with_login,
        signing.for_release(opts, target, with_login) as signs,
    ):
        built = _build(opts, with_login, target, watch, signs)
    if built.report is None:
        return built
    return replace(built, report=replace(built.report, steps=watch.steps(tools.startup)))


def _build(opts: BuildOptions, tools: Tools, target: Target, watch: Stopwatch, signs: Signing | None = None) -> Built:
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
    watch.lap(Step.PLAN)
    if not todo.plan.cells and target.shard is None:  # all up to date: no builder to ask, nothing to bake
        return Built(
            ok=True, report=bake.BuildReport(builder=unasked(opts.builder), mode=target.mode, cells=todo.up_to_date)
        )
    shown = check_bases(target, todo, tools, check=opts.preflight)
    docker = tools.docker()
    preload.later(*HTTP_LIBRARIES)  # what promote and verify use, imported while the builder answers and bake runs
    if configured is None:
        report = execute(docker, todo.plan, req, tools, policy, watch=watch)
    else:
        if opts.on_node_loss is not None:
            configured = configured.model_copy(update={"on_node_loss": opts.on_node_loss})
        report = on_nodes(OnNodes(docker=docker, spec=configured, target=target, opts=opts, tools=tools), todo, policy)
    report = replace(report, cells=todo.up_to_date + report.cells, bases=shown)
    watch.lap(Step.BAKE)
    if target.shard is not None:
        staged = stage(target, todo.plan, report, reg, result_dir=opts.result_dir, say=tools.say)
        watch.lap(Step.PROMOTE)
        return staged
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
            watch=watch,
            signing=signs,
        )
    return Built(ok=report.ok, report=report)


def execute(
    docker: Client,
    plan: Plan,
    req: invocation.Request,
    tools: Tools,
    policy: RetryPolicy,
    *,
    gone: Callable[[], str | None] | None = None,
    watch: Stopwatch | None = None,
) -> bake.BuildReport:
    """Builder preflight, then the bake runs, followed."""
    info = preflight(docker, plan, req.builder, tools.say)
    if watch is not None:
        watch.lap(Step.PREFLIGHT)
    with tools.watch(plan, info.nodes) as followed:
        runner = followed(tools.bake_runner(docker))
        workdir = req.bake_file.parent
        return bake.execute(runner, plan, req, builder=info, policy=policy, echo=tools.echo, workdir=workdir, gone=gone)


@dataclass(frozen=True, kw_only=True, slots=True)
class OnNodes:
    """A build on the builder of platforms.yaml: what it needs beyond the plan."""

    docker: Client
    spec: BuilderSpec
    target: Target
    opts: BuildOptions
    tools: Tools


def on_nodes(run: OnNodes, todo: Todo, policy: RetryPolicy) -> bake.BuildReport:
    """Bake on the configured builder; a node lost on the way is named, and with ``on_node_loss:
    emulate`` the cells it failed are built again on the remaining nodes (their platforms emulated)."""
    buildx = run.tools.buildx(run.docker)
    spec = nodes.ensure(buildx, run.spec, todo.plan, run.tools.say)
    req = write_bake_file(run.target, todo, replace(run.opts, builder=spec.name))
    gone = nodeloss.watcher(spec, buildx)
    first = execute(run.docker, todo.plan, req, run.tools, policy, gone=gone)
    report, lost = nodeloss.blame(first, spec, buildx, run.tools.say)
    if lost and spec.on_node_loss is NodeLoss.EMULATE:
        spec = nodes.emulating(spec, lost, run.tools.say)
        staged = {c.target: report.pushed[c.target] for c in report.cells if c.status.ok and c.target in report.pushed}
        again = Todo(plan=without(todo.plan, staged))
        spec = nodes.ensure(buildx, spec, again.plan, run.tools.say)
        req = write_bake_file(run.target, again, replace(run.opts, builder=spec.name))
        report = nodeloss.merged(
            report, execute(run.docker, again.plan, req, run.tools, policy, gone=nodeloss.watcher(spec, buildx))
        )
    return replace(report, placement={p: (n.name, emu) for p, (n, emu) in placement(spec).items()})


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
    report = replace(report, cells=tuple(restatus(c, {Status.BUILT: Status.STAGED}) for c in report.cells))
    return Built(ok=not failed, report=report)  # a shard's cells end "staged": publish --from makes them public


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
    watch: Stopwatch | None = None,
    signing: Signing | None = None,
) -> Built:
    """Promote, then verify: sign and point public tags at the complete staged indexes, then read every one back.

    With a size ``gate``, a cell whose images grew past it is not published: with ``partial`` the
    others are, else none (no tag moves).
    """
    watch = watch or Stopwatch()
    sources = publish.local_sources(plan, report)
    grown = size_gate.said(reg, plan, sources, gate, say)
    if grown and not partial:
        return Built(ok=False, report=size_gate.held_back(report, grown, gate))
    try:
        kept = {t: s for t, s in sources.items() if t not in grown}
        published = publish.promote(reg, plan, kept, partial=partial, detach=detach, signing=signing)
    except BuildError as exc:  # the registry failed past every retry while tags moved: say so in the report
        why = f"publishing: {exc} ({RERUN})"
        say(f"multibake: {why}")
        failed = tuple(restatus(cell, {Status.BUILT: Status.FAILED}, why) for cell in report.cells)
        return Built(ok=False, report=replace(report, cells=failed))
    watch.lap(Step.PROMOTE)
    if count := sum(len(images) for images in published.signed.values()):
        say(f"multibake: {count} image(s) signed with cosign before their tags moved (build --json: signatures)")
    for why in published.held_back.values():  # one line naming the image; the cells' errors say it too
        if why.startswith("signing "):
            say(f"multibake: {why}; no public tag moved")
    checks = publish.verify(select_targets(plan, published.promoted), reg)
    if journal_to is not None:
        record(journal_to, published, checks, say)
    watch.lap(Step.VERIFY)
    indexes = {check.ref: check for check in checks if check.is_index}
    for target, why in published.failed.items():
        say(f"multibake: {target}: publishing: {why} ({RERUN})")
    cells = [
        replace(
            _published(cell, indexes.get(cell.tags[0]), cell.target in published.unchanged),
            signed=tuple((i, signature_ref(i)) for i in published.signed.get(cell.target, ())),
        )
        if cell.target in published.promoted
        else _not_promoted(cell, published)
        for cell in report.cells
    ]
    bad = [check for check in checks if not check.ok]
    for check in bad:
        say(f"multibake: verify: {check.ref}: {check.problem}")
    refused = any(why.startswith("signing ") for why in published.held_back.values())
    ok = report.ok and not bad and not published.failed and not refused  # refused signing: no tag moved, failed
    return Built(ok=ok, report=replace(report, cells=tuple(cells)))


RERUN = "every tag is on a whole index, old or new: rerun to finish"


def _not_promoted(cell: bake.CellResult, published: publish.Published) -> bake.CellResult:
    """A cell whose tags this release did not (all) move: failed on the registry, or held back staged."""
    if cell.target in published.failed:
        why = f"publishing: {published.failed[cell.target]} ({RERUN})"
        return restatus(cell, {Status.BUILT: Status.FAILED}, why)
    return restatus(cell, {Status.BUILT: Status.STAGED}, published.held_back.get(cell.target))


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
        tools.say(f"multibake: publishing: {exc} ({RERUN})")
        return Checked(ok=False, checks=tuple(publish.verify(release.plan, reg)))
    for target, why in published.held_back.items():
        tools.say(f"multibake: {target}: {why}")
    for target, why in published.failed.items():
        tools.say(f"multibake: {target}: publishing: {why} ({RERUN})")
    checks = publish.verify(release.plan, reg)
    if not published.held_back:
        try:  # the build ids of the checkout publish runs in, when it holds every build context
            ids = buildid.compute(release.plan, release.loaded.root)
        except OSError:
            ids = {}
        record(Journal(release=release, ids=ids), published, checks, tools.say)
    ok = not published.held_back and not published.failed and all(c.ok for c in checks)
    return Checked(ok=ok, checks=tuple(checks))


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
