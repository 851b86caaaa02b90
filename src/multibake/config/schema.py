"""load: platforms.yaml → a validated, frozen Config, with the position of every value.

Scalars keep the text exactly as written (an unquoted ``3.20`` stays "3.20", never 3.2); pydantic
then coerces the few fields that are numbers or booleans. Every error names file:line:column and the
key path, with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from multibake import platforms, refs
from multibake.config import nodes
from multibake.config.model import Model
from multibake.config.sign import Sign
from multibake.config.upkeep import FamilyRetention, Gate, Retention, SizeLimit
from multibake.kinds import Placement, Provenance
from multibake.platforms import Scheme

MAX_FILE_BYTES = 16 * 1024 * 1024  # far above any real matrix; a bigger file is refused unread
DEFAULT_MAX_CELLS = 100_000
_SECRET_ID = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BAKE_UNSAFE = re.compile(r'[,="\s\x00-\x1f\x7f]')  # would split or end a bake attribute such as cache-to


def _platform(value: str) -> str:
    return platforms.normalize(value)


Platform = Annotated[str, AfterValidator(_platform)]
NonEmpty = Annotated[str, Field(min_length=1)]


class CacheType(StrEnum):
    REGISTRY = "registry"
    LOCAL = "local"
    GHA = "gha"
    INLINE = "inline"
    NONE = "none"


class Cache(Model):
    """Where BuildKit's cache is imported from and exported to; one cache per target."""

    type: CacheType = CacheType.REGISTRY
    repository: str | None = Field(
        default=None,
        description="registry cache: repository holding one tag per target (default <registry>/buildcache)",
    )
    directory: str = Field(default=".multibake/cache", description="local cache: directory, one folder per target")
    mode: Literal["min", "max"] = "max"

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        problem = refs.repository_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"invalid cache repository: {problem}")
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if _BAKE_UNSAFE.search(value):
            raise ValueError("a cache directory may not contain commas, '=', quotes, spaces or control characters")
        return value


class Limits(Model):
    """Ceilings that keep a typo (one axis too many) from planning for minutes."""

    max_cells: int = Field(
        default=DEFAULT_MAX_CELLS,
        ge=1,
        description="most cells a plan may have (each family's matrix is counted first)",
    )
    max_growth: SizeLimit | None = Field(
        default=None,
        description="`multibake diff`: exit 1 when a platform image grew by more than this (10%, 50MB); "
        "--max-growth beats it",
    )


class Secret(Model):
    """A BuildKit secret (RUN --mount=type=secret,id=NAME): from an environment variable or a file, never an arg."""

    env: str | None = Field(default=None, description="environment variable holding the secret")
    file: str | None = Field(default=None, description="file holding the secret; relative to platforms.yaml")

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of env: VARIABLE or file: PATH")
        if self.env is not None and not _ENV_NAME.fullmatch(self.env):
            raise ValueError("env must name an environment variable (letters, digits, _)")
        if self.file is not None and (not self.file or re.search(r'[,"\x00-\x1f\x7f]', self.file)):
            raise ValueError("a secret file path may not be empty or contain commas, quotes or control characters")
        return self


class Retry(Model):
    """Retries of transient registry failures (5xx, 429, resets, timeouts)."""

    attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="attempts of a bake run since its last progress, and the least attempts of a registry request",
    )
    initial_delay: float = Field(default=2.0, ge=0, le=600)
    max_delay: float = Field(default=60.0, ge=0, le=3600)
    timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="seconds one registry request of multibake's may stall before it counts as a transient failure "
        "(while the registry answers others quickly, a try is cut sooner: ten times its slowest recent answer, "
        "at least 1 s, doubling on each try)",
    )
    per_request: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="seconds a registry request is retried from its first attempt, while the registry answers "
        "other requests (a flaky registry, not a dead one)",
    )


class Sbom(Model):
    """An SPDX SBOM attestation per platform image, made by a generator image BuildKit runs."""

    enabled: bool = True
    generator: str | None = Field(
        default=None,
        description="the generator image; unset, BuildKit's own scanner (docker/buildkit-syft-scanner)",
    )

    @field_validator("generator")
    @classmethod
    def _generator(cls, value: str | None) -> str | None:
        if value is not None and (not value or _BAKE_UNSAFE.search(value)):
            raise ValueError("an image reference without spaces, commas, quotes or '='")
        if value is not None and refs.has_credentials(value):
            raise ValueError(f"the reference carries credentials; {refs.CREDENTIALS_ADVICE}")
        return value


class Attest(Model):
    """Attestations BuildKit attaches to pushed images: manifests of platform unknown/unknown in each index."""

    provenance: Provenance | None = Field(
        default=None,
        description="SLSA provenance: min, max or off; unset, buildx's own default "
        "(min on images it pushes or loads, none with BUILDX_NO_DEFAULT_ATTESTATIONS=1); "
        "`build --attest provenance=…` beats it",
    )
    placement: Placement | None = Field(
        default=None,
        description="index (BuildKit's: unknown/unknown entries of each index) or referrers (OCI referrers of "
        "each platform image, with the referrers tag fallback: the index lists runnable platforms only); "
        "top level only, unset: index",
    )
    sbom: bool | Sbom | None = Field(
        default=None,
        description="SPDX SBOM per platform image: true, false or {generator: IMAGE}; unset, none "
        "(buildx's default); `build --attest sbom=on|off|generator=IMAGE` beats it",
    )


class TagRule(Model):
    tag: NonEmpty
    when: dict[str, str | list[str]] = Field(default_factory=dict)


class PerPlatformTags(StrEnum):
    SUFFIX = "suffix"
    PREFIX = "prefix"
    NONE = "none"


class UpdateRule(Model):
    """Where `multibake update` finds the values of a matrix axis: the tags of a repository."""

    source: NonEmpty = Field(description="repository whose tags are the axis's versions: docker.io/library/alpine")
    match: NonEmpty = Field(
        description="regular expression searched in each tag (anchor it: '^3\\.\\d+$'); "
        "a group named version is the value: '^v(?P<version>[0-9.]+)$'"
    )
    keep: int | None = Field(
        default=None, ge=1, description="how many of the newest matching versions the axis keeps (default: as now)"
    )
    prerelease: bool = Field(default=False, description="take pre-releases (3.22.0-rc1, 24-alpha, 1.0_beta) too")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if refs.has_credentials(value):
            raise ValueError(f"the source carries credentials (user:password@); {refs.CREDENTIALS_ADVICE}")
        problem = refs.source_problem(value)
        if problem:
            raise ValueError(f"source is not a repository: {problem}")
        return value

    @field_validator("match")
    @classmethod
    def _match(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class Family(Model):
    """One image family: a Dockerfile built for every cell of a version matrix."""

    context: NonEmpty
    dockerfile: NonEmpty = "Dockerfile"
    target: str | None = Field(default=None, description="Dockerfile stage to build")
    image: str | None = Field(default=None, description="repository; relative names go under the registry")
    base: str | None = Field(default=None, description="parent family: FROM base resolves to the matching cell")
    platforms: list[Platform] | None = Field(default=None, min_length=1)
    matrix: dict[str, list[str]] = Field(default_factory=dict)
    exclude: list[dict[str, str | list[str]]] = Field(default_factory=list)
    include: list[dict[str, str | list[str]]] = Field(default_factory=list)
    args: dict[str, str] = Field(default_factory=dict)
    platform_args: dict[str, Scheme] = Field(
        default_factory=dict,
        description="build args whose value is the platform's name in a scheme (S6_ARCH: s6-overlay); "
        "the family is then built one target per platform",
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="OCI annotations of the multi-arch index")
    labels: dict[str, str] = Field(default_factory=dict)
    tags: list[str | TagRule] = Field(default_factory=list)
    secrets: dict[str, Secret] = Field(
        default_factory=dict, description="BuildKit secrets by id: {npm_token: {env: NPM_TOKEN}, cert: {file: ca.pem}}"
    )
    update: dict[str, UpdateRule | None] = Field(
        default_factory=dict,
        description="`multibake update` rules by axis for this family: each replaces the top-level rule of that "
        "axis; null leaves the axis alone",
    )
    attest: Attest | None = Field(
        default=None, description="this family's attestations: each kind it sets beats the top-level attest:"
    )
    sign: Sign | None = Field(
        default=None, description="this family's signing, replacing the top-level sign: ({enabled: false}: unsigned)"
    )

    retention: FamilyRetention | None = Field(default=None, description="which tags `multibake gc` keeps")

    @field_validator("secrets")
    @classmethod
    def _secret_ids(cls, value: dict[str, Secret]) -> dict[str, Secret]:
        for key in value:
            if not _SECRET_ID.fullmatch(key):
                raise ValueError(f"secret id {key[:60]!r} may use only letters, digits, '.', '_' and '-'")
        return value


class Config(Model):
    """The whole of platforms.yaml."""

    registry: NonEmpty
    platforms: list[Platform] = Field(min_length=1)
    per_platform_tags: PerPlatformTags = PerPlatformTags.SUFFIX
    cache: Cache = Field(default_factory=Cache)
    retry: Retry = Field(default_factory=Retry)
    limits: Limits = Field(default_factory=Limits)
    attest: Attest = Field(default_factory=Attest, description="attestations attached to every pushed image")
    source: str | None = Field(default=None, description="URL for the org.opencontainers.image.source label")
    reproducible: bool = Field(
        default=True,
        description="rewrite-timestamp=true on builders whose image exporter takes it (BuildKit >= 0.13 on its "
        "own drivers): file times in layers clamped to SOURCE_DATE_EPOCH",
    )
    images: dict[str, Family] = Field(min_length=1)
    builder: nodes.BuilderSpec | None = Field(
        default=None, description="a buildx builder and its nodes, created or updated before each build"
    )
    update: dict[str, UpdateRule] = Field(
        default_factory=dict,
        description="`multibake update` rules by axis name, for every family whose matrix has that axis",
    )
    retention: Retention = Field(default_factory=Retention, description="what `multibake gc` deletes")
    gate: Gate = Field(default_factory=Gate, description="checks `build --push` makes before tags move")
    sign: Sign | None = Field(
        default=None,
        description="sign every index and platform image before a public tag moves: {cosign: {key: cosign.key}}",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and refs.has_credentials(value):
            raise ValueError(f"the URL carries credentials (user:password@); {refs.CREDENTIALS_ADVICE}")
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        return value.rstrip("/")  # "host/team/" and "host/team" are the same namespace


# --- validation errors → one clear line -------------------------------------------------------
