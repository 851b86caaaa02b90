"""execute: run ``docker buildx bake`` on a rendered plan, the one module that talks to docker.

python-on-whales and tenacity are imported here and nowhere else; the docker client is passed in,
so callers (and tests) choose which docker to drive. One bake builds everything; a transient
registry failure re-runs bake, which BuildKit answers from cache (no RUN step runs twice) and only
pushes again. ``keep_going`` builds the cells a failure left out one by one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from multibake.errors import BuildError, UsageError
from multibake.failures import Failure, Kind, Steps, classify
from multibake.plan import Cell, Plan

if TYPE_CHECKING:
    from python_on_whales import DockerClient

Echo = Callable[[str], None]
T = TypeVar("T")

# Emulators the kernel must know for a platform to run on a builder that is not native for it.
_BINFMT = {"linux/arm64": "qemu-aarch64", "linux/arm/v7": "qemu-arm", "linux/arm/v6": "qemu-arm"}
_SECRETISH = re.compile(r"token|passw|secret|key|auth|cred", re.IGNORECASE)


def docker_client() -> DockerClient:
    from python_on_whales import DockerClient

    return DockerClient()


class Mode(StrEnum):
    CACHE = "cache"  # build every platform into the build cache only (a CI check)
    PUSH = "push"
    LOAD = "load"
    OUTPUT = "output"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    initial_delay: float = 2.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True, kw_only=True, slots=True)
class BuilderInfo:
    buildx_version: str
    name: str
    driver: str
    platforms: tuple[str, ...]  # what the builder reports, plus emulators registered with the kernel
    multi_platform: bool
    problem: str | None = None  # why multi-platform builds cannot work, with the fix


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    bake_file: Path  # absolute
    root: Path  # bake runs here: the plan's context paths are relative to it
    mode: Mode = Mode.CACHE
    output: str | None = None
    sets: Mapping[str, str] = field(default_factory=dict)
    builder: str | None = None
    keep_going: bool = False


@dataclass(kw_only=True)
class CellResult:
    target: str
    family: str
    platforms: tuple[str, ...]
    tags: tuple[str, ...]
    status: str = "pending"  # built | failed | skipped
    duration: float = 0.0
    digest: str | None = None
    platform_digests: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class BuildReport:
    builder: BuilderInfo
    mode: Mode
    cells: list[CellResult]
    runs: list[BakeRun] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)  # reasons of retried attempts
    pushed: dict[str, str] = field(default_factory=dict)  # bake target → its staged image, pinned by digest
    duration: float = 0.0

    @property
    def executed_runs(self) -> list[str]:
        return [hdr for run in self.runs for hdr in run.executed_runs]

    @property
    def ok(self) -> bool:
        return all(c.status in ("built", "published", "up-to-date") for c in self.cells)


# --- preflight --------------------------------------------------------------------------------


def _binfmt_platforms() -> set[str]:
    found = set()
    for platform, handler in _BINFMT.items():
        entry = Path("/proc/sys/fs/binfmt_misc") / handler
        with contextlib.suppress(OSError):
            if entry.read_text().startswith("enabled"):
                found.add(platform)
    return found


def inspect_builder(docker: DockerClient, name: str | None) -> BuilderInfo:
    from python_on_whales.exceptions import DockerException

    # two independent round-trips, run at once: start-up is part of every release's time
    with ThreadPoolExecutor(max_workers=2) as pool:
        asked_builder = pool.submit(docker.buildx.inspect, name)
        asked_info = pool.submit(docker.system.info)
    try:
        system = asked_info.result()
    except DockerException as exc:
        raise UsageError(f"the docker daemon does not answer: {_first_line(exc.stderr)}") from None
    plugins = system.client_info.plugins if system.client_info else None
    version = next((p.version for p in plugins or [] if p.name == "buildx"), None)
    try:
        builder = asked_builder.result()
    except DockerException as exc:
        if version is None:
            raise UsageError(
                "docker buildx is not available: install the buildx plugin (Debian: apt-get install docker-buildx) "
                "or run scripts/setup-stack.sh"
            ) from None
        which = f"builder {name!r}" if name else "the current builder"
        raise UsageError(
            f"cannot use {which}: {_first_line(exc.stderr)}\n  list builders with `docker buildx ls`; "
            "create one with `docker buildx create --use`, or start dockerd (scripts/setup-stack.sh)"
        ) from None
    nodes = builder.nodes or []
    reported = {p for n in nodes for p in (n.platforms or [])}
    driver = builder.driver or "unknown"
    local = driver in ("docker", "docker-container")
    platforms = reported | (_binfmt_platforms() if local else set())
    problem = None
    if driver == "docker":
        status = system.driver_status or []
        if not any("containerd.snapshotter" in str(v) for row in status for v in row):
            problem = (
                "the 'docker' driver without the containerd image store cannot build multi-platform images; "
                'enable it ("features": {"containerd-snapshotter": true} in /etc/docker/daemon.json, restart '
                "dockerd) or use another builder: docker buildx create --use"
            )
    version_text = version or "unknown"
    return BuilderInfo(
        buildx_version=version_text,
        name=builder.name or (name or "default"),
        driver=driver,
        platforms=tuple(sorted(platforms)),
        multi_platform=problem is None,
        problem=problem,
    )


def check_builder(info: BuilderInfo, plan: Plan) -> None:
    """Refuse, before building anything, a plan this builder cannot run."""
    wanted = sorted({p for c in plan.cells for p in c.platforms})
    if info.problem and any(len(c.platforms) > 1 for c in plan.cells):
        raise UsageError(info.problem)
    missing = [p for p in wanted if not _runnable(p, info.platforms)]
    if missing:
        raise UsageError(
            f"builder {info.name!r} ({info.driver}) cannot run {', '.join(missing)}; it runs "
            f"{', '.join(info.platforms) or 'nothing'}\n  register QEMU emulators: "
            "docker run --privileged --rm tonistiigi/binfmt --install all (or apt-get install qemu-user-static)"
        )


def _runnable(platform: str, available: Iterable[str]) -> bool:
    have = set(available)
    if platform in have:
        return True
    # an arm64 node runs arm/v7 natively when the kernel allows; buildx lists it then, so be strict
    return platform == "linux/arm/v6" and "linux/arm/v7" in have


_LOGFMT_MSG = re.compile(r'level=\w+ msg="((?:[^"\\]|\\.)*)"')


def _first_line(text: str | None) -> str:
    """The line of a tool's output that says what went wrong: an error or panic line, else the last."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return "no output"
    said = next((ln for ln in reversed(lines) if ln.startswith(("ERROR", "error", "panic:", "Error"))), None)
    said = said or next((ln for ln in reversed(lines) if "level=fatal" in ln or "level=error" in ln), lines[-1])
    m = _LOGFMT_MSG.search(said)
    return m.group(1).replace('\\"', '"') if m else said


# --- running bake -----------------------------------------------------------------------------


def output_sets(plan: Plan, req: Request) -> dict[str, str]:
    """Per-target outputs: only planned cells push or load; parent views stay cache-only."""
    out = {
        Mode.CACHE: "type=cacheonly",
        Mode.PUSH: "type=registry",
        Mode.LOAD: "type=docker",
        Mode.OUTPUT: req.output or "type=cacheonly",
    }[req.mode]
    sets = {f"{t}.output": out for c in plan.cells for t in c.bake_targets}
    sets.update(req.sets)
    return sets


def command_line(plan: Plan, req: Request, targets: Sequence[str]) -> list[str]:
    """The bake command multibake runs, with secret-looking --set values redacted (for display)."""
    argv = ["docker", "buildx", "bake", "--file", str(req.bake_file), "--progress", "plain"]
    if req.builder:
        argv += ["--builder", req.builder]
    for key, value in output_sets(plan, req).items():
        shown = "***" if _SECRETISH.search(key) else value
        argv += ["--set", f"{key}={shown}"]
    return argv + list(targets)


def up_to_date(cell: Cell, ref: str) -> CellResult:
    """The result of a cell --skip-existing did not rebuild: its published image stands."""
    return CellResult(
        target=cell.target,
        family=cell.family,
        platforms=cell.platforms,
        tags=cell.tags,
        status="up-to-date",
        digest=ref.rsplit("@", 1)[1],
    )


def bake_targets(plan: Plan) -> list[str]:
    """Every bake target that builds a cell of ``plan`` (a cell built per platform has several)."""
    return [t for c in plan.cells for t in c.bake_targets]


@dataclass(kw_only=True)
class BakeRun:
    """One invocation of buildx bake: what it built and what BuildKit really executed."""

    targets: tuple[str, ...]
    outcome: str = "ok"  # ok | transient | permanent
    reason: str | None = None
    executed_runs: list[str] = field(default_factory=list)  # RUN steps not answered from cache
    steps: Steps | None = field(default=None, repr=False)


class _Transient(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class _Permanent(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _bake_once(
    docker: DockerClient,
    plan: Plan,
    req: Request,
    *,
    run: BakeRun,
    metadata: Path,
    seen: dict[str, tuple[float, float]],
    echo: Echo,
    use_cache: bool = True,
) -> dict[str, Any]:
    from python_on_whales.exceptions import DockerException

    steps = Steps(set(bake_targets(plan)) | {v.target for v in plan.views})
    run.steps = steps
    metadata.unlink(missing_ok=True)
    with contextlib.chdir(req.root):
        try:
            stream = docker.buildx.bake(
                targets=list(run.targets),
                builder=req.builder,
                cache=use_cache,
                files=[req.bake_file],
                progress="plain",
                set=output_sets(plan, req),
                metadata_file=metadata,
                stream_logs=True,
            )
            assert not isinstance(stream, dict)
            for chunk in stream:
                for line in chunk.splitlines():
                    target = steps.feed(line)
                    if target is not None:
                        now = time.monotonic()
                        seen[target] = (seen.get(target, (now, now))[0], now)
                    echo(line)
        except DockerException as exc:
            failure = classify(exc.stderr or "", steps.known_targets)
            run.outcome, run.reason = failure.kind.value, failure.reason
            raise (_Transient(failure) if failure.kind is Kind.TRANSIENT else _Permanent(failure)) from None
        finally:
            run.executed_runs = steps.executed_runs()
    try:
        data: dict[str, Any] = json.loads(metadata.read_text())
    except (OSError, ValueError):
        data = {}
    return data


def _retrying(policy: RetryPolicy, what: str, echo: Echo, log: list[str] | None = None) -> tenacity.Retrying:
    """The one retry rule: classified transient failures only, exponential backoff with jitter, bounded."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = str(exc) if exc else "?"
        if log is not None:
            log.append(reason)
        delay = state.next_action.sleep if state.next_action else 0
        echo(
            f"multibake: {what}: transient failure ({reason}); retry {state.attempt_number}/"
            f"{policy.attempts - 1} in {delay:.1f}s"
        )

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        # "full jitter": a random wait up to min(max_delay, initial_delay * 2^n), so parallel
        # releases hitting one registry do not retry in lockstep
        wait=tenacity.wait_random_exponential(multiplier=policy.initial_delay, max=policy.max_delay),
        retry=tenacity.retry_if_exception_type(_Transient),
        before_sleep=before_sleep,
        sleep=policy.sleep,
        reraise=True,
    )


def execute(
    docker: DockerClient,
    plan: Plan,
    req: Request,
    *,
    builder: BuilderInfo,
    policy: RetryPolicy,
    echo: Echo,
    workdir: Path,
) -> BuildReport:
    """Build ``plan`` as ``req`` says; never raises for a failed cell, the report says what happened."""
    results = {
        c.target: CellResult(target=c.target, family=c.family, platforms=c.platforms, tags=c.tags) for c in plan.cells
    }
    report = BuildReport(builder=builder, mode=req.mode, cells=list(results.values()))
    owner = {t: c.target for c in plan.cells for t in c.bake_targets}  # bake target → its cell
    seen: dict[str, tuple[float, float]] = {}
    started = time.monotonic()

    def attempt(targets: Sequence[str], use_cache: bool) -> dict[str, Any]:
        # a target BuildKit already pushed (an earlier run failed after it) is not baked again
        left = [t for t in targets if t not in report.pushed]
        if not left:
            return {}
        run = BakeRun(targets=tuple(left))
        report.runs.append(run)
        try:
            return _bake_once(
                docker,
                plan,
                req,
                run=run,
                metadata=workdir / "metadata.json",
                seen=seen,
                echo=echo,
                use_cache=use_cache,
            )
        except _Transient:
            # dockerd's second push of a finished image (docker driver) can fail on a registry race;
            # when BuildKit's own push of every target went through, nothing is left to redo
            if run.steps is None or not all(t in run.steps.pushed for t in left):
                raise
            echo(f"multibake: bake: {run.reason}; every image was already pushed, nothing to redo")
            return {}
        finally:
            if run.steps is not None:
                report.pushed.update(run.steps.pushed)

    def attempts(targets: Sequence[str]) -> dict[str, Any]:
        retrying = _retrying(policy, "bake", echo, report.retries)
        try:
            return retrying(attempt, targets, True)
        except _Permanent as exc:
            if exc.failure.kind is not Kind.STALE_CACHE:
                raise
            echo(
                "multibake: BuildKit's cache lost a snapshot of an earlier, cancelled build; "
                "building these targets once more without the cache"
            )
            return retrying(attempt, targets, False)

    def build(targets: Sequence[str]) -> Failure | None:
        try:
            meta = attempts(targets)
        except (_Transient, _Permanent) as exc:
            failure = exc.failure
            last = report.runs[-1].steps
            # the targets whose steps failed, or all of this run's when buildx does not say
            for t in [t for t in failure.targets if t in owner] or targets:
                r = results[owner[t]]
                r.status, r.error = "failed", failure.reason
                r.log_tail = [*r.log_tail, *(last.tail(t) if last else [])][-30:]
            return failure
        for t in targets:
            r = results[owner[t]]
            if r.status != "failed":
                r.status = "built"
            if t == r.target:  # a cell built per platform gets its index digest when it is assembled
                pinned = report.pushed.get(t, "").partition("@")[2] or None
                r.digest = pinned or (meta.get(t) or {}).get("containerimage.digest")
        return None

    if not plan.cells:  # everything was up to date: bake without targets would build the default group
        return report
    if build(bake_targets(plan)) is not None:
        if req.keep_going:
            _one_by_one(plan, results, build, echo)
        else:
            for r in results.values():
                if r.status != "failed":
                    r.status, r.error = "skipped", "not built: another cell failed (use --keep-going)"
    spans: dict[str, tuple[float, float]] = {}
    for t, (first, last_seen) in seen.items():
        if t in owner:
            a, b = spans.get(owner[t], (first, last_seen))
            spans[owner[t]] = (min(a, first), max(b, last_seen))
    for cell_target, (first, last_seen) in spans.items():
        results[cell_target].duration = round(last_seen - first, 2)
    report.duration = round(time.monotonic() - started, 2)
    return report


def _one_by_one(
    plan: Plan,
    results: dict[str, CellResult],
    build: Callable[[Sequence[str]], Failure | None],
    echo: Echo,
) -> None:
    """After a failed bake, build each cell on its own so one failure does not stop the others."""
    failed: set[str] = set()
    for cell in plan.cells:
        r = results[cell.target]
        broken = [a.target for a in plan.ancestors(cell) if a.target in failed]
        if broken:
            r.status, r.error = "skipped", f"its base {broken[0]} failed"
            failed.add(cell.target)
            continue
        r.status, r.error, r.log_tail = "pending", None, []
        echo(f"multibake: --keep-going: building {cell.target}")
        if build(cell.bake_targets) is not None:
            failed.add(cell.target)


def _retry_registry(policy: RetryPolicy, echo: Echo, what: str, once: Callable[[], T]) -> T:
    """Retry a registry read or write that raises _Transient on transient failures."""

    retrying = _retrying(policy, what, echo)
    try:
        return retrying(once)
    except _Transient as exc:
        raise BuildError(f"{what}: still failing after {policy.attempts} attempts: {exc}") from None


def _docker_call(policy: RetryPolicy, echo: Echo, what: str, fn: Callable[[], T]) -> T:
    """A python-on-whales registry call, its DockerException classified like bake's."""
    from python_on_whales.exceptions import DockerException

    def once() -> T:
        try:
            return fn()
        except DockerException as exc:
            failure = classify(exc.stderr or exc.stdout or "")
            if failure.kind is Kind.TRANSIENT:
                raise _Transient(failure) from None
            raise BuildError(f"{what}: {_first_line(exc.stderr)}") from None

    return _retry_registry(policy, echo, what, once)


@dataclass(frozen=True, kw_only=True, slots=True)
class RawManifest:
    """A manifest as the registry serves it; ``digest`` is the sha256 of its exact bytes."""

    media_type: str
    digest: str
    doc: dict[str, Any]
    body: bytes = field(default=b"", repr=False)  # the exact bytes, to tag them elsewhere unchanged

    @property
    def is_index(self) -> bool:
        return "index" in self.media_type or "manifest.list" in self.media_type

    def entries(self) -> dict[str, str]:
        """platform → digest of an index's images; attestation manifests (unknown/unknown) left out."""
        out: dict[str, str] = {}
        for m in self.doc.get("manifests", []):
            p = m.get("platform") or {}
            if p.get("os") in (None, "unknown"):
                continue
            out[_platform_name(p)] = m["digest"]
        return out

    def attestations(self) -> int:
        return sum((m.get("platform") or {}).get("os") == "unknown" for m in self.doc.get("manifests", []))


def _platform_name(p: Mapping[str, Any]) -> str:
    return f"{p['os']}/{p['architecture']}" + (f"/{p['variant']}" if p.get("variant") else "")


def _registry(policy: RetryPolicy, echo: Echo, what: str, call: Callable[[], T]) -> T:
    """A registry read or write in process, retried like pushes when it fails transiently."""
    from multibake.registry import RegistryError

    def once() -> T:
        try:
            return call()
        except RegistryError as exc:
            if exc.transient:
                raise _Transient(Failure(Kind.TRANSIENT, str(exc), ())) from None
            raise BuildError(str(exc)) from None

    return _retry_registry(policy, echo, what, once)


def raw_manifest(ref: str, policy: RetryPolicy, echo: Echo) -> RawManifest | None:
    """What ``ref`` points at in the registry, or None when there is no such tag."""
    from multibake import registry

    got = _registry(policy, echo, f"reading {ref}", lambda: registry.get_manifest(ref))
    if got is None:
        return None
    body, served = got
    doc = json.loads(body)
    media = str(doc.get("mediaType") or served or "application/vnd.docker.distribution.manifest.v2+json")
    return RawManifest(media_type=media, digest="sha256:" + hashlib.sha256(body).hexdigest(), doc=doc, body=body)


def image_config(ref: str, policy: RetryPolicy, echo: Echo) -> dict[str, Any]:
    """The config (platform, labels, ...) of a single-platform image."""
    from multibake import registry

    held = raw_manifest(ref, policy, echo)
    if held is None or held.is_index or "config" not in held.doc:
        raise BuildError(f"{ref}: not a single-platform image in the registry")
    digest = str(held.doc["config"]["digest"])
    body = _registry(policy, echo, f"reading the config of {ref}", lambda: registry.get_blob(ref, digest))
    config: dict[str, Any] = json.loads(body)
    return config


def image_platform(ref: str, policy: RetryPolicy, echo: Echo) -> str:
    """The platform a single-platform image's config declares."""
    return _platform_name(image_config(ref, policy, echo))


def write_manifest(
    held: RawManifest,
    tags: Sequence[str],
    policy: RetryPolicy,
    echo: Echo,
    *,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Point ``tags`` (in ``held``'s repository) at ``held``: the same bytes and digest, unless annotated."""
    from multibake import registry

    body = held.body
    if annotations:
        doc = {**held.doc, "annotations": {**held.doc.get("annotations", {}), **annotations}}
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    for tag in tags:
        _registry(policy, echo, f"tagging {tag}", functools.partial(registry.put_manifest, tag, body, held.media_type))


def copy_index(
    docker: DockerClient,
    sources: Sequence[str],
    tags: Sequence[str],
    *,
    policy: RetryPolicy,
    echo: Echo,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Point ``tags`` at an index of ``sources`` (one index as is, or several merged): nothing rebuilt."""
    notes = {f"index:{k}": v for k, v in (annotations or {}).items()}
    _docker_call(
        policy,
        echo,
        f"tagging {', '.join(tags)}",
        lambda: docker.buildx.imagetools.create(sources=list(sources), tags=list(tags), annotations=notes),
    )
