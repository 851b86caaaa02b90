"""Integration tests run the real stack (docker, buildx); they are marked ``integration``.

The ``stack`` fixture checks that docker and buildx answer. Without them the tests are skipped on a
developer machine, but fail in CI (env CI set): CI must never go green by silently skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import unavailable
from tests.integration import authregistry, registry

_HERE = Path(__file__).parent
COSIGN_VERSION = "v2.6.5"  # what scripts/setup-stack.sh --with cosign builds
CACHED_COSIGN = Path(os.environ.get("MULTIBAKE_CACHE", "/var/cache/multibake")) / f"cosign-{COSIGN_VERSION}" / "cosign"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's `pytestmark` does not apply to the modules beside it; mark them here instead.
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def _check(argv: list[str]) -> str | None:
    """None when ``argv`` works, else a one-line reason."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return f"{argv[0]} is not installed"
    except OSError as exc:
        return f"{argv[0]} cannot run: {exc}"
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv)}` timed out"
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        return f"`{' '.join(argv)}` failed: {detail[-1] if detail else f'exit {out.returncode}'}"
    return None


@pytest.fixture(scope="session")
def stack() -> str:
    """The buildx version string; skips (or in CI fails) when docker/buildx do not work."""
    for argv in (["docker", "buildx", "version"], ["docker", "info"]):
        problem = _check(argv)
        if problem is not None:
            message = f"the docker/buildx stack is not available: {problem} (run scripts/setup-stack.sh)"
            unavailable(message)
    version = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, check=True).stdout
    return version.strip()


_MEASURED: list[str] = []


@pytest.fixture(scope="session")
def measured() -> Callable[[str], None]:
    """Keeps a line of numbers a test measured; they are printed at the end of the run."""
    return _MEASURED.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def auth_registry(stack: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[authregistry.AuthRegistry]:
    """A registry with htpasswd auth behind TLS, its CA trusted as docker trusts one (authregistry.py).

    Yields host (address:port), user, password and the CA's path; ``registry.get`` and friends read it
    with those. Everything it made (the process, its storage, /etc/docker/certs.d/<host>) is removed
    at the end of the session.
    """
    with authregistry.start(tmp_path_factory.mktemp("auth-registry")) as reg:
        registry.allow(reg.host, ca=reg.ca, user=reg.user, password=reg.password)
        try:
            yield reg
        finally:
            registry.forget(reg.host)


@pytest.fixture(scope="session")
def cosign_bin(stack: str) -> str:
    """cosign: on PATH, or the one scripts/setup-stack.sh --with cosign cached (fails in CI when absent)."""
    found = shutil.which("cosign") or (str(CACHED_COSIGN) if CACHED_COSIGN.is_file() else None)
    if found is None:
        message = "cosign is not installed (scripts/setup-stack.sh --with cosign)"
        unavailable(message)
    return found


@pytest.fixture(scope="session")
def sbom_generator(stack: str) -> str:
    """The SBOM generator image in the local registry (scripts/sbom-scanner.sh makes it once, then it is cached)."""
    script = _HERE.parents[1] / "scripts" / "sbom-scanner.sh"
    ref = subprocess.run(
        ["bash", str(script), "--print-ref"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if registry.get(ref) is None:
        made = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
        assert made.returncode == 0, made.stderr[-3000:]
    return ref
