"""Multi-node builders made real: platforms.yaml's ``builder:`` (config/nodes.py) turned into a buildx builder.

Before a build multibake compares the declaration with what ``docker buildx inspect`` reports
(``plan_actions``, pure) and runs only what differs: a missing builder is created, a missing node
appended, a changed node left and appended again, a builder that already matches is not touched.
Then every node must answer, and every planned platform must be declared by a node; otherwise the
build is refused (exit 2) before anything is built.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from multibake import docker as door
from multibake import platforms
from multibake.config.nodes import BuilderSpec, Driver, NodeSpec, placement, routed, without
from multibake.docker import DockerFailure, NodeArgs
from multibake.dockerfacts import BuilderFacts
from multibake.errors import UsageError
from multibake.failures import first_line
from multibake.kinds import NodeLoss
from multibake.plan.model import Plan
from multibake.preflight import tls

if TYPE_CHECKING:
    from multibake.docker import Client


# --- what buildx reports, and what to run -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    """A node as ``buildx inspect`` reports it."""

    name: str
    endpoint: str
    platforms: tuple[str, ...]  # what the node runs: those declared at create time first
    declared: tuple[str, ...] = ()  # the ones given with --platform, when buildx marks them (with *)
    status: str = ""
    version: str = ""  # its BuildKit


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


def create_argv(builder: str, node: NodeSpec, *, append: bool) -> tuple[str, ...]:
    args = NodeArgs(
        name=node.name,
        driver=node.driver.value,
        platforms=tuple(node.platforms),
        driver_opts=node.options,
        endpoint=node.endpoint,
    )
    return door.create_argv(builder, args, append=append)


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
    remove = door.remove_argv(spec.name)
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
    actions = [
        Action(argv=door.leave_argv(spec.name, name), why=f"node {name} is not declared: remove it") for name in extra
    ]
    for node in spec.nodes:
        if node.name in changed:
            actions.append(
                Action(argv=door.leave_argv(spec.name, node.name), why=f"node {node.name}: {changed[node.name]}")
            )
        if node.name not in by_name or node.name in changed:
            why = changed.get(node.name) or "a new node"
            actions.append(Action(argv=create_argv(spec.name, node, append=True), why=f"node {node.name}: {why}"))
    return tuple(actions)


def _create_all(spec: BuilderSpec, why: str) -> tuple[Action, ...]:
    return tuple(
        Action(argv=create_argv(spec.name, node, append=i > 0), why=f"node {node.name}: {why}")
        for i, node in enumerate(spec.nodes)
    )


def dry_run_lines(spec: BuilderSpec) -> tuple[str, ...]:
    """The commands that create the builder from nothing, as shell lines (``build --dry-run``)."""
    return tuple(a.shell for a in _create_all(routed(spec), "create"))


def placement_lines(spec: BuilderSpec) -> tuple[str, ...]:
    """``linux/arm64: node pi (native)``: which node builds each platform."""
    return tuple(f"{p}: node {n.name} ({'emulated' if emu else 'native'})" for p, (n, emu) in placement(spec).items())


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

    def probe(self, node: NodeSpec, timeout: float) -> tls.Probe | None: ...  # None: not a tcp:// node


class NodesDown(Exception):
    """The builder's nodes did not all start (buildx's reason) or did not answer in time."""


def ensure(buildx: Buildx, spec: BuilderSpec, plan: Plan, say: Callable[[str], None]) -> BuilderSpec:
    """Make the builder match ``spec``, then check every node answers; refusals are exit 2.

    With ``on_node_loss: emulate`` a node that does not answer is left out and a remaining node
    builds its platforms under emulation: the builder used then is returned (``without``).
    """
    check_coverage(spec, plan)
    gone = refuse_unanswered(buildx, spec)
    if gone:
        spec = emulating(spec, gone, say)
    for action in plan_actions(routed(spec), buildx.inspect(spec.name)):
        say(f"multibake: builder {spec.name}: {action.why}: {action.shell}")
        try:
            buildx.run(action.argv)
        except DockerFailure as exc:
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
    for line in describe(spec, seen):
        say(line)
    return spec


def emulating(spec: BuilderSpec, down: dict[str, str], say: Callable[[str], None]) -> BuilderSpec:
    """The builder without the ``down`` nodes (name → why); said in one line per node."""
    try:
        kept = without(spec, set(down))
    except ValueError:
        raise UsageError(f"builder {spec.name!r}: no node answers ({'; '.join(down.values())})") from None
    for node in spec.nodes:
        if node.name in down:
            say(
                f"multibake: node {node.name} ({node.endpoint}) does not answer ({down[node.name]}): "
                f"{', '.join(node.platforms)} built on node {kept.nodes[0].name} under emulation "
                f"(on_node_loss: emulate; builder {kept.name})"
            )
    return kept


def refuse_unanswered(buildx: Buildx, spec: BuilderSpec) -> dict[str, str]:
    """Exit 2 naming the first tcp:// node that multibake's own connection finds down or refusing TLS.

    With ``on_node_loss: emulate`` the nodes that are down (not those refusing TLS, a configuration
    error) are returned instead, each with why.
    """
    down: dict[str, str] = {}
    for node in spec.nodes:
        found = buildx.probe(node, min(spec.timeout, 10.0))
        if found is None or found.verdict is tls.Verdict.ANSWERS:
            continue
        if found.verdict is tls.Verdict.UNREACHABLE and spec.on_node_loss is NodeLoss.EMULATE:
            down[node.name] = found.reason
            continue
        what = "TLS refused" if found.verdict is tls.Verdict.REFUSED else "not reachable"
        raise UsageError(f"builder {spec.name!r}: node {node.name} ({node.endpoint}): {what}: {found.reason}")
    return down


def lost_nodes(buildx: Buildx, spec: BuilderSpec, timeout: float = 5.0) -> tuple[tuple[NodeSpec, str], ...]:
    """The tcp:// nodes that do not answer now, each with why (after a build failed)."""
    found = ((node, buildx.probe(node, timeout)) for node in spec.nodes)
    return tuple((n, p.reason) for n, p in found if p is not None and p.verdict is not tls.Verdict.ANSWERS)


def describe(spec: BuilderSpec, seen: Inspected | None) -> tuple[str, ...]:
    """One line per node: where, its BuildKit, and which of its platforms it runs natively or emulated."""
    by_name = {n.name: n for n in (seen.nodes if seen else ())}
    lines = []
    for node in spec.nodes:
        facts = by_name.get(node.name)
        native = [p for p in node.platforms if p in node.native_platforms]
        emulated = [p for p in node.platforms if p not in node.native_platforms]
        runs = "; ".join(part for part in (_listed(native, "native"), _listed(emulated, "emulated (QEMU)")) if part)
        version = f"BuildKit {facts.version}" if facts and facts.version else "BuildKit version unknown"
        lines.append(f"multibake: node {node.name} ({node.endpoint or node.driver.value}): {version}; {runs}")
    return tuple(lines)


def _listed(items: list[str], what: str) -> str:
    return f"{', '.join(items)} {what}" if items else ""


def silent_nodes(spec: BuilderSpec, seen: Inspected | None) -> list[str]:
    """The declared nodes buildx does not report running, as ``name (endpoint)``."""
    status = {n.name: n.status for n in (seen.nodes if seen else ())}
    return [f"{n.name} ({n.endpoint or n.driver.value})" for n in spec.nodes if status.get(n.name) != "running"]


# --- the docker side --------------------------------------------------------------------------------

T = TypeVar("T")


def _said(text: object) -> str:
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


def observed(builder: BuilderFacts) -> Inspected:
    """What buildx reports of a builder (it marks platforms given at create time with ``*``)."""
    nodes = tuple(
        Observed(
            name=n.name,
            endpoint=n.endpoint,
            platforms=tuple(p.rstrip("*") for p in n.platforms),
            declared=tuple(p.rstrip("*") for p in n.platforms if p.endswith("*")),
            status=n.status,
            version=n.version,
        )
        for n in builder.nodes
    )
    return Inspected(driver=builder.driver, nodes=nodes)


@dataclass(frozen=True, slots=True)
class WhalesBuildx:
    """Buildx through the docker door."""

    docker: Client

    def inspect(self, name: str) -> Inspected | None:
        try:
            return observed(door.inspect_builder(self.docker, name))
        except DockerFailure as exc:
            if "no builder" in exc.stderr or "not found" in exc.stderr:
                return None
            raise UsageError(f"cannot inspect builder {name!r}: {_said(exc.stderr)}") from None

    def bootstrap(self, name: str, timeout: float) -> Inspected:
        return observed(within(lambda: door.inspect_builder(self.docker, name, bootstrap=True), timeout))

    def run(self, argv: Sequence[str]) -> None:
        door.run(self.docker, argv)

    def probe(self, node: NodeSpec, timeout: float) -> tls.Probe | None:
        return tls.probe(node, timeout)
