"""load: platforms.yaml → a validated, frozen Config, with the position of every value.

Scalars keep the text exactly as written (an unquoted ``3.20`` stays "3.20", never 3.2); pydantic
then coerces the few fields that are numbers or booleans. Every error names file:line:column and the
key path, with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from multibake import platforms, refs
from multibake.config import nodes
from multibake.config.yamlpos import KeyPath, Positions, format_path, parse_yaml
from multibake.errors import ConfigError, Location, config_error, did_you_mean
from multibake.kinds import Provenance
from multibake.lowgc import paused
from multibake.platforms import Scheme

__all__ = ["Config", "Family", "KeyPath", "Loaded", "Positions", "format_path", "load", "parse_yaml", "validate"]

DEFAULT_CONFIG = "platforms.yaml"
REGISTRY_ENV = "MULTIBAKE_REGISTRY"

MAX_FILE_BYTES = 16 * 1024 * 1024  # far above any real matrix; a bigger file is refused unread
DEFAULT_MAX_CELLS = 100_000
_SECRET_ID = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BAKE_UNSAFE = re.compile(r'[,="\s\x00-\x1f\x7f]')  # would split or end a bake attribute such as cache-to


def _platform(value: str) -> str:
    return platforms.normalize(value)


Platform = Annotated[str, AfterValidator(_platform)]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class CacheType(StrEnum):
    REGISTRY = "registry"
    LOCAL = "local"
    GHA = "gha"
    INLINE = "inline"
    NONE = "none"


class Cache(_Model):
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


class Limits(_Model):
    """Ceilings that keep a typo (one axis too many) from planning for minutes."""

    max_cells: int = Field(
        default=DEFAULT_MAX_CELLS,
        ge=1,
        description="most cells a plan may have (each family's matrix is counted first)",
    )


class Secret(_Model):
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


class Retry(_Model):
    """Retries of transient registry failures (5xx, 429, resets, timeouts)."""

    attempts: int = Field(default=4, ge=1, le=20)
    initial_delay: float = Field(default=2.0, ge=0, le=600)
    max_delay: float = Field(default=60.0, ge=0, le=3600)
    timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="seconds one registry request of multibake's may stall before it counts as a transient failure",
    )


class Attest(_Model):
    """Attestations BuildKit attaches to pushed images: manifests of platform unknown/unknown in each index."""

    provenance: Provenance | None = Field(
        default=None,
        description="SLSA provenance: min, max or off; unset, buildx's own default "
        "(min on images it pushes or loads, none with BUILDX_NO_DEFAULT_ATTESTATIONS=1); "
        "`build --attest provenance=…` beats it",
    )


class TagRule(_Model):
    tag: NonEmpty
    when: dict[str, str | list[str]] = Field(default_factory=dict)


class PerPlatformTags(StrEnum):
    SUFFIX = "suffix"
    PREFIX = "prefix"
    NONE = "none"


class UpdateRule(_Model):
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


class Family(_Model):
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

    @field_validator("secrets")
    @classmethod
    def _secret_ids(cls, value: dict[str, Secret]) -> dict[str, Secret]:
        for key in value:
            if not _SECRET_ID.fullmatch(key):
                raise ValueError(f"secret id {key[:60]!r} may use only letters, digits, '.', '_' and '-'")
        return value


class Config(_Model):
    """The whole of platforms.yaml."""

    registry: NonEmpty
    platforms: list[Platform] = Field(min_length=1)
    per_platform_tags: PerPlatformTags = PerPlatformTags.SUFFIX
    cache: Cache = Field(default_factory=Cache)
    retry: Retry = Field(default_factory=Retry)
    limits: Limits = Field(default_factory=Limits)
    attest: Attest = Field(default_factory=Attest, description="attestations attached to every pushed image")
    source: str | None = Field(default=None, description="URL for the org.opencontainers.image.source label")
    images: dict[str, Family] = Field(min_length=1)
    builder: nodes.BuilderSpec | None = Field(
        default=None, description="a buildx builder and its nodes, created or updated before each build"
    )
    update: dict[str, UpdateRule] = Field(
        default_factory=dict,
        description="`multibake update` rules by axis name, for every family whose matrix has that axis",
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


class Loaded(BaseModel):
    """A Config together with where it came from: the plan's errors point back into the file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: Config
    file: str  # as the user named it, for messages
    root: Path  # directory the config's relative paths start from
    positions: Positions
    keys: Positions = Field(default_factory=dict)
    registry_source: str = "file"

    def loc(self, path: KeyPath) -> Location:
        """The location of the value at ``path``, or of its nearest ancestor that has one."""
        line, col = _nearest(self.positions, path)
        return Location(self.file, line, col, format_path(path))

    def key_loc(self, path: KeyPath) -> Location:
        """The location of the key that ends ``path`` (for errors about the key itself)."""
        line, col = self.keys.get(path) or _nearest(self.positions, path)
        return Location(self.file, line, col, format_path(path))


# --- validation errors → one clear line -------------------------------------------------------


def _model_for(path: KeyPath) -> type[BaseModel] | None:
    """The model that owns the mapping at ``path`` (for unknown-key hints)."""
    if path == ():
        return Config
    if path == ("cache",):
        return Cache
    if path == ("retry",):
        return Retry
    if path == ("limits",):
        return Limits
    if path == ("attest",):
        return Attest
    if path == ("builder",):
        return nodes.BuilderSpec
    if len(path) == 3 and path[:2] == ("builder", "nodes"):
        return nodes.NodeSpec
    if len(path) == 4 and path[0] == "images" and path[2] == "secrets":
        return Secret
    if len(path) == 2 and path[0] == "images":
        return Family
    if (len(path) == 2 and path[0] == "update") or (len(path) == 4 and path[0] == "images" and path[2] == "update"):
        return UpdateRule
    if len(path) == 4 and path[0] == "images" and path[2] == "tags" and isinstance(path[3], int):
        return TagRule
    return None


def _clean_loc(loc: tuple[str | int, ...]) -> KeyPath:
    # pydantic puts union-branch names ("str", "TagRule", "list[str]") into loc; they are not keys
    branch = {"str", "TagRule", "list[str]", "function-after[_platform(), str]"}
    return tuple(p for p in loc if not (isinstance(p, str) and p in branch))


def _validation_message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "string_type":
        return f"expected a string, got {type(err.get('input')).__name__.replace('dict', 'mapping')}"
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg[0].lower() + msg[1:] if msg else kind


def _pick_error(errors: list[Any]) -> Any:
    """Among union alternatives pydantic reports each branch; the most specific one reads best."""
    return max(errors, key=lambda e: (e["type"] != "string_type", len(e["loc"])))


def validate(data: Any, file: str, positions: Positions, keys: Positions | None = None) -> Config:
    if not isinstance(data, dict):
        line, col = _nearest(positions, ())
        raise config_error(
            Location(file, line, col, ""), "the top level must be a mapping (registry:, platforms:, images:)"
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, file, positions, keys or {}) from None
    if config.builder is not None:
        nodes.check(
            config.builder,
            lambda path, msg: config_error(Location(file, *_nearest(positions, path), format_path(path)), msg),
        )
    _check_update_axes(config, file, keys or {}, positions)
    return config


def _check_update_axes(config: Config, file: str, keys: Positions, positions: Positions) -> None:
    """Every ``update:`` rule names a matrix axis (a typo would silently update nothing)."""

    def unknown(path: KeyPath, axis: str, message: str, axes: set[str]) -> ConfigError:
        line, col = keys.get(path) or _nearest(positions, path)
        hint = did_you_mean(axis, axes) or (f"matrix axes: {', '.join(sorted(axes))}" if axes else None)
        return config_error(Location(file, line, col, format_path(path)), message, hint)

    every = {axis for fam in config.images.values() for axis in fam.matrix}
    for axis in config.update:
        if axis not in every:
            raise unknown(("update", axis), axis, f"no family's matrix has an axis {axis!r}", every)
    for name, fam in config.images.items():
        for axis in fam.update:
            if axis not in fam.matrix:
                message = f"family {name!r} has no matrix axis {axis!r}"
                raise unknown(("images", name, "update", axis), axis, message, set(fam.matrix))


def _config_error(exc: ValidationError, file: str, positions: Positions, keys: Positions) -> ConfigError:
    """The first validation problem as one clear line (pydantic's own text is for developers)."""
    errors = exc.errors()
    # an unknown key explains a "missing" one (a typo), so it is reported first
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    errors = unknown or errors
    first_loc = _clean_loc(errors[0]["loc"])
    same = [e for e in errors if _clean_loc(e["loc"])[: len(first_loc) - 1] == first_loc[:-1]]
    err = _pick_error(same)
    path = _clean_loc(err["loc"])
    line, col = _nearest(positions, path)
    loc = Location(file, line, col, format_path(path))
    if err["type"] == "extra_forbidden":
        key = str(path[-1])
        line, col = keys.get(path) or (line, col)
        loc = Location(file, line, col, format_path(path))
        owner = _model_for(path[:-1])
        hint = did_you_mean(key, owner.model_fields) if owner else None
        allowed = ", ".join(owner.model_fields) if owner else ""
        return config_error(loc, f"unknown key {key!r}", hint or (f"allowed keys: {allowed}" if allowed else None))
    if err["type"] == "missing":
        parent = path[:-1]
        pline, pcol = _nearest(positions, parent)
        return config_error(Location(file, pline, pcol, format_path(path)), f"required key {path[-1]!r} is missing")
    if err["type"] == "enum":
        return config_error(loc, f"{err['input']!r} is not one of: {err['ctx']['expected']}")
    return config_error(loc, _validation_message(err))


def _nearest(positions: Positions, path: KeyPath) -> tuple[int, int]:
    probe = path
    while probe and probe not in positions:
        probe = probe[:-1]
    return positions.get(probe, (0, 0))


def read_text(file: str) -> str:
    """The config's text; anything but a regular file of sane size is refused before it is read.

    A FIFO would block, ``/dev/zero`` never ends and a huge (sparse) file would be read into memory.
    """
    try:
        info = Path(file).stat()
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file (pass -c PATH or create {DEFAULT_CONFIG})") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{file}: is a directory, expected a platforms.yaml file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{file}: not a regular file (a FIFO, device or socket); pass a platforms.yaml file")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{file}: {info.st_size:,} bytes, more than a platforms.yaml may have ({MAX_FILE_BYTES:,})")
    try:
        with Path(file).open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{file}: more than {MAX_FILE_BYTES:,} bytes, more than a platforms.yaml may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None


@paused
def load(path: str | os.PathLike[str], registry: str | None = None) -> Loaded:
    """Read and validate ``path``; ``registry`` (the CLI flag) beats $MULTIBAKE_REGISTRY beats the file."""
    file = os.fspath(path)
    return from_text(read_text(file), file, registry)


def from_text(text: str, file: str, registry: str | None = None) -> Loaded:
    """Validate ``text``, the content of ``file`` (which names it in messages and roots its paths)."""
    data, positions, keys = parse_yaml(text, file)
    source = "file"
    env_registry = os.environ.get(REGISTRY_ENV)
    if isinstance(data, dict):
        if registry:
            data["registry"], source = registry, "--registry"
        elif env_registry:
            data["registry"], source = env_registry, f"${REGISTRY_ENV}"
    config = validate(data, file, positions, keys)
    return Loaded(
        config=config,
        file=file,
        root=Path(file).resolve().parent,
        positions=positions,
        keys=keys,
        registry_source=source,
    )
