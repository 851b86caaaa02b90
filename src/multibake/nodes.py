"""Multi-node builders as configuration: platforms.yaml's ``builder:`` made into a buildx builder.

``builder:`` names a buildx builder and its nodes (name, driver, endpoint, driver options, the
platforms each builds). Before a build multibake compares that declaration with what
``docker buildx inspect`` reports (``plan_actions``, pure) and runs only what differs: a missing
builder is created, a missing node appended, a changed node left and appended again, a builder
that already matches is not touched. Then every node must answer, and every planned platform must
be declared by a node; otherwise the build is refused (exit 2) before anything is built.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from multibake import platforms
from multibake.errors import ConfigError, UsageError
from multibake.refs import CREDENTIALS_ADVICE

if TYPE_CHECKING:
    from python_on_whales import DockerClient

    from multibake.plan import Plan

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # buildx's builder and node names
_OPT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@")
DEFAULT_TIMEOUT = 120.0  # seconds: a docker-container node may pull BuildKit's image on first bootstrap


def _platform(value: str) -> str:
    return platforms.normalize(value)


Platform = Annotated[str, AfterValidator(_platform)]


class Driver(StrEnum):
    REMOTE = "remote"
    DOCKER_CONTAINER = "docker-container"
    KUBERNETES = "kubernetes"


class NodeSpec(BaseModel):
    """One node of the builder: where BuildKit runs and which platforms bake sends to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="node name (buildx --node); shown per target in build --json")
    driver: Driver = Field(description="buildx driver; every node of a builder uses the same one")
    endpoint: str | None = Field(
        default=None,
        description="remote: tcp://HOST:PORT, unix:///PATH, kube-pod://POD (required); docker-container: a "
        "docker context or host (default: the current one); kubernetes: a kubeconfig context",
    )
    driver_opts: dict[str, str] = Field(
        default_factory=dict,
        description="buildx --driver-opt (kubernetes: namespace, replicas, nodeselector; remote: cacert, cert, key)",
    )
    platforms: list[Platform] = Field(description="the platforms this node builds")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("a node name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        userinfo = _USERINFO.match(value)
        if userinfo and (":" in userinfo[1] or not value.startswith("ssh://")):
            raise ValueError(f"the endpoint carries credentials (user:password@); {CREDENTIALS_ADVICE}")
        if not value or _UNSAFE.search(value):
            raise ValueError("an endpoint may not be empty or contain spaces or control characters")
        return value

    @field_validator("driver_opts")
    @classmethod
    def _driver_opts(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _OPT_KEY.fullmatch(key):
                raise ValueError(f"driver option {key[:60]!r} may use only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a node must declare the platforms it builds (bake sends each platform to its node)")
        return value

    @model_validator(mode="after")
    def _remote_endpoint(self) -> NodeSpec:
        if self.driver is Driver.REMOTE and self.endpoint is None:
            raise ValueError("a remote node needs an endpoint: tcp://HOST:PORT, unix:///PATH or kube-pod://POD")
        return self


class BuilderSpec(BaseModel):
    """A buildx builder multibake creates or updates before building (``--builder`` on the command line wins)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the buildx builder's name")
    nodes: list[NodeSpec] = Field(min_length=1, description="its nodes, in buildx's order")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, le=3600, description="seconds the nodes have to answer before a build"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "a builder name is 1 to 63 letters, digits, '.', '_' or '-', starting with one of the first two"
            )
        return value


KeyPath = tuple[str | int, ...]


def check(spec: BuilderSpec, error: Callable[[KeyPath, str], ConfigError]) -> None:
    """What one node's model cannot see: names and platforms repeated, drivers mixed in one builder."""
    seen: set[str] = set()
    for i, node in enumerate(spec.nodes):
        path: KeyPath = ("builder", "nodes", i)
        if node.name in seen:
            raise error((*path, "name"), f"node name {node.name!r} is listed twice")
        seen.add(node.name)
        if node.driver is not spec.nodes[0].driver:
            raise error(
                (*path, "driver"),
                f"every node of a buildx builder uses one driver: {spec.nodes[0].driver.value}, "
                f"not {node.driver.value}",
            )
        for j, p in enumerate(node.platforms):
            if p in node.platforms[:j]:
                raise error((*path, "platforms", j), f"platform {p} is listed twice")


# --- what buildx reports, and what to run -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    """A node as ``buildx inspect`` reports it."""

    name: str
    endpoint: str
    platforms: tuple[str, ...]  # what the node runs: those declared at create time first
    declared: tuple[str, ...] = ()  # the ones given with --platform, when buildx marks them (with *)
    status: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Inspected:
    driver: str
    nodes: tuple[Observed, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    """One buildx command, and why it runs."""

    argv: tuple[str, ...]
    why: str

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


def _opts(opts: dict[str, str]) -> list[str]:
    # one --driver-opt per option; buildx reads each as CSV, so a value with a comma is quoted
    out = []
    for key, value in sorted(opts.items()):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow([f"{key}={value}"])
        out += ["--driver-opt", buf.getvalue()]
    return out


def create_argv(builder: str, node: NodeSpec, *, append: bool) -> tuple[str, ...]:
    argv = ["docker", "buildx", "create", "--name", builder, "--node", node.name, "--driver", node.driver.value]
    argv += ["--platform", ",".join(node.platforms), *_opts(node.driver_opts)]
    argv += ["--append"] if append else []
    return (*argv, *([node.endpoint] if node.endpoint else []))


def _normal(platform: str) -> str:
    try:
        return platforms.normalize(platform)
    except ValueError:
        return platform  # a platform multibake has no name for (linux/386 …) still counts as itself


def _difference(node: NodeSpec, seen: Observed) -> str | None:
    """Why ``seen`` is not the declared node, or None when it matches."""
    # the kubernetes driver makes its own endpoint (kubernetes:///builder?deployment=…): not comparable
    if node.endpoint is not None and node.driver is not Driver.KUBERNETES and seen.endpoint != node.endpoint:
        return f"endpoint {seen.endpoint} → {node.endpoint}"
    wanted = set(node.platforms)
    declared = {_normal(p) for p in seen.declared}
    have = {_normal(p) for p in seen.platforms}
    # buildx marks the platforms given with --platform; without marks, the declared ones must be among them
    if (declared and declared != wanted) or not wanted <= have:
        shown = ", ".join(sorted(declared or have)) or "none"
        return f"platforms {shown} → {', '.join(node.platforms)}"
    return None


def plan_actions(spec: BuilderSpec, seen: Inspected | None) -> tuple[Action, ...]:
    """The buildx commands that make the builder ``seen`` into ``spec`` (none when it matches)."""
    driver = spec.nodes[0].driver
    remove = ("docker", "buildx", "rm", spec.name)
    if seen is None:
        return _create_all(spec, "create the builder")
    if seen.driver != driver.value:
        why = f"driver {seen.driver} → {driver.value}: recreate the builder"
        return (Action(argv=remove, why=why), *_create_all(spec, why))
    by_name = {n.name: n for n in seen.nodes}
    changed = {n.name: d for n in spec.nodes if n.name in by_name and (d := _difference(n, by_name[n.name]))}
    extra = [n.name for n in seen.nodes if n.name not in {d.name for d in spec.nodes}]
    kept = [n for n in spec.nodes if n.name in by_name and n.name not in changed]
    if not kept:  # buildx cannot leave a builder's last node: start again
        why = "no node matches: recreate the builder"
        return (Action(argv=remove, why=why), *_create_all(spec, why))
    actions = [Action(argv=_leave(spec.name, name), why=f"node {name} is not declared: remove it") for name in extra]
    for node in spec.nodes:
        if node.name in changed:
            actions.append(Action(argv=_leave(spec.name, node.name), why=f"node {node.name}: {changed[node.name]}"))
        if node.name not in by_name or node.name in changed:
            why = changed.get(node.name) or "a new node"
            actions.append(Action(argv=create_argv(spec.name, node, append=True), why=f"node {node.name}: {why}"))
    return tuple(actions)


def _create_all(spec: BuilderSpec, why: str) -> tuple[Action, ...]:
    return tuple(
        Action(argv=create_argv(spec.name, node, append=i > 0), why=f"node {node.name}: {why}")
        for i, node in enumerate(spec.nodes)
    )


def _leave(builder: str, node: str) -> tuple[str, ...]:
    return ("docker", "buildx", "create", "--leave", "--name", builder, "--node", node)


def dry_run_lines(spec: BuilderSpec) -> tuple[str, ...]:
    """The commands that create the builder from nothing, as shell lines (``build --dry-run``)."""
    return tuple(a.shell for a in _create_all(spec, "create"))


# --- preflight --------------------------------------------------------------------------------------


def check_coverage(spec: BuilderSpec, plan: Plan) -> None:
    """Refuse a plan with a platform no declared node builds (buildx would emulate it somewhere, or fail)."""
    served = {p for node in spec.nodes for p in node.platforms}
    wanted = sorted({p for c in plan.cells for p in c.platforms})
    missing = [p for p in wanted if p not in served]
    if missing:
        nodes = "; ".join(f"{n.name}: {', '.join(n.platforms)}" for n in spec.nodes)
        raise UsageError(
            f"no node of builder {spec.name!r} builds {', '.join(missing)} (nodes: {nodes})\n"
            f"  add a node for it under builder.nodes in platforms.yaml, or restrict the cells' platforms"
        )


class Buildx(Protocol):
    """The few buildx operations a configured builder needs; tests pass a fake."""

    def inspect(self, name: str) -> Inspected | None: ...  # None: no such builder

    def bootstrap(self, name: str, timeout: float) -> Inspected: ...  # raises NodesDown

    def run(self, argv: Sequence[str]) -> None: ...


class NodesDown(Exception):
    """The builder's nodes did not all start (buildx's reason) or did not answer in time."""


def ensure(buildx: Buildx, spec: BuilderSpec, plan: Plan, say: Callable[[str], None]) -> None:
    """Make the builder match ``spec``, then check every node answers; refusals are exit 2."""
    from python_on_whales.exceptions import DockerException

    check_coverage(spec, plan)
    for action in plan_actions(spec, buildx.inspect(spec.name)):
        say(f"multibake: builder {spec.name}: {action.why}: {action.shell}")
        try:
            buildx.run(action.argv)
        except DockerException as exc:
            raise UsageError(f"builder {spec.name!r}: {action.shell} failed: {_said(exc.stderr)}") from None
    seen: Inspected | None
    try:
        seen, reason = buildx.bootstrap(spec.name, spec.timeout), None
    except NodesDown as exc:
        seen, reason = buildx.inspect(spec.name), str(exc)
    down = silent_nodes(spec, seen)
    if down or reason:
        named = down or silent_nodes(spec, None)  # buildx failed without saying which: every node is suspect
        which = "node" if len(named) == 1 else "nodes"
        raise UsageError(f"builder {spec.name!r}: {which} {', '.join(named)} did not answer: {reason or 'not running'}")


def silent_nodes(spec: BuilderSpec, seen: Inspected | None) -> list[str]:
    """The declared nodes buildx does not report running, as ``name (endpoint)``."""
    status = {n.name: n.status for n in (seen.nodes if seen else ())}
    return [f"{n.name} ({n.endpoint or n.driver.value})" for n in spec.nodes if status.get(n.name) != "running"]


# --- the docker side --------------------------------------------------------------------------------

T = TypeVar("T")


def _said(text: object) -> str:
    # failures.py imports the plan, which imports the config that imports this module: import late
    from multibake.failures import first_line

    return first_line(text if isinstance(text, str) else None)


def within(fn: Callable[[], T], seconds: float) -> T:
    """``fn()``, or NodesDown after ``seconds``; a hung buildx is left behind in a daemon thread."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise NodesDown(f"no answer within {seconds:g} s")
    if "error" in box:
        error = box["error"]
        raise NodesDown(_said(getattr(error, "stderr", None) or str(error))) from error
    value: T = box["value"]
    return value


def observed(builder: Any) -> Inspected:
    """python-on-whales' Builder as plain data (buildx marks platforms given at create time with ``*``)."""
    nodes = []
    for n in builder.nodes or []:
        raw = [str(p) for p in n.platforms or []]
        nodes.append(
            Observed(
                name=n.name or "",
                endpoint=n.endpoint or "",
                platforms=tuple(p.rstrip("*") for p in raw),
                declared=tuple(p.rstrip("*") for p in raw if p.endswith("*")),
                status=n.status or "",
            )
        )
    return Inspected(driver=builder.driver or "", nodes=tuple(nodes))


@dataclass(frozen=True, slots=True)
class WhalesBuildx:
    """Buildx through python-on-whales and the client's own docker command."""

    docker: DockerClient

    def inspect(self, name: str) -> Inspected | None:
        from python_on_whales.exceptions import DockerException

        try:
            return observed(self.docker.buildx.inspect(name))
        except DockerException as exc:
            if "no builder" in str(exc.stderr) or "not found" in str(exc.stderr):
                return None
            raise UsageError(f"cannot inspect builder {name!r}: {_said(exc.stderr)}") from None

    def bootstrap(self, name: str, timeout: float) -> Inspected:
        return observed(within(lambda: self.docker.buildx.inspect(name, bootstrap=True), timeout))

    def run(self, argv: Sequence[str]) -> None:
        # python-on-whales' create() has no --node or --leave: the argv is multibake's, run its way
        from python_on_whales.utils import run

        from multibake.builder import client_argv

        run(client_argv(self.docker, argv))
