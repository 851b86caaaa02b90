"""BuildKit's own builders, as `scripts/setup-stack.sh --stack buildkit` registers them.

`multibake-remote` is one standalone buildkitd serving every platform; `multibake-multinode` has a node
`amd64` (linux/amd64) and a node `arm` (linux/arm64, linux/arm/v7), standing in for a native x86 host
and a native arm host. Both push by digest. Assertions read the registry and run the images.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration import registry
from tests.integration.test_publish import multibake, plan_of, push, write_release

NODE_OF = {"linux/amd64": "amd64", "linux/arm64": "arm", "linux/arm/v7": "arm"}
SHORT = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armv7"}
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "armv7l"}


def _builder(name: str) -> str:
    """``name`` when buildx knows it; skips (in CI: fails) when the buildkit stack is not set up."""
    found = subprocess.run(["docker", "buildx", "inspect", name], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        message = f"builder {name} is missing: run scripts/setup-stack.sh --stack buildkit"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, refusing to skip: {message}")
        pytest.skip(message)
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
            ran = subprocess.run(
                ["docker", "run", "--rm", "--platform", platform, ref, "cat", "/arch"],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == UNAME[platform], (ref, ran.stdout)
    assert json.loads(multibake("verify", "--json", "-c", str(cfg)).stdout)["ok"] is True
