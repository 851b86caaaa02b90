"""Multi-node builders as configuration: platforms.yaml's ``builder:``, its nodes and their checks.

``builder:`` names a buildx builder and its nodes (name, driver, endpoint, driver options, the
platforms each builds, and for a ``tcp://`` node the files of mutual TLS: ``cacert``, ``cert``,
``key``, ``servername``, as buildx's remote driver takes them). Those files are checked when the
configuration is loaded (exit 2 naming the node and the file) and their paths made absolute; their
content is read only by Python's TLS library, never shown. Before a build multibake compares that declaration with what
``docker buildx inspect`` reports (``plan_actions``, pure) and runs only what differs: a missing
builder is created, a missing node appended, a changed node left and appended again, a builder
that already matches is not touched. Then every node must answer, and every planned platform must
be declared by a node; otherwise the build is refused (exit 2) before anything is built.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from multibake import platforms
from multibake.config.model import Model
from multibake.config.yamlpos import KeyPath
from multibake.errors import ConfigError
from multibake.kinds import NodeLoss
from multibake.refs import CREDENTIALS_ADVICE

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # buildx's builder and node names
_OPT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@")
DEFAULT_TIMEOUT = 120.0  # seconds: a docker-container node may pull BuildKit's image on first bootstrap


class TlsOption(StrEnum):
    """buildx's remote driver options for mutual TLS; the first three name files."""

    CACERT = "cacert"
    CERT = "cert"
    KEY = "key"
    SERVERNAME = "servername"


TLS_FILES = (TlsOption.CACERT, TlsOption.CERT, TlsOption.KEY)


def _platform(value: str) -> str:
    return platforms.normalize(value)


Platform = Annotated[str, AfterValidator(_platform)]


class Driver(StrEnum):
    REMOTE = "remote"
    DOCKER_CONTAINER = "docker-container"
    KUBERNETES = "kubernetes"


class NodeSpec(Model):
    """One node of the builder: where BuildKit runs and which platforms bake sends to it."""

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
    native: list[Platform] | None = Field(
        default=None,
        description="the platforms its CPU runs without emulation (default: the first platform listed, and "
        "arm/v7, arm/v6 beside arm64); when several nodes build a platform, a native one builds it",
    )
    cacert: str | None = Field(default=None, description="tcp:// only: the CA that signed the node's certificate")
    cert: str | None = Field(default=None, description="tcp:// only: the client certificate the node trusts")
    key: str | None = Field(default=None, description="tcp:// only: the client certificate's private key")
    servername: str | None = Field(
        default=None, description="tcp:// only: the name in the node's certificate, when not the endpoint's host"
    )

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

    @model_validator(mode="after")
    def _tls_options(self) -> NodeSpec:
        both = [o.value for o in TlsOption if getattr(self, o.value) is not None and o.value in self.driver_opts]
        if both:
            raise ValueError(f"{both[0]} is given twice: as a key of the node and in driver_opts; keep one")
        tls = self.tls
        if tls and (self.driver is not Driver.REMOTE or not (self.endpoint or "").startswith("tcp://")):
            raise ValueError(f"{', '.join(tls)}: TLS options are for a remote node with a tcp:// endpoint")
        if (TlsOption.CERT in tls) != (TlsOption.KEY in tls):
            raise ValueError("cert and key go together: the client certificate and its private key")
        return self

    @property
    def tls(self) -> dict[TlsOption, str]:
        """The node's TLS options, given as keys of the node or in driver_opts."""
        found = {o: getattr(self, o.value) or self.driver_opts.get(o.value) for o in TlsOption}
        return {o: v for o, v in found.items() if v}

    @property
    def options(self) -> dict[str, str]:
        """Every ``--driver-opt`` of the node: driver_opts and the TLS options."""
        return {**self.driver_opts, **{o.value: v for o, v in self.tls.items()}}

    @property
    def native_platforms(self) -> tuple[str, ...]:
        """What the node runs without emulation: ``native``, else guessed from its first platform."""
        if self.native is not None:
            return tuple(self.native)
        first = self.platforms[0]
        return (first, *NATIVE_TOO.get(first, ()))


# A CPU of the first kind runs these without emulation too (most arm64 hosts run 32-bit arm code).
NATIVE_TOO = {"linux/arm64": ("linux/arm/v7", "linux/arm/v6"), "linux/arm/v7": ("linux/arm/v6",)}


class BuilderSpec(Model):
    """A buildx builder multibake creates or updates before building (``--builder`` on the command line wins)."""

    name: str = Field(description="the buildx builder's name")
    nodes: list[NodeSpec] = Field(min_length=1, description="its nodes, in buildx's order")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, le=3600, description="seconds the nodes have to answer before a build"
    )
    on_node_loss: NodeLoss = Field(
        default=NodeLoss.FAIL,
        description="fail: a node that does not answer fails its cells; emulate: a remaining node builds its "
        "platforms under emulation (build --on-node-loss overrides)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "a builder name is 1 to 63 letters, digits, '.', '_' or '-', starting with one of the first two"
            )
        return value


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


def with_files(spec: BuilderSpec, root: Path, error: Callable[[KeyPath, str], ConfigError]) -> BuilderSpec:
    """``spec`` with its TLS files checked (exist, readable, PEM; cert and key a pair) and made absolute.

    Paths are relative to platforms.yaml's folder. A failure names the node and the file (exit 2);
    what a file holds never appears in a message.
    """
    resolved = []
    for i, node in enumerate(spec.nodes):
        files: dict[str, str] = {}
        for option in TLS_FILES:
            given = node.tls.get(option)
            if given is None:
                continue
            where: KeyPath = ("builder", "nodes", i, *_key_of(node, option))
            path = (root / Path(given).expanduser()).resolve()
            problem = _file_problem(path)
            if problem:
                raise error(where, f"node {node.name}: {option.value} {given}: {problem}")
            files[option.value] = str(path)
        problem = _pem_problem(files)
        if problem:
            raise error(("builder", "nodes", i, *_key_of(node, TlsOption.CERT)), f"node {node.name}: {problem}")
        opts = {k: files.get(k, v) for k, v in node.driver_opts.items()}
        explicit = {k: v for k, v in files.items() if getattr(node, k) is not None}
        resolved.append(node.model_copy(update={"driver_opts": opts, **explicit}))
    return spec.model_copy(update={"nodes": resolved})


def _key_of(node: NodeSpec, option: TlsOption) -> KeyPath:
    return (option.value,) if getattr(node, option.value) is not None else ("driver_opts", option.value)


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a file"
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _pem_problem(files: dict[str, str]) -> str | None:
    """Why the files are not a usable CA, or certificate and key pair (Python's TLS library reads them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cacert, cert, key = (files.get(o.value) for o in TLS_FILES)
    if cacert:
        try:
            context.load_verify_locations(cafile=cacert)
        except (ssl.SSLError, ValueError):
            return f"cacert {cacert} holds no PEM certificate"
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError):
            # the library's own words can quote the file: say only which pair failed
            return f"cert {cert} and key {key} are not a PEM certificate and its private key"
    return None


def placement(spec: BuilderSpec) -> dict[str, tuple[NodeSpec, bool]]:
    """platform → the node that builds it and whether under emulation: a native node first, then the listed order.

    buildx sends a platform to the first node that declares it; a native node declared after an
    emulating one is preferred here and the declaration is made to match (``routed``).
    """
    chosen: dict[str, tuple[NodeSpec, bool]] = {}
    for native_pass in (True, False):
        for node in spec.nodes:
            for p in node.platforms:
                is_native = p in node.native_platforms
                if p not in chosen and is_native == native_pass:
                    chosen[p] = (node, not is_native)
    return chosen


def routed(spec: BuilderSpec) -> BuilderSpec:
    """``spec`` with each platform declared only by the node ``placement`` chose (a node keeps at least one)."""
    chosen = placement(spec)
    nodes = [
        node.model_copy(update={"platforms": [p for p in node.platforms if chosen[p][0] is node] or node.platforms})
        for node in spec.nodes
    ]
    return spec.model_copy(update={"nodes": nodes})


def without(spec: BuilderSpec, lost: set[str]) -> BuilderSpec:
    """A builder of the nodes not ``lost``; the first of them also builds their platforms, under emulation.

    It gets a name of its own (``NAME-without-NODE``): the declared builder is left as it is, for
    when the node is back.
    """
    kept = [n for n in spec.nodes if n.name not in lost]
    if not kept:
        raise ValueError("no node is left")
    orphaned = [p for n in spec.nodes if n.name in lost for p in n.platforms if p not in kept[0].platforms]
    taker = kept[0].model_copy(
        update={"platforms": [*kept[0].platforms, *orphaned], "native": list(kept[0].native_platforms)}
    )
    name = f"{spec.name}-without-{'-'.join(sorted(lost))}"[:63]
    return spec.model_copy(update={"name": name, "nodes": [taker, *kept[1:]]})
