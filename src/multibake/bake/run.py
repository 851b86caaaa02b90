"""execute: run ``docker buildx bake`` on a rendered plan, with retries and keep-going.

The docker client is passed in, so callers (and tests) choose which docker to drive. One bake
builds everything; a transient registry failure re-runs bake (retry.py), which BuildKit answers
from cache (no RUN step runs twice) and only pushes again, and only for the targets BuildKit had
not pushed yet. ``keep_going`` builds the cells a failure left out one by one. Each step below
takes and returns plain data: a bake run is a ``BakeRun``, building some targets with its retries
an ``Attempt``, and the cells' results are derived from those.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multibake.bake.invocation import (
    Request,
    by_digest,
    command_line,
    nodes,
    pushed_images,
    read_metadata,
    repositories,
    rewrites_timestamps,
    supports_fs_entitlements,
)
from multibake.docker import DockerFailure, Runner
from multibake.failures import Failure, Kind, Steps, classify
from multibake.kinds import Echo, Mode, PlatformSize, Status, Step
from multibake.plan.model import Cell, Plan
from multibake.preflight.builder import BuilderInfo
from multibake.retry import RetryPolicy

if TYPE_CHECKING:
    pass

Span = tuple[float, float]  # monotonic time of a target's first and last progress line

# the bake command as run, on the docker door's logger: --debug shows it
_LOG = logging.getLogger("multibake.docker")
_LOG_TAIL = 30  # progress lines kept per failed cell


@dataclass(frozen=True, kw_only=True, slots=True)
class CellResult:
    target: str
    family: str
    platforms: tuple[str, ...]
    tags: tuple[str, ...]
    status: Status = Status.PENDING
    duration: float = 0.0
    digest: str | None = None
    platform_digests: Mapping[str, str] = field(default_factory=dict)
    sizes: Mapping[str, PlatformSize] = field(default_factory=dict)  # per platform, as the registry serves it
    error: str | None = None
    log_tail: tuple[str, ...] = ()
    signed: tuple[tuple[str, str], ...] = ()  # (image, its signature) this release signed, index first


@dataclass(frozen=True, kw_only=True, slots=True)
class BakeRun:
    """One invocation of buildx bake: what it built and what BuildKit really executed."""

    targets: tuple[str, ...]
    outcome: str = "ok"  # ok, or the failure's kind: transient | permanent | stale-cache
    reason: str | None = None
    failure: Failure | None = None
    executed_runs: tuple[str, ...] = ()  # RUN steps not answered from cache
    pushed: Mapping[str, str] = field(default_factory=dict)  # target → the image BuildKit pushed, pinned
    spans: Mapping[str, Span] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # bake's --metadata-file
    tails: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # target → its last progress lines


@dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    """Building some targets, retries included: its bake runs and the failure it ended with, if any."""

    targets: tuple[str, ...]
    runs: tuple[BakeRun, ...] = ()
    retries: tuple[str, ...] = ()  # reasons of retried runs
    failure: Failure | None = None

    @property
    def pushed(self) -> dict[str, str]:
        return {t: ref for run in self.runs for t, ref in run.pushed.items()}


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildReport:
    builder: BuilderInfo
    mode: Mode
    cells: tuple[CellResult, ...]
    runs: tuple[BakeRun, ...] = ()
    retries: tuple[str, ...] = ()  # reasons of retried attempts
    pushed: Mapping[str, str] = field(default_factory=dict)  # bake target → its staged image, pinned by digest
    nodes: Mapping[str, str] = field(default_factory=dict)  # bake target → the builder node that built it
    placement: Mapping[str, tuple[str, bool]] = field(default_factory=dict)  # platform → (node, emulated)
    duration: float = 0.0
    bases: Mapping[str, str] = field(default_factory=dict)  # cell target → the base image it builds on
    steps: Mapping[Step, float] = field(default_factory=dict)  # seconds of each step of the release (pipeline)

    @property
    def route(self) -> str:
        """How images reached the registry before their public tags were written."""
        if self.mode is not Mode.PUSH:
            return self.mode.value
        return "push-by-digest" if by_digest(self.builder) else "staging-tags"

    @property
    def executed_runs(self) -> list[str]:
        return [hdr for run in self.runs for hdr in run.executed_runs]

    @property
    def ok(self) -> bool:
        return all(c.status.ok for c in self.cells)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Job:
    """What every bake run of one build shares."""

    run: Runner
    plan: Plan
    req: Request
    policy: RetryPolicy
    echo: Echo
    workdir: Path
    owner: Mapping[str, Cell]  # bake target → the cell it builds (a cell built per platform has several)
    gone: Callable[[], str | None] | None = None  # why a builder node no longer answers (then: no retry)


def pending(cell: Cell) -> CellResult:
    return CellResult(target=cell.target, family=cell.family, platforms=cell.platforms, tags=cell.tags)


def up_to_date(cell: Cell, ref: str) -> CellResult:
    """The result of a cell --skip-existing did not rebuild: its published image stands."""
    return replace(pending(cell), status=Status.UP_TO_DATE, digest=ref.rsplit("@", 1)[1])


def bake_targets(plan: Plan) -> list[str]:
    """Every bake target that builds a cell of ``plan`` (a cell built per platform has several)."""
    return [t for c in plan.cells for t in c.bake_targets]


# --- one bake run -------------------------------------------------------------------------------


def _stream(job: _Job, targets: Sequence[str], use_cache: bool, metadata: Path) -> Iterable[str]:
    """bake's progress lines, as they come."""
    shown = command_line(job.plan, job.req, targets, use_cache=use_cache, metadata=metadata)
    _LOG.debug("Running command: %s", shlex.join(shown))
    argv = command_line(job.plan, job.req, targets, use_cache=use_cache, metadata=metadata, redact=False)
    for chunk in job.run(argv):
        yield from chunk.splitlines()


def _bake_once(job: _Job, targets: Sequence[str], use_cache: bool) -> BakeRun:
    """Run bake once; a failed run is returned, classified, never raised."""
    steps = Steps(set(bake_targets(job.plan)) | {v.target for v in job.plan.views})
    spans: dict[str, Span] = {}
    metadata = job.workdir / "metadata.json"
    metadata.unlink(missing_ok=True)
    failure = None
    with contextlib.chdir(job.req.root):
        try:
            for line in _stream(job, targets, use_cache, metadata):
                target = steps.feed(line)
                if target is not None:
                    now = time.monotonic()
                    spans[target] = (spans.get(target, (now, now))[0], now)
                job.echo(line)
        except DockerFailure as exc:
            failure = classify(exc.stderr or "", steps.known_targets)
    read = read_metadata(metadata) if failure is None else {}
    return BakeRun(
        targets=tuple(targets),
        outcome=failure.kind.value if failure else "ok",
        reason=failure.reason if failure else None,
        failure=failure,
        executed_runs=tuple(steps.executed_runs()),
        pushed={**steps.pushed, **pushed_images(read, repositories(job.plan))}
        if job.req.mode is Mode.PUSH
        else steps.pushed,
        spans=spans,
        metadata=read,
        tails={t: tuple(steps.tail(t)) for t in (failure.targets or targets)} if failure else {},
    )


def _unresolved(job: _Job, run: BakeRun) -> Failure | None:
    """The failure a run leaves to deal with: none when only dockerd's second push failed."""
    if run.failure is None or run.failure.kind is not Kind.TRANSIENT:
        return run.failure
    # dockerd's second push of a finished image (docker driver) can fail on a registry race;
    # when BuildKit's own push of every target went through, nothing is left to redo
    if not all(t in run.pushed for t in run.targets):
        return run.failure
    job.echo(f"multibake: bake: {run.reason}; every image was already pushed, nothing to redo")
    return None


# --- retries, the stale-cache rebuild, keep-going -------------------------------------------------


def _retried(job: _Job, targets: Sequence[str], pushed: Mapping[str, str], use_cache: bool) -> Attempt:
    """Bake ``targets`` until done, a permanent failure, or ``attempts`` failed runs in a row without progress.

    A run that pushed an image no earlier run had pushed made progress: on a flaky registry each
    run gets further, so the count starts again rather than ending a release that is moving.
    """
    runs: list[BakeRun] = []
    retries: list[str] = []
    stalled = 0  # failed runs since the last one that pushed something new
    # a target BuildKit already pushed (an earlier run failed after it) is not baked again
    while left := [t for t in targets if t not in pushed]:
        run = _bake_once(job, left, use_cache)
        runs.append(run)
        progressed = any(t not in pushed for t in run.pushed)
        pushed = {**pushed, **run.pushed}
        failure = _unresolved(job, run)
        if failure is not None and failure.kind is Kind.TRANSIENT and job.gone and (lost := job.gone()):
            # a lost node looks transient to BuildKit (EOF, connection refused): not worth a retry
            failure = replace(failure, kind=Kind.PERMANENT, reason=lost)
        stalled = 1 if progressed else stalled + 1
        if failure is None or failure.kind is not Kind.TRANSIENT or stalled >= job.policy.limits.attempts:
            return Attempt(targets=tuple(targets), runs=tuple(runs), retries=tuple(retries), failure=failure)
        wait = job.policy.delay(stalled)
        retries.append(failure.reason)
        job.policy.announce("bake", failure.reason, f"{stalled}/{job.policy.limits.attempts - 1}", wait)
        job.policy.sleep(wait)
    return Attempt(targets=tuple(targets), runs=tuple(runs), retries=tuple(retries))


def _build(job: _Job, targets: Sequence[str], pushed: Mapping[str, str]) -> Attempt:
    """Bake ``targets`` with retries; once more without BuildKit's cache when it lost a snapshot."""
    first = _retried(job, targets, pushed, use_cache=True)
    if first.failure is None or first.failure.kind is not Kind.STALE_CACHE:
        return first
    job.echo(
        "multibake: BuildKit's cache lost a snapshot of an earlier, cancelled build; "
        "building these targets once more without the cache"
    )
    again = _retried(job, targets, {**pushed, **first.pushed}, use_cache=False)
    return replace(again, runs=first.runs + again.runs, retries=first.retries + again.retries)


def _decided(job: _Job, attempt: Attempt, pushed: Mapping[str, str]) -> dict[str, CellResult]:
    """The cells ``attempt`` decided: all built, or those whose steps failed (all, when buildx does not say)."""
    if attempt.failure is None:
        metadata = attempt.runs[-1].metadata if attempt.runs else {}
        built = {job.owner[t].target: replace(pending(job.owner[t]), status=Status.BUILT) for t in attempt.targets}
        for target, result in built.items():
            # a cell built per platform gets its index digest when it is assembled
            if target in attempt.targets:
                pinned = pushed.get(target, "").partition("@")[2] or None
                digest = pinned or (metadata.get(target) or {}).get("containerimage.digest")
                built[target] = replace(result, digest=digest)
        return built
    failure, last = attempt.failure, attempt.runs[-1]
    tails: dict[str, list[str]] = {}
    for t in [t for t in failure.targets if t in job.owner] or attempt.targets:
        tails.setdefault(job.owner[t].target, []).extend(last.tails.get(t, ()))
    return {
        target: replace(
            pending(job.plan.cell(target)),
            status=Status.FAILED,
            error=_explained(job, failure, job.plan.cell(target)),
            log_tail=tuple(lines[-_LOG_TAIL:]),
        )
        for target, lines in tails.items()
    }


def _explained(job: _Job, failure: Failure, cell: Cell) -> str:
    """A failure as the user reads it: one that outlasted every retry names the registry it hit.

    BuildKit's own last line does not always say where it was pushing ("error writing manifest blob").
    """
    if failure.kind is not Kind.TRANSIENT:
        return failure.reason
    from multibake.registry.connect import parse

    attempts = job.policy.limits.attempts
    return f"registry {parse(cell.image).host}: still failing after {attempts} attempts: {failure.reason}"


def _one_by_one(
    job: _Job, results: Mapping[str, CellResult], pushed: Mapping[str, str]
) -> tuple[list[Attempt], dict[str, CellResult]]:
    """After a failed bake, build each cell on its own so one failure does not stop the others."""
    attempts: list[Attempt] = []
    out = dict(results)
    failed: set[str] = set()
    for cell in job.plan.cells:
        broken = [a.target for a in job.plan.ancestors(cell) if a.target in failed]
        if broken:
            out[cell.target] = replace(pending(cell), status=Status.SKIPPED, error=f"its base {broken[0]} failed")
            failed.add(cell.target)
            continue
        job.echo(f"multibake: --keep-going: building {cell.target}")
        attempt = _build(job, cell.bake_targets, pushed)
        attempts.append(attempt)
        pushed = {**pushed, **attempt.pushed}
        out[cell.target] = pending(cell)
        out.update(_decided(job, attempt, pushed))
        if attempt.failure is not None:
            failed.add(cell.target)
    return attempts, out


def _skip_the_rest(results: Mapping[str, CellResult]) -> dict[str, CellResult]:
    why = "not built: another cell failed (use --keep-going)"
    return {
        t: replace(r, status=Status.SKIPPED, error=why) if r.status is Status.PENDING else r for t, r in results.items()
    }


def _durations(job: _Job, runs: Iterable[BakeRun]) -> dict[str, float]:
    """cell target → seconds from its first to its last progress line, over every run."""
    spans: dict[str, Span] = {}
    for run in runs:
        for target, (first, last) in run.spans.items():
            if target not in job.owner:
                continue
            cell = job.owner[target].target
            a, b = spans.get(cell, (first, last))
            spans[cell] = (min(a, first), max(b, last))
    return {cell: round(last - first, 2) for cell, (first, last) in spans.items()}


def execute(
    run: Runner,
    plan: Plan,
    req: Request,
    *,
    builder: BuilderInfo,
    policy: RetryPolicy,
    echo: Echo,
    workdir: Path,
    gone: Callable[[], str | None] | None = None,
) -> BuildReport:
    """Build ``plan`` as ``req`` says; never raises for a failed cell, the report says what happened.

    ``gone`` says why a node of the builder stopped answering, if one did: a failure then is not retried.
    """
    results = {c.target: pending(c) for c in plan.cells}
    if not plan.cells:  # everything was up to date: bake without targets would build the default group
        return BuildReport(builder=builder, mode=req.mode, cells=())
    started = time.monotonic()
    if not supports_fs_entitlements(builder.buildx_version):
        req = replace(req, allow=())
    req = replace(req, by_digest=req.mode is Mode.PUSH and by_digest(builder))
    req = replace(req, rewrite_timestamp=req.by_digest and req.rewrite_timestamp and rewrites_timestamps(builder))
    owner = {t: c for c in plan.cells for t in c.bake_targets}
    job = _Job(run=run, plan=plan, req=req, policy=policy, echo=echo, workdir=workdir, owner=owner, gone=gone)
    first = _build(job, bake_targets(plan), {})
    attempts = [first]
    results.update(_decided(job, first, first.pushed))
    if first.failure is not None and req.keep_going:
        more, results = _one_by_one(job, results, first.pushed)
        attempts += more
    elif first.failure is not None:
        results = _skip_the_rest(results)
    runs = tuple(run for a in attempts for run in a.runs)
    durations = _durations(job, runs)
    return BuildReport(
        builder=builder,
        mode=req.mode,
        cells=tuple(replace(r, duration=durations.get(t, r.duration)) for t, r in results.items()),
        runs=runs,
        retries=tuple(reason for a in attempts for reason in a.retries),
        pushed={t: ref for a in attempts for t, ref in a.pushed.items()},
        nodes={t: node for run in runs for t, node in nodes(run.metadata).items()},
        duration=round(time.monotonic() - started, 2),
    )


def restatus(cell: CellResult, change: Mapping[Status, Status], error: str | None = None) -> CellResult:
    """``cell`` with its status changed as ``change`` says (and its error), when its status is in it."""
    if cell.status not in change:
        return cell
    return replace(cell, status=change[cell.status], error=error if error is not None else cell.error)
