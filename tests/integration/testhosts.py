"""BuildKit nodes on hosts of their own for the tests: ``scripts/buildkit-net.sh`` under a name of the tests.

Network namespaces joined by veth pairs to a bridge (10.214.0.1 on this machine), one buildkitd per
namespace on TCP with mutual TLS, and a TLS registry on 10.214.0.1:5443 the nodes reach at that
address. Everything lives while the session fixture ``test_hosts`` does and is removed afterwards,
also after a failure; a killed run's leftovers are removed by the next ``up`` of the same name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "buildkit-net.sh"
NAME = "mbt"  # not the setup script's mbnet: the tests make and remove their own
SUBNET = "10.214.0"
NODES = "amd64: arm:linux/arm64,linux/arm/v7"


@dataclass(frozen=True)
class Node:
    name: str
    endpoint: str
    servername: str
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class Hosts:
    registry: str  # host:port as image references name it
    ca: Path
    client_cert: Path
    client_key: Path
    bundle: Path  # the system's CAs and the test CA: SSL_CERT_FILE for buildx
    nodes: dict[str, Node]

    @property
    def env(self) -> dict[str, str]:
        """What multibake's process needs: buildx trusts the test registry's CA through SSL_CERT_FILE."""
        return {"SSL_CERT_FILE": str(self.bundle)}

    def stop(self, node: str) -> None:
        """Kill ``node``'s buildkitd, as a host that dies."""
        _script("stop", node)

    def start(self, node: str) -> None:
        _script("start", node)

    def node_yaml(self, node: str, **override: str) -> str:
        """The node as an entry of ``builder.nodes`` (files and servername overridable)."""
        n = self.nodes[node]
        fields = {
            "cacert": str(self.ca),
            "cert": str(self.client_cert),
            "key": str(self.client_key),
            "servername": n.servername,
            **override,
        }
        platforms = ", ".join(n.platforms or ("linux/amd64",))
        extra = "".join(f", {k}: '{v}'" for k, v in fields.items())
        return f"    - {{name: {node}, driver: remote, endpoint: '{n.endpoint}', platforms: [{platforms}]{extra}}}\n"


def _script(*args: str) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args, "--name", NAME, "--subnet", SUBNET, "--nodes", NODES],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"buildkit-net.sh {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _parse(env: str) -> Hosts:
    values = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
    nodes = {}
    for spec in NODES.split():
        name, _, platforms = spec.partition(":")
        nodes[name] = Node(
            name=name,
            endpoint=values[f"NODE_{name}_ENDPOINT"],
            servername=values[f"NODE_{name}_SERVERNAME"],
            platforms=tuple(p for p in platforms.split(",") if p),
        )
    return Hosts(
        registry=values["REGISTRY"],
        ca=Path(values["CA"]),
        client_cert=Path(values["CLIENT_CERT"]),
        client_key=Path(values["CLIENT_KEY"]),
        bundle=Path(values["SSL_CERT_FILE"]),
        nodes=nodes,
    )


def missing() -> str | None:
    """Why the test hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "openssl", "docker-registry", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    cache = Path(os.environ.get("MULTIBAKE_CACHE", "/var/cache/multibake"))
    if not any(cache.glob("buildkit-*/bin/buildkitd")):
        return "no buildkitd: run scripts/setup-stack.sh --stack buildkit"
    return None


@contextlib.contextmanager
def running() -> Iterator[Hosts]:
    """The hosts, up until the block ends; removed then, whatever happened."""
    try:
        hosts = _parse(_script("up"))
        yield hosts
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _script("down")


def skip_or_fail(reason: str) -> None:
    message = f"BuildKit test hosts unavailable: {reason}"
    unavailable(message)
