"""BuildKit's own builders, as `scripts/setup-stack.sh --stack buildkit` registers them.

`multibake-remote` is one standalone buildkitd serving every platform; `multibake-multinode` has a node
`amd64` (linux/amd64) and a node `arm` (linux/arm64, linux/arm/v7), standing in for a native x86 host
and a native arm host. Both push by digest. Assertions read the registry and run the images.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import unavailable
from tests.integration import registry
from tests.integration.test_build import UNAME
from tests.integration.test_publish import SHORT, multibake, plan_of, push, write_release
from tests.integration.test_real_tier import docker

NODE_OF = {"linux/amd64": "amd64", "linux/arm64": "arm", "linux/arm/v7": "arm"}


def _builder(name: str) -> str:
    """``name`` when buildx knows it; skips (in CI: fails) when the buildkit stack is not set up."""
    found = subprocess.run(["docker", "buildx", "inspect", name], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        message = f"builder {name} is missing: run scripts/setup-stack.sh --stack buildkit"
        unavailable(message)
    return name


def _staging_tags(plan: dict[str, object]) -> list[str]:
    repos = {registry.split(c["tags"][0])[:2] for c in plan["cells"]}  # type: ignore[attr-defined]
    return [t for host, repo in repos for t in registry.tags(host, repo) if t.startswith("multibake-staging-")]


@pytest.mark.parametrize("name", ["multibake-remote", "multibake-multinode"])
def test_buildkit_builders_publish_complete_verified_indexes_by_digest(stack: None, tmp_path: Path, name: str) -> None:
    cfg = write_release(tmp_path)
    code, report, err = push(cfg, "--builder", _builder(name))
    assert code == 0, err[-3000:]
    assert report["route"] == "push-by-digest" and report["builder"]["driver"] == "remote"
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        index = registry.get(cell["tags"][0])
        assert index is not None and index.is_index
        assert sorted(index.platforms()) == sorted(cell["platforms"])
    assert _staging_tags(plan) == [], "pushing by digest leaves no staging tag"
    verify = multibake("verify", "--json", "-c", str(cfg))
    assert verify.returncode == 0, verify.stdout[-2000:]


def test_each_platform_is_built_on_the_node_that_declares_it_and_runs_as_its_arch(stack: None, tmp_path: Path) -> None:
    # the app family has per-platform args: one bake target per platform, so one node each
    cfg = write_release(tmp_path)
    code, report, err = push(cfg, "--builder", _builder("multibake-multinode"))
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    app = [c for c in plan["cells"] if c["family"] == "app"]
    assert app
    for cell in app:
        for platform in cell["platforms"]:
            piece = f"{cell['target']}--{SHORT[platform]}"  # the bake target of one platform
            assert report["nodes"].get(piece) == NODE_OF[platform], (piece, report["nodes"])
            (ref,) = cell["platform_tags"][platform]
            ran = docker("run", "--rm", "--platform", platform, ref, "cat", "/arch", timeout=300)
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == UNAME[platform], (ref, ran.stdout)
    assert json.loads(multibake("verify", "--json", "-c", str(cfg)).stdout)["ok"] is True


def _declare(cfg: Path, name: str, arm_endpoint: str) -> None:
    """Add a ``builder:`` of two nodes on the buildkit stack's daemons to the release ``cfg``."""
    cfg.write_text(
        cfg.read_text()
        + f"builder:\n  name: {name}\n  timeout: 30\n  nodes:\n"
        + "    - {name: x86, driver: remote, endpoint: 'unix:///run/multibake/buildkitd-amd64.sock',"
        + " platforms: [linux/amd64]}\n"
        + f"    - {{name: pi, driver: remote, endpoint: '{arm_endpoint}', platforms: [linux/arm64, linux/arm/v7]}}\n"
    )


def test_a_declared_builder_is_created_once_and_builds_each_platform_on_its_node(stack: None, tmp_path: Path) -> None:
    _builder("multibake-multinode")  # the daemons of the buildkit stack are there
    name = f"mb-declared-{uuid.uuid4().hex[:6]}"
    cfg = write_release(tmp_path)
    _declare(cfg, name, "unix:///run/multibake/buildkitd-arm.sock")
    try:
        code, report, err = push(cfg)
        assert code == 0, err[-3000:]
        assert report["builder"]["name"] == name and report["route"] == "push-by-digest"
        app = next(c for c in plan_of(cfg)["cells"] if c["family"] == "app")
        assert report["nodes"][f"{app['target']}--amd64"] == "x86"
        assert report["nodes"][f"{app['target']}--armv7"] == "pi"
        listed = subprocess.run(["docker", "buildx", "inspect", name], capture_output=True, text=True, check=True)
        assert "x86" in listed.stdout and "pi" in listed.stdout
        code, _, err = push(cfg)  # the builder matches its declaration: used as it is
        assert code == 0, err[-3000:]
    finally:
        subprocess.run(["docker", "buildx", "rm", name], capture_output=True, check=False)


def test_a_declared_node_that_does_not_answer_is_refused_before_anything_builds(stack: None, tmp_path: Path) -> None:
    _builder("multibake-multinode")
    name = f"mb-silent-{uuid.uuid4().hex[:6]}"
    cfg = write_release(tmp_path)
    _declare(cfg, name, f"unix://{tmp_path}/nobody.sock")
    try:
        proc = multibake("build", "--push", "-c", str(cfg))
        assert proc.returncode == 2, proc.stderr[-3000:]
        error = [line for line in proc.stderr.splitlines() if line.startswith("multibake: error:")]
        assert len(error) == 1 and "node pi" in error[0] and "nobody.sock" in error[0], proc.stderr
        assert "Traceback" not in proc.stderr
        plan = plan_of(cfg)
        assert all(registry.get(c["tags"][0]) is None for c in plan["cells"]), "nothing was pushed"
    finally:
        subprocess.run(["docker", "buildx", "rm", name], capture_output=True, check=False)
