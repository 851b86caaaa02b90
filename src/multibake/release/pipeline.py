"""A release as a short pipeline of named steps, each taking and returning plain frozen data.

``build``: resolve the plan and lock → skip what is published → write the bake file → preflight
→ bake → stage (a shard) or promote → verify. ``publish`` merges shard results and promotes;
``verify`` reads the registry back. The CLI builds the options, calls one of these and renders the
result; docker, the registry API, sleep and the output are injected (``Tools``), so every path runs
in tests without docker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from multibake import docker as door
from multibake import platforms as arch
from multibake.bake import display, invocation
from multibake.bake import hcl as render
from multibake.bake import run as bake
from multibake.config.nodes import BuilderSpec
from multibake.config.schema import Retry
from multibake.docker import Runner
from multibake.errors import BuildError, UsageError
from multibake.kinds import Mode, Provenance, Split, Status
from multibake.plan import buildid, paths, planner
from multibake.plan.model import Plan
from multibake.plan.pieces import attest_specs
from multibake.preflight import bases, nodes
from multibake.preflight.builder import BuilderInfo, check_builder, inspect_builder
from multibake.registry import auth
from multibake.registry.client import Api, Http, Registry
from multibake.release import journal, publish, shards
from multibake.release.publish import TagCheck
from multibake.retry import RetryPolicy

if TYPE_CHECKING:
    from multibake.docker import Client

Echo = Callable[[str], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Tools:
    """What a release talks to; tests pass fakes."""

    docker: Callable[[], Client]  # made only when something is about to run docker
    echo: Echo  # buildx's progress and multibake's running commentary
    say: Echo  # messages that are always shown (stderr)
    watch: display.Watch = display.unwatched  # follows the bake runs: a live table, "still running" lines
    sleep: Callable[[float], None] = time.sleep
    api: Api = field(default_factory=Http)  # the registry API
    bake_runner: Callable[[Client], Runner] = door.streaming  # how a bake argv is run
    buildx: Callable[[Client], nodes.Buildx] = nodes.WhalesBuildx  # a configured builder's create/inspect
    configured: Callable[[Client, Path], Client] = door.with_config  # the client on another DOCKER_CONFIG
    login_runner: auth.Runner = door.run_with_input  # runs `docker login --password-stdin`


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
    attest: tuple[str, ...] = ()  # provenance=min|max|off: beats platforms.yaml's attest:


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


@contextlib.contextmanager
def logged_in(tools: Tools, registry: str) -> Iterator[Tools]:
    """``tools`` using $MULTIBAKE_REGISTRY_USER/PASSWORD for ``registry``'s host, when they are set.

    The registry client takes them as they are; docker is logged in when first needed, into a
    DOCKER_CONFIG private to this run and removed when the block ends (auth.py).
    """
    login = auth.from_env(registry)
    if login is None:
        yield tools
        return
    api = tools.api.with_login(login) if isinstance(tools.api, Http) else tools.api
    with contextlib.ExitStack() as stack:
        made: list[Client] = []

        def docker() -> Client:
            if not made:
                folder = stack.enter_context(auth.docker_config(login))
                client = tools.configured(tools.docker(), folder)
                auth.docker_login(tools.login_runner, door.command(client, ["docker"]), login)
                tools.say(f"multibake: docker logged in to {login.host} as {login.user} (${auth.USER_ENV})")
                made.append(client)
            return made[0]

        yield replace(tools, api=api, docker=docker)


def build(opts: BuildOptions, tools: Tools) -> Built:
    """The release, step by step."""
    target = resolve(opts)
    with logged_in(tools, target.release.plan.registry) as with_login:
        return _build(opts, with_login, target)


def _build(opts: BuildOptions, tools: Tools, target: Target) -> Built:
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
        return promote(todo.plan, report, reg, tools.say, partial=opts.keep_going, journal_to=recorded)
    return Built(ok=report.ok, report=report)


def budget(limits: Retry) -> str:
    """The retry budget, said before a release starts: how long a bad registry day can cost at most."""
    waits = (limits.attempts - 1) * limits.max_delay
    return (
        f"multibake: transient registry failures: up to {limits.attempts} attempts per step, waits up to "
        f"{limits.max_delay:g} s each ({waits:g} s in all), a stalled request gives up after {limits.timeout:g} s "
        "(retry: in platforms.yaml)"
    )


def _policy(release: shards.Resolved, tools: Tools) -> RetryPolicy:
    return RetryPolicy(limits=release.loaded.config.retry, sleep=tools.sleep, echo=tools.echo)


def registry_for(release: shards.Resolved, tools: Tools) -> Registry:
    """The release's registry client: its retries, and its per-request timeout (retry.timeout)."""
    limits = release.loaded.config.retry
    api = tools.api.with_timeout(limits.timeout) if isinstance(tools.api, Http) else tools.api
    return Registry(policy=_policy(release, tools), api=api)


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


def attest_option(items: tuple[str, ...]) -> Provenance | None:
    """``--attest provenance=min|max|off`` (the last one given wins); None when not given."""
    chosen = None
    for item in items:
        key, eq, value = item.partition("=")
        if key != "provenance" or not eq:
            raise UsageError(f"--attest {item!r}: expected provenance=min, provenance=max or provenance=off")
        try:
            chosen = Provenance(value)
        except ValueError:
            raise UsageError(f"--attest {item!r}: provenance is one of min, max, off") from None
    return chosen


def resolve(opts: BuildOptions) -> Target:
    """Step 1: the plan (from the lock, when given), selected, narrowed to a shard or to platforms."""
    mode, sets, provenance = _mode(opts), _sets(opts.sets), attest_option(opts.attest)
    release = shards.resolve(opts.config, opts.registry, opts.lock, check_files=True)
    p = planner.select(release.plan, list(opts.selectors))
    # build ids describe the release, not a shard of it or a --platform subset: computed from the full plan
    ids = buildid.compute(p, release.loaded.root)
    target = Target(release=release, plan=p, ids=ids, mode=mode, sets=sets)
    if opts.shard is not None:
        target = _shard(target, opts.shard, opts.selectors)
    if opts.platforms:
        target = replace(target, plan=_platforms(target, opts.platforms))
    labels = {t: (buildid.LABEL, i) for t, i in ids.items()}
    p = planner.with_labels(target.plan, labels)
    p = planner.with_labels(p, bases.base_labels(p, release.loaded.root, sets))
    if provenance is not None:  # like --set, the command line is not part of the plan a lock pins
        p = planner.with_attest(p, attest_specs(provenance))
    return replace(target, plan=p)


def _shard(target: Target, spec: str, selectors: tuple[str, ...]) -> Target:
    if target.mode is not Mode.PUSH:
        raise UsageError("--shard stages a slice of a release in the registry: add --push")
    shard = shards.parse_shard(spec, target.plan)
    if shard.kind is Split.PLATFORM:
        # every cell built one target per platform, this platform only; publish merges them
        release = target.release
        split = planner.select(planner.plan(release.loaded, release.meta, split_all=True), list(selectors))
        p = planner.restrict(split, [shard.value])
    else:
        p = planner.select(target.plan, [shard.value])
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
    p = planner.restrict(target.plan, wanted)
    if not p.cells:
        raise UsageError(f"no selected cell is planned for {', '.join(wanted)}")
    return p


def skip_published(target: Target, reg: Registry, say: Echo) -> Todo:
    """Step 2 (--skip-existing): set aside the cells whose published image carries their build id."""
    found = publish.already_published(reg, target.plan, target.ids)
    skipped = [c for c in target.plan.cells if c.target in found]
    for c in skipped:
        say(f"multibake: {c.target} is up to date ({found[c.target]})")
    return Todo(
        plan=planner.without(target.plan, found),
        up_to_date=tuple(bake.up_to_date(c, found[c.target]) for c in skipped),
    )


def write_bake_file(target: Target, todo: Todo, opts: BuildOptions) -> invocation.Request:
    """Step 3: the bake file, in a work directory of its own (shards may share a checkout)."""
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
    )


def dry_run(todo: Todo, req: invocation.Request, builder: BuilderSpec | None = None) -> DryRun:
    argv = invocation.command_line(todo.plan, req, bake.bake_targets(todo.plan))
    return DryRun(
        bake_file=req.bake_file.read_text(encoding="utf-8"),
        command=f"cd {req.root} && " + " ".join(argv),
        builder_commands=nodes.dry_run_lines(builder) if builder else (),
    )


def check_bases(target: Target, todo: Todo, tools: Tools, *, check: bool) -> dict[str, str]:
    """Step 4a: each cell's base images; refused (exit 2, nothing built) when one lacks a planned platform.

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
    """Step 4: the builder, and a refusal (exit 2, nothing built) when it cannot run the plan."""
    info = inspect_builder(docker, builder)
    say(f"buildx {info.buildx_version}, builder {info.name} ({info.driver}), platforms: {', '.join(info.platforms)}")
    check_builder(info, plan)
    return info


def stage(target: Target, plan: Plan, report: bake.BuildReport, reg: Registry, *, result_dir: Path, say: Echo) -> Built:
    """Step 5, for a shard: its cells stay staged; a result file says where, for ``publish --from``."""
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
    """Step 7: write the release into the journal (for ``diff --previous``) when it moved a tag.

    A tag the release did not move pointed before at what it points at now. A journal that cannot be
    written costs a warning, never the release.
    """
    after = {check.ref: check.digest for check in checks}
    before = {ref: published.before.get(ref, digest) for ref, digest in after.items()}
    meta = journal_to.release.meta
    entry = journal.release_of(
        registry=journal_to.release.plan.registry,
        config=journal_to.release.loaded.file,
        tags=[(check.ref, check.target, check.kind) for check in checks],
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
) -> Built:
    """Steps 5 and 6: point public tags at the complete staged indexes, then read every one back."""
    try:
        published = publish.promote(reg, plan, publish.local_sources(plan, report), partial=partial)
    except BuildError as exc:  # the registry failed past every retry while tags moved: say so in the report
        why = f"publishing: {exc} (every tag is on a whole index, old or new: rerun to finish)"
        say(f"multibake: {why}")
        failed = tuple(_restatus(cell, {Status.BUILT: Status.FAILED}, why) for cell in report.cells)
        return Built(ok=False, report=replace(report, cells=failed))
    checks = publish.verify(planner.select_targets(plan, published.promoted), reg)
    if journal_to is not None:
        record(journal_to, published, checks, say)
    indexes = {check.ref: check for check in checks if check.kind == "index"}
    cells = [
        _published(cell, indexes.get(cell.tags[0]), cell.target in published.unchanged)
        if cell.target in published.promoted
        else _restatus(cell, {Status.BUILT: Status.STAGED}, published.held_back.get(cell.target))
        for cell in report.cells
    ]
    bad = [check for check in checks if not check.ok]
    for check in bad:
        say(f"multibake: verify: {check.ref}: {check.problem}")
    return Built(ok=report.ok and not bad, report=replace(report, cells=tuple(cells)))


def _published(cell: bake.CellResult, first: TagCheck | None, unchanged: bool) -> bake.CellResult:
    status = Status.UNCHANGED if unchanged else Status.PUBLISHED
    if first is None:
        return replace(cell, status=status)
    sizes = {platform: (total, layers) for platform, total, layers in first.sizes}
    return replace(cell, status=status, digest=first.digest, platform_digests=dict(first.platforms), sizes=sizes)


def publish_shards(
    config: Path, registry: str | None, lock: Path | None, results: tuple[Path, ...], tools: Tools
) -> Checked:
    """Merge shard results into indexes and public tags, all or nothing, then verify."""
    release = shards.resolve(config, registry, lock, check_files=False)
    with logged_in(tools, release.plan.registry) as with_login:
        return _publish_shards(release, results, with_login)


def _publish_shards(release: shards.Resolved, results: tuple[Path, ...], tools: Tools) -> Checked:
    sources, problems = shards.merge(list(results), release.plan, shards.plan_digest(release.plan))
    if problems:
        for line in problems:
            tools.say(f"multibake: {line}")
        tools.say("multibake: the release is incomplete, so no public tag was changed")
        return Checked(ok=False, checks=None)
    reg = registry_for(release, tools)
    published = publish.promote(reg, release.plan, sources, partial=False)
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
    with logged_in(tools, release.plan.registry) as with_login:
        reg = registry_for(release, with_login)
        checks = publish.verify(planner.select(release.plan, list(selectors)), reg)
    return Checked(ok=all(c.ok for c in checks), checks=tuple(checks))
