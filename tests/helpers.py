"""Shared helpers for the unit and integration tests: paths, a fixed Meta, writing configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest

from multibake.config.load import load
from multibake.plan import planner as plan
from multibake.plan.model import Meta, Plan

REPO_ROOT = Path(__file__).resolve().parent.parent
# The families the plan, render and CLI unit tests are written against (two families, a child include
# on a platform subset and so a view, `when` tags): platforms.yaml as first shipped, kept as a fixture
# so that the repository's own platforms.yaml (RELEASE_CONFIG, checked by tests/unit/test_shipped_families.py)
# can follow real releases without rewriting those tests.
SHIPPED_CONFIG = REPO_ROOT / "tests" / "unit" / "example" / "platforms.yaml"
RELEASE_CONFIG = REPO_ROOT / "platforms.yaml"

# A fixed provenance so plans and renderings never depend on the clock or the checkout.
FIXED_META = Meta(
    created="2024-06-01T12:00:00Z",
    revision="0123456789abcdef0123456789abcdef01234567",
    source="https://example.com/org/multibake",
)


def write_config(directory: Path, text: str, name: str = "platforms.yaml") -> Path:
    """Write a (dedented) platforms.yaml into ``directory`` and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def make_context(directory: Path, context: str, dockerfile: str = "Dockerfile") -> None:
    """Create a build context directory with a Dockerfile under ``directory``."""
    ctx = directory / context
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / dockerfile).parent.mkdir(parents=True, exist_ok=True)
    (ctx / dockerfile).write_text("FROM scratch\n", encoding="utf-8")


def plan_file(path: Path, registry: str | None = None, meta: Meta = FIXED_META) -> Plan:
    """load → plan with a fixed Meta (pure: no git, no clock)."""
    return plan.plan(load(path, registry), meta)


def plan_text(directory: Path, text: str, registry: str | None = None, meta: Meta = FIXED_META) -> Plan:
    return plan_file(write_config(directory, text), registry, meta)


def local_context(tmp_path: Path, source: Path) -> str:
    """``source`` (a build context of the repository) as a context of a config written in ``tmp_path``.

    A config's contexts must lie in its own project (its git work tree, else its directory), so tests
    that write a config elsewhere bring the context along: hard links where possible, else copies.
    """
    dest = tmp_path / source.name
    if not dest.exists():

        def link(src: str, dst: str) -> object:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            return dst

        shutil.copytree(source, dest, copy_function=link)
    return source.name


def run_cli(
    *args: str,
    cwd: Path = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess[str]:
    """``multibake ARGS`` in a process of its own, as a user runs it: ``env`` on top of this process's
    environment, or ``environ`` instead of it."""
    return subprocess.run(
        [sys.executable, "-m", "multibake", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
        env=dict(environ) if environ is not None else {**os.environ, **(env or {})},
    )


def unavailable(message: str) -> NoReturn:
    """A piece of the stack a test needs is missing: skipped on a workstation, a failure in CI, where
    nothing may be skipped for want of setup."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, refusing to skip: {message}")
    pytest.skip(message)
