"""load: platforms.yaml → a validated, frozen Config, with the position of every value.

Scalars keep the text exactly as written (an unquoted ``3.20`` stays "3.20", never 3.2); pydantic
then coerces the few fields that are numbers or booleans. Every error names file:line:column and the
key path, with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from multibake import platforms
from multibake.errors import ConfigError, Location, config_error, did_you_mean
from multibake.platforms import Scheme

DEFAULT_CONFIG = "platforms.yaml"
REGISTRY_ENV = "MULTIBAKE_REGISTRY"

# key path (tuple of str keys and int indexes) → (line, column), both 1-based
Positions = dict[tuple[str | int, ...], tuple[int, int]]
KeyPath = tuple[str | int, ...]


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


class Retry(_Model):
    """Retries of transient registry failures (5xx, 429, resets, timeouts)."""

    attempts: int = Field(default=4, ge=1, le=20)
    initial_delay: float = Field(default=2.0, ge=0, le=600)
    max_delay: float = Field(default=60.0, ge=0, le=3600)


class TagRule(_Model):
    tag: NonEmpty
    when: dict[str, str | list[str]] = Field(default_factory=dict)


class PerPlatformTags(StrEnum):
    SUFFIX = "suffix"
    PREFIX = "prefix"
    NONE = "none"


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


class Config(_Model):
    """The whole of platforms.yaml."""

    registry: NonEmpty
    platforms: list[Platform] = Field(min_length=1)
    per_platform_tags: PerPlatformTags = PerPlatformTags.SUFFIX
    cache: Cache = Field(default_factory=Cache)
    retry: Retry = Field(default_factory=Retry)
    source: str | None = Field(default=None, description="URL for the org.opencontainers.image.source label")
    images: dict[str, Family] = Field(min_length=1)

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


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# --- YAML with positions ---------------------------------------------------------------------

_NULL_TAG = "tag:yaml.org,2002:null"


def _to_data(node: yaml.Node, path: KeyPath, positions: Positions, keys: Positions, file: str) -> Any:
    # values and keys are located separately: an error about a key (unknown, misspelt) points at the key
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_mark = key_node.start_mark
            if not isinstance(key_node, yaml.ScalarNode):
                loc = Location(file, key_mark.line + 1, key_mark.column + 1, format_path(path))
                raise config_error(loc, "mapping keys must be plain strings")
            key = str(key_node.value)
            if key == "<<":
                loc = Location(file, key_mark.line + 1, key_mark.column + 1, format_path(path))
                raise config_error(loc, "YAML merge keys (<<) are not supported; write the keys out")
            if key in out:
                loc = Location(file, key_mark.line + 1, key_mark.column + 1, format_path((*path, key)))
                raise config_error(loc, f"duplicate key {key!r}")
            keys[(*path, key)] = (key_mark.line + 1, key_mark.column + 1)
            out[key] = _to_data(value_node, (*path, key), positions, keys, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, (*path, i), positions, keys, file) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == _NULL_TAG:
        return None
    # The text as written: "3.20" stays "3.20". Typed fields are coerced by pydantic later.
    return node.value


def parse_yaml(text: str, file: str) -> tuple[Any, Positions, Positions]:
    """The data, the positions of its values and the positions of its keys."""
    positions: Positions = {}
    keys: Positions = {}
    try:
        # compose resolves anchors/aliases into the same node objects, so aliases just work
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise config_error(Location(file, line, col, ""), f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise config_error(Location(file, 0, 0, ""), f"invalid YAML: {exc}") from None
    if node is None:
        raise config_error(Location(file, 1, 1, ""), "the file is empty")
    return _to_data(node, (), positions, keys, file), positions, keys


# --- validation errors → one clear line -------------------------------------------------------


def _model_for(path: KeyPath) -> type[BaseModel] | None:
    """The model that owns the mapping at ``path`` (for unknown-key hints)."""
    if path == ():
        return Config
    if path == ("cache",):
        return Cache
    if path == ("retry",):
        return Retry
    if len(path) == 2 and path[0] == "images":
        return Family
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
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, file, positions, keys or {}) from None


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


def load(path: str | os.PathLike[str], registry: str | None = None) -> Loaded:
    """Read and validate ``path``; ``registry`` (the CLI flag) beats $MULTIBAKE_REGISTRY beats the file."""
    file = os.fspath(path)
    p = Path(file)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file (pass -c PATH or create {DEFAULT_CONFIG})") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, expected a platforms.yaml file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
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
        config=config, file=file, root=p.resolve().parent, positions=positions, keys=keys, registry_source=source
    )


def check_paths(loaded: Loaded, items: list[tuple[str, str, str]]) -> None:
    """Refuse a missing build context or Dockerfile before anything runs.

    ``items`` are (family, context, dockerfile) as the plan resolved them; remote contexts
    (git URLs, ``target:``/``docker-image://`` references) are left to buildx.
    """
    seen: set[tuple[str, str]] = set()
    for family, context, dockerfile in items:
        if (context, dockerfile) in seen or "://" in context or context.startswith(("target:", "git@")):
            continue
        seen.add((context, dockerfile))
        ctx = loaded.root / context
        if not ctx.is_dir():
            raise config_error(
                loaded.loc(("images", family, "context")), f"build context {context!r} is not a directory"
            )
        if not (ctx / dockerfile).is_file():
            raise config_error(loaded.loc(("images", family, "dockerfile")), f"no Dockerfile at {context}/{dockerfile}")
