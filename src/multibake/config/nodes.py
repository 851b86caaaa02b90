"""Multi-node builders as configuration: platforms.yaml's ``builder:``, its nodes and their checks.

``builder:`` names a buildx builder and its nodes (name, driver, endpoint, driver options, the
platforms each builds). Before a build multibake compares that declaration with what
``docker buildx inspect`` reports (``plan_actions``, pure) and runs only what differs: a missing
builder is created, a missing node appended, a changed node left and appended again, a builder
that already matches is not touched. Then every node must answer, and every planned platform must
be declared by a node; otherwise the build is refused (exit 2) before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from multibake import platforms
from multibake.config.yamlpos import KeyPath
from multibake.errors import ConfigError
from multibake.refs import CREDENTIALS_ADVICE

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # buildx's builder and node names
_OPT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@")
DEFAULT_TIMEOUT = 120.0  # seconds: a docker-container node may pull BuildKit's image on first bootstrap


def _platform(value: str) -> str:
    return platforms.normalize(value)


Platform = Annotated[str, AfterValidator(_platform)]


class Driver(StrEnum):
    REMOTE = "remote"
    DOCKER_CONTAINER = "docker-container"
    KUBERNETES = "kubernetes"


class NodeSpec(BaseModel):
    """One node of the builder: where BuildKit runs and which platforms bake sends to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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


class BuilderSpec(BaseModel):
    """A buildx builder multibake creates or updates before building (``--builder`` on the command line wins)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the buildx builder's name")
    nodes: list[NodeSpec] = Field(min_length=1, description="its nodes, in buildx's order")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, le=3600, description="seconds the nodes have to answer before a build"
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
