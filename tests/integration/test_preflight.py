"""The base-image preflight against the real registry on 127.0.0.1:5000 and a host nobody answers on.

A base is pushed for two platforms only; a cell asking for linux/arm/v7 FROM it is refused before
anything builds (exit 2, nothing pushed). A base on an unreachable host is warned about, quickly, and
the build goes on (and fails in bake, which cannot pull it either).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import local_context
from tests.integration import registry
from tests.integration.test_publish import BUSYBOX_BASE, multibake

TWO = ["linux/amd64", "linux/arm64"]
DEAD = "127.0.0.1:9/x:1"  # the discard port: nothing listens, connections are refused at once


@pytest.fixture(scope="module")
def two_platform_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox base in the local registry for linux/amd64 and linux/arm64 only."""
    tmp = tmp_path_factory.mktemp("base")
    ref = f"127.0.0.1:5000/pre-{uuid.uuid4().hex[:8]}/base:two"
    context = tmp / local_context(tmp, BUSYBOX_BASE)
    build = ["docker", "buildx", "build", "--platform", ",".join(TWO), "--build-arg", "BUSYBOX_VERSION=1.35"]
    subprocess.run(
        [*build, "--provenance=false", "--push", "-t", ref, str(context)],
        check=True,
        timeout=1800,
    )
    held = registry.get(ref)
    assert held is not None and sorted(held.platforms()) == TWO
    return ref


def write_config(tmp_path: Path, base: str, platforms: str = "") -> tuple[Path, str]:
    """One family FROM ``base``; its registry namespace is new, so whatever it holds afterwards was pushed."""
    ns = f"127.0.0.1:5000/pf-{uuid.uuid4().hex[:8]}"
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "Dockerfile").write_text(f"ARG BASE={base}\nFROM ${{BASE}}\nRUN echo ok > /ok\n")
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {ns}\n"
        "platforms: [linux/amd64, linux/arm64, linux/arm/v7]\n"
        "images:\n"
        "  app:\n"
        "    context: app\n" + (f"    platforms: {platforms}\n" if platforms else "")
    )
    return cfg, ns


def test_a_cell_asking_for_a_platform_its_base_lacks_is_refused_before_building(
    stack: None, tmp_path: Path, two_platform_base: str
) -> None:
    cfg, ns = write_config(tmp_path, two_platform_base)
    out = multibake("build", "--push", "-c", str(cfg), "--progress", "plain")
    assert out.returncode == 2, out.stderr
    assert f"cell app--image: its base {two_platform_base} does not publish linux/arm/v7" in out.stderr
    assert "restrict the cell's platforms" in out.stderr
    assert "buildx" not in out.stderr.split("preflight:")[0]  # refused before the builder was even asked
    host, _, repo = ns.partition("/")
    assert registry.tags(host, f"{repo}/app") == []  # nothing was pushed


def test_restricting_the_cells_platforms_builds_and_the_summary_names_the_base(
    stack: None, tmp_path: Path, two_platform_base: str
) -> None:
    cfg, ns = write_config(tmp_path, two_platform_base, platforms="[linux/amd64, linux/arm64]")
    out = multibake("build", "--push", "-c", str(cfg), "--progress", "plain")
    assert out.returncode == 0, out.stderr
    assert two_platform_base in out.stdout  # the BASE column
    held = registry.get(f"{ns}/app:latest")
    assert held is not None and sorted(held.platforms()) == TWO


def test_an_unreachable_base_host_is_warned_about_quickly_and_the_build_goes_on(stack: None, tmp_path: Path) -> None:
    cfg, _ = write_config(tmp_path, DEAD)
    started = time.monotonic()
    out = multibake("build", "-c", str(cfg), "--progress", "plain")
    elapsed = time.monotonic() - started
    warnings = [line for line in out.stderr.splitlines() if line.startswith("multibake: warning:")]
    assert warnings == [warnings[0]] and "could not read 1 base image(s) from 127.0.0.1:9" in warnings[0]
    assert out.returncode == 1, out.stderr  # bake ran, and could not pull the base either
    assert elapsed < 300, elapsed  # preflight did not hang: refused connections, two short attempts

    quiet = multibake("build", "--no-preflight", "-c", str(cfg), "--progress", "plain")
    assert quiet.returncode == 1
    assert "multibake: warning:" not in quiet.stderr
