"""Configured multi-node builders: validation, the buildx commands planned, preflight, dry run (no docker)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from multibake.cli import app as cli
from multibake.config import schema as cfg
from multibake.config.load import load, validate
from multibake.config.nodes import BuilderSpec, NodeSpec
from multibake.config.yamlpos import parse_yaml
from multibake.docker import DockerFailure
from multibake.dockerfacts import BuilderFacts, NodeFacts
from multibake.errors import ConfigError, UsageError
from multibake.kinds import NodeLoss
from multibake.plan import planner
from multibake.plan.model import Plan
from multibake.preflight import nodes, tls
from multibake.preflight.nodes import Action, Inspected, NodesDown, Observed
from multibake.release import pipeline as release
from multibake.release.resolve import BuildOptions
from multibake.release.tools import Tools
from tests.helpers import FIXED_META, make_context, write_config
from tests.unit.fakes import FakeDocker, FakeRegistry, targets_of

REG = "127.0.0.1:5000/t"
BUILDER = """
builder:
  name: team-builder
  nodes:
    - {name: x86, driver: remote, endpoint: "tcp://buildkit-x86.internal:1234", platforms: [linux/amd64]}
    - {name: pi, driver: remote, endpoint: "tcp://buildkit-arm.internal:1234", platforms: [linux/arm64, armv7]}
"""
CONFIG = f"""
registry: {REG}
platforms: [linux/amd64, linux/arm64, linux/arm/v7]
images:
  app: {{context: app}}
{BUILDER}"""
X86 = ("tcp://buildkit-x86.internal:1234", ("linux/amd64",))
PI = ("tcp://buildkit-arm.internal:1234", ("linux/arm64", "linux/arm/v7"))


def spec(text: str = BUILDER) -> BuilderSpec:
    data, positions, keys = parse_yaml(
        f"registry: {REG}\nplatforms: [linux/amd64]\nimages: {{app: {{context: app}}}}\n{text}", "p.yaml"
    )
    builder = validate(data, "p.yaml", positions, keys).builder
    assert builder is not None
    return builder


def seen(*named: tuple[str, tuple[str, tuple[str, ...]]], driver: str = "remote", status: str = "running") -> Inspected:
    return Inspected(
        driver=driver,
        nodes=tuple(Observed(name=n, endpoint=e, platforms=p, status=status) for n, (e, p) in named),
    )


# --- platforms.yaml --------------------------------------------------------------------------------


def test_the_documented_example_validates() -> None:
    got = spec()
    assert got.name == "team-builder"
    assert [(n.name, n.driver.value, n.platforms) for n in got.nodes] == [
        ("x86", "remote", ["linux/amd64"]),
        ("pi", "remote", ["linux/arm64", "linux/arm/v7"]),  # spellings normalised like everywhere else
    ]
    assert "BuilderSpec" in cfg.Config.model_json_schema()["$defs"]


NODE = '{name: a, driver: remote, endpoint: "tcp://h:1234", platforms: [linux/amd64]}'


@pytest.mark.parametrize(
    ("nodes_yaml", "where", "message"),
    [
        (
            '[{name: a, driver: remote, endpoint: "tcp://h:1", platforms: [sparc]}]',
            "nodes[0].platforms[0]",
            "unknown platform 'sparc'",
        ),
        (
            '[{name: a, driver: remote, endpoint: "tcp://h:1", platforms: [armhf]}]',
            "nodes[0].platforms[0]",
            "ambiguous platform",
        ),
        (f"[{NODE}, {NODE}]", "nodes[1].name", "node name 'a' is listed twice"),
        (
            '[{name: a, driver: remote, endpoint: "tcp://ci:hunter2@h:1", platforms: [amd64]}]',
            "nodes[0].endpoint",
            "credentials",
        ),
        (
            '[{name: a, driver: qemu, endpoint: "tcp://h:1", platforms: [amd64]}]',
            "nodes[0].driver",
            "'qemu' is not one of",
        ),
        (
            '[{name: a, driver: remote, endpoint: "tcp://h:1", platforms: []}]',
            "nodes[0].platforms",
            "must declare the platforms",
        ),
        ("[{name: a, driver: remote, endpoint: tcp://h:1}]", "nodes[0].platforms", "required key 'platforms'"),
        ("[{name: a, driver: remote, platforms: [amd64]}]", "nodes[0]", "a remote node needs an endpoint"),
        (f"[{NODE}, {{name: b, driver: kubernetes, platforms: [arm64]}}]", "nodes[1].driver", "one driver: remote"),
        (
            '[{name: a, driver: remote, endpoint: "tcp://h:1", platforms: [amd64], driver_opt: {}}]',
            "nodes[0].driver_opt",
            "did you mean 'driver_opts'",
        ),
        ("[]", "nodes", "at least 1 item"),
    ],
)
def test_bad_builder_config_is_refused_with_its_location(nodes_yaml: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec(f"builder:\n  name: b\n  nodes: {nodes_yaml}\n")
    text = str(err.value)
    assert text.startswith("p.yaml:6:"), text
    assert f": builder.{where}: " in text.splitlines()[0], text
    assert message in text
    assert "hunter2" not in text


def test_ssh_endpoints_may_name_a_user_but_not_a_password() -> None:
    ok = '[{name: a, driver: docker-container, endpoint: "ssh://pi@rpi.lan", platforms: [arm64]}]'
    assert spec(f"builder:\n  name: b\n  nodes: {ok}\n").nodes[0].endpoint == "ssh://pi@rpi.lan"
    with pytest.raises(ConfigError, match="credentials"):
        spec(f"builder:\n  name: b\n  nodes: {ok.replace('pi@', 'pi:pw@')}\n")


# --- the buildx commands -----------------------------------------------------------------------------


def test_a_missing_builder_is_created_node_by_node() -> None:
    actions = nodes.plan_actions(spec(), None)
    assert [a.shell for a in actions] == [
        "docker buildx create --name team-builder --node x86 --driver remote --platform linux/amd64 "
        "tcp://buildkit-x86.internal:1234",
        "docker buildx create --name team-builder --node pi --driver remote --platform linux/arm64,linux/arm/v7 "
        "--append tcp://buildkit-arm.internal:1234",
    ]


def test_a_builder_that_matches_is_left_alone() -> None:
    assert nodes.plan_actions(spec(), seen(("x86", X86), ("pi", PI))) == ()
    # a running node also lists what its workers detect; buildx's * marks the declared ones
    running = seen(("x86", (X86[0], ("linux/amd64*", "linux/386"))), ("pi", PI))
    assert nodes.plan_actions(spec(), nodes.observed(_whales(running))) == ()


def _whales(found: Inspected) -> BuilderFacts:
    """What the docker door reports of a builder, for ``nodes.observed``."""
    return BuilderFacts(
        name="team",
        driver=found.driver,
        nodes=tuple(
            NodeFacts(name=n.name, endpoint=n.endpoint, platforms=tuple(n.platforms), status=n.status)
            for n in found.nodes
        ),
    )


def test_a_changed_node_is_left_and_appended_again() -> None:
    moved = seen(("x86", X86), ("pi", ("tcp://old-arm:1234", PI[1])))
    actions = nodes.plan_actions(spec(), moved)
    assert [a.argv[:5] for a in actions] == [
        ("docker", "buildx", "create", "--leave", "--name"),
        ("docker", "buildx", "create", "--name", "team-builder"),
    ]
    assert actions[0].shell.endswith("--node pi") and "--append" in actions[1].argv
    assert "endpoint tcp://old-arm:1234 → tcp://buildkit-arm.internal:1234" in actions[1].why
    narrowed = seen(("x86", X86), ("pi", (PI[0], ("linux/arm64*",))))
    assert [a.argv[3] for a in nodes.plan_actions(spec(), narrowed)] == ["--leave", "--name"]


def test_a_new_node_is_appended_and_an_undeclared_one_removed() -> None:
    actions = nodes.plan_actions(spec(), seen(("x86", X86), ("old", PI)))
    assert [a.why for a in actions] == ["node old is not declared: remove it", "node pi: a new node"]
    assert actions[1].argv[-2:] == ("--append", PI[0])


def test_a_builder_with_no_matching_node_or_another_driver_is_recreated() -> None:
    for found in (seen(("old", X86)), seen(("x86", X86), ("pi", PI), driver="docker-container")):
        actions = nodes.plan_actions(spec(), found)
        assert actions[0] == Action(argv=("docker", "buildx", "rm", "team-builder"), why=actions[0].why)
        assert [a.argv[6] for a in actions[1:]] == ["x86", "pi"]


def test_kubernetes_nodes_are_rendered_with_their_driver_options() -> None:
    k8s = spec(
        "builder:\n  name: k\n  nodes:\n"
        "    - {name: arm, driver: kubernetes, platforms: [arm64],\n"
        '       driver_opts: {namespace: ci, replicas: "2", nodeselector: "kubernetes.io/arch=arm64,pool=b"}}\n'
    )
    (line,) = nodes.dry_run_lines(k8s)
    assert line == (
        "docker buildx create --name k --node arm --driver kubernetes --platform linux/arm64 "
        "--driver-opt namespace=ci --driver-opt '\"nodeselector=kubernetes.io/arch=arm64,pool=b\"' "
        "--driver-opt replicas=2"
    )
    # the kubernetes driver names its own endpoint: not a difference
    found = seen(("arm", ("kubernetes:///k?deployment=buildkit-1", ("linux/arm64",))), driver="kubernetes")
    assert nodes.plan_actions(k8s, found) == ()


# --- preflight ---------------------------------------------------------------------------------------


@dataclass
class FakeBuildx:
    """``nodes.Buildx`` in memory: a create/leave/rm changes the builder it reports."""

    builder: Inspected | None = None
    down: set[str] = field(default_factory=set)  # nodes that do not answer
    hang: bool = False
    ran: list[tuple[str, ...]] = field(default_factory=list)
    inspected: int = 0
    probes: dict[str, tls.Probe] = field(default_factory=dict)  # node → what multibake's own connection finds

    def inspect(self, name: str) -> Inspected | None:
        self.inspected += 1
        if self.builder is None:
            return None
        return replace(
            self.builder,
            nodes=tuple(
                replace(n, status="inactive" if n.name in self.down else "running") for n in self.builder.nodes
            ),
        )

    def bootstrap(self, name: str, timeout: float) -> Inspected:
        if self.hang:  # a node that never answers: the real timeout helper gives up
            return nodes.within(lambda: time.sleep(5) or seen(), timeout)  # type: ignore[func-returns-value]
        if self.down:
            raise NodesDown(f"ERROR: failed to bootstrap: dial tcp: lookup {sorted(self.down)[0]}: no such host")
        found = self.inspect(name)
        assert found is not None
        return found

    def probe(self, node: NodeSpec, timeout: float) -> tls.Probe | None:
        return self.probes.get(node.name)

    def run(self, argv: Sequence[str]) -> None:
        self.ran.append(tuple(argv))
        if argv[2] == "rm":
            self.builder = None
            return
        node = argv[argv.index("--node") + 1]
        kept = tuple(n for n in (self.builder.nodes if self.builder else ()) if n.name != node)
        if "--leave" not in argv:
            platforms = tuple(argv[argv.index("--platform") + 1].split(","))
            kept += (Observed(name=node, endpoint=argv[-1], platforms=platforms),)
        driver = argv[argv.index("--driver") + 1] if "--driver" in argv else self.builder.driver  # type: ignore[union-attr]
        self.builder = Inspected(driver=driver, nodes=kept)


def _plan(tmp_path: Path, platforms: str = "[linux/amd64, linux/arm64, linux/arm/v7]") -> Plan:
    make_context(tmp_path, "app")
    path = write_config(tmp_path, CONFIG.replace("[linux/amd64, linux/arm64, linux/arm/v7]", platforms))
    return planner.plan(load(path), FIXED_META)


def test_ensure_creates_once_then_leaves_the_builder_alone(tmp_path: Path) -> None:
    buildx, said = FakeBuildx(), list[str]()
    nodes.ensure(buildx, spec(), _plan(tmp_path), said.append)
    assert [a[6] for a in buildx.ran] == ["x86", "pi"]
    assert said[0].startswith("multibake: builder team-builder: node x86: create the builder: docker buildx create")
    buildx.ran.clear()
    nodes.ensure(buildx, spec(), _plan(tmp_path), said.append)
    assert buildx.ran == [], "a builder that matches gets no command that changes it"


def test_a_platform_no_node_builds_is_refused_before_docker_is_asked(tmp_path: Path) -> None:
    only_amd64 = spec(BUILDER.replace("[linux/arm64, armv7]", "[linux/arm64]"))
    buildx = FakeBuildx()
    with pytest.raises(UsageError) as err:
        nodes.ensure(buildx, only_amd64, _plan(tmp_path), print)
    first, hint = str(err.value).splitlines()
    assert first == ("no node of builder 'team-builder' builds linux/arm/v7 (nodes: x86: linux/amd64; pi: linux/arm64)")
    assert "add a node" in hint and "restrict the cells' platforms" in hint
    assert buildx.inspected == 0 and buildx.ran == []


def test_a_node_that_does_not_answer_is_named_in_one_line(tmp_path: Path) -> None:
    buildx = FakeBuildx(builder=seen(("x86", X86), ("pi", PI)), down={"pi"})
    with pytest.raises(UsageError) as err:
        nodes.ensure(buildx, spec(), _plan(tmp_path), print)
    text = str(err.value)
    assert text == (
        "builder 'team-builder': node pi (tcp://buildkit-arm.internal:1234) did not answer: "
        "ERROR: failed to bootstrap: dial tcp: lookup pi: no such host"
    )


def test_a_node_that_hangs_is_refused_after_the_timeout(tmp_path: Path) -> None:
    buildx = FakeBuildx(builder=seen(("x86", X86), ("pi", PI)), hang=True, down={"x86", "pi"})
    quick = spec(BUILDER.replace("name: team-builder", "name: team-builder\n  timeout: 0.05"))
    started = time.monotonic()
    with pytest.raises(
        UsageError, match=r"nodes x86 \(tcp://buildkit-x86.internal:1234\), pi .* no answer within 0.05 s"
    ):
        nodes.ensure(buildx, quick, _plan(tmp_path), print)
    assert time.monotonic() - started < 2


def test_a_failed_buildx_create_is_a_usage_error(tmp_path: Path) -> None:
    class Refusing(FakeBuildx):
        def run(self, argv: Sequence[str]) -> None:
            raise DockerFailure(list(argv), 'ERROR: failed to find driver "remote"')

    with pytest.raises(UsageError, match='failed: ERROR: failed to find driver "remote"'):
        nodes.ensure(Refusing(), spec(), _plan(tmp_path), print)


# --- the release pipeline ----------------------------------------------------------------------------


def _tools(docker: FakeDocker, buildx: FakeBuildx, said: list[str]) -> Tools:
    return Tools(
        docker=lambda: docker,  # type: ignore[arg-type,return-value]  # a duck-typed fake
        echo=lambda line: None,
        say=said.append,
        api=docker.registry,
        bake_runner=lambda d: d.run_bake,  # type: ignore[attr-defined]
        buildx=lambda d: buildx,
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    make_context(tmp_path, "app")
    return write_config(tmp_path, CONFIG)


def test_a_build_makes_the_configured_builder_and_bakes_on_it(project: Path) -> None:
    plan = planner.plan(load(project), FIXED_META)
    docker, buildx, said = FakeDocker(registry=FakeRegistry(), targets=targets_of(plan)), FakeBuildx(), list[str]()
    built = release.build(BuildOptions(config=project), _tools(docker, buildx, said))
    assert built.ok
    assert [a[6] for a in buildx.ran] == ["x86", "pi"]
    assert docker.argvs[0][docker.argvs[0].index("--builder") + 1] == "team-builder"


def test_builder_on_the_command_line_leaves_the_configured_nodes_alone(project: Path) -> None:
    plan = planner.plan(load(project), FIXED_META)
    docker, buildx = FakeDocker(registry=FakeRegistry(), targets=targets_of(plan)), FakeBuildx()
    built = release.build(BuildOptions(config=project, builder="mine"), _tools(docker, buildx, []))
    assert built.ok
    assert buildx.ran == [] and buildx.inspected == 0
    assert docker.argvs[0][docker.argvs[0].index("--builder") + 1] == "mine"


def test_dry_run_prints_the_buildx_create_commands(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["build", "--dry-run", "-c", str(project)]) == 0
    out = capsys.readouterr().out.splitlines()
    creates = [line for line in out if line.startswith("# docker buildx create")]
    assert creates == [f"# {line}" for line in nodes.dry_run_lines(spec())]
    assert out[-1].startswith("# cd ") and "--builder team-builder" in out[-1]


def test_dry_run_refuses_a_platform_no_node_builds(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project.write_text(project.read_text().replace("[linux/arm64, armv7]", "[linux/arm64]"))
    assert cli.run(["build", "--dry-run", "-c", str(project)]) == 2
    assert "no node of builder 'team-builder' builds linux/arm/v7" in capsys.readouterr().err


@dataclass
class DyingBuildx(FakeBuildx):
    """A builder whose node ``pi`` stops answering once preflight has seen it answer."""

    seen_alive: int = 0

    def probe(self, node: NodeSpec, timeout: float) -> tls.Probe | None:
        self.seen_alive += 1
        if node.name == "pi" and self.seen_alive > 2:  # preflight probes each of the two nodes once
            return tls.Probe(verdict=tls.Verdict.UNREACHABLE, reason="connection refused")
        return tls.Probe(verdict=tls.Verdict.ANSWERS)


def test_a_node_lost_during_the_build_is_named_and_not_retried(project: Path) -> None:
    plan = planner.plan(load(project), FIXED_META)
    docker = FakeDocker(registry=FakeRegistry(), targets=targets_of(plan), transient=[0, 0, 0, 0])
    buildx, said = DyingBuildx(), list[str]()
    built = release.build(BuildOptions(config=project, push=True), _tools(docker, buildx, said))
    assert not built.ok and built.report is not None
    assert len(docker.argvs) == 1, "a node that is gone is not worth a retry"
    (cell,) = built.report.cells
    assert cell.error == "node pi (tcp://buildkit-arm.internal:1234) stopped answering: connection refused"
    assert any(line.startswith("multibake: error: node pi (tcp://buildkit-arm.internal:1234)") for line in said)
    assert built.report.placement == {
        "linux/amd64": ("x86", False),
        "linux/arm64": ("pi", False),
        "linux/arm/v7": ("pi", False),
    }


def test_on_node_loss_emulate_builds_the_lost_nodes_cells_again_on_the_other(project: Path) -> None:
    plan = planner.plan(load(project), FIXED_META)
    docker = FakeDocker(registry=FakeRegistry(), targets=targets_of(plan), transient=[0])
    buildx, said = DyingBuildx(), list[str]()
    opts = BuildOptions(config=project, push=True, on_node_loss=NodeLoss.EMULATE)
    built = release.build(opts, _tools(docker, buildx, said))
    assert built.ok, said
    builders = [argv[argv.index("--builder") + 1] for argv in docker.argvs]
    assert builders == ["team-builder", "team-builder-without-pi"]
    assert any("built on node x86 under emulation" in line for line in said)
    assert built.report is not None and built.report.placement["linux/arm64"] == ("x86", True)
