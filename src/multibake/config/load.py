"""load: platforms.yaml → a validated, frozen Config (schema.py), with the position of every value.

Every refusal is one ConfigError naming file:line:col and the key path, with a "did you mean" for
unknown keys; nothing is read past what a platforms.yaml may be.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from multibake.config import nodes, settings
from multibake.config.schema import (
    MAX_FILE_BYTES,
    Attest,
    Cache,
    Config,
    Family,
    Limits,
    Retry,
    Sbom,
    Secret,
    TagRule,
    UpdateRule,
)
from multibake.config.settings import DEFAULT_CONFIG, Override
from multibake.config.sign import Cosign, Sign
from multibake.config.upkeep import FamilyRetention, Gate, Retention
from multibake.config.yamlpos import KeyPath, Positions, format_path, parse_yaml
from multibake.errors import ConfigError, Location, config_error, did_you_mean
from multibake.lowgc import paused


class Loaded(BaseModel):
    """A Config together with where it came from: the plan's errors point back into the file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: Config
    file: str  # as the user named it, for messages
    root: Path  # directory the config's relative paths start from
    positions: Positions
    keys: Positions = Field(default_factory=dict)
    registry_override: Override | None = None  # a registry given outside the file

    def loc(self, path: KeyPath) -> Location:
        """The location of the value at ``path``, or of its nearest ancestor that has one."""
        line, col = _nearest(self.positions, path)
        return Location(self.file, line, col, format_path(path))

    def key_loc(self, path: KeyPath) -> Location:
        """The location of the key that ends ``path`` (for errors about the key itself)."""
        line, col = self.keys.get(path) or _nearest(self.positions, path)
        return Location(self.file, line, col, format_path(path))


# The model owning the mapping at a key path ("*": any key, 0: any list index), for unknown-key hints.
_OWNERS: tuple[tuple[tuple[str | int, ...], type[BaseModel]], ...] = (
    ((), Config),
    (("cache",), Cache),
    (("retry",), Retry),
    (("limits",), Limits),
    (("attest",), Attest),
    (("retention",), Retention),
    (("gate",), Gate),
    (("images", "*", "retention"), FamilyRetention),
    (("attest", "sbom"), Sbom),
    (("images", "*", "attest"), Attest),
    (("images", "*", "attest", "sbom"), Sbom),
    (("sign",), Sign),
    (("sign", "cosign"), Cosign),
    (("images", "*", "sign"), Sign),
    (("images", "*", "sign", "cosign"), Cosign),
    (("builder",), nodes.BuilderSpec),
    (("builder", "nodes", 0), nodes.NodeSpec),
    (("images", "*", "secrets", "*"), Secret),
    (("images", "*"), Family),
    (("update", "*"), UpdateRule),
    (("images", "*", "update", "*"), UpdateRule),
    (("images", "*", "tags", 0), TagRule),
)


def _fits(pattern: tuple[str | int, ...], path: KeyPath) -> bool:
    return len(pattern) == len(path) and all(
        (isinstance(p, int) and isinstance(k, int)) or p in ("*", k) for p, k in zip(pattern, path, strict=True)
    )


def _model_for(path: KeyPath) -> type[BaseModel] | None:
    """The model that owns the mapping at ``path`` (for unknown-key hints)."""
    return next((model for pattern, model in _OWNERS if _fits(pattern, path)), None)


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

        def error(path: KeyPath, msg: str) -> ConfigError:
            return config_error(Location(file, *_nearest(positions, path), format_path(path)), msg)

        nodes.check(config.builder, error)
        builder = nodes.with_files(config.builder, Path(file).resolve().parent, error)
        config = config.model_copy(update={"builder": builder})
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
        for axis in fam.retention.keep_last if fam.retention else ():  # gc would keep every tag of it
            if axis not in fam.matrix:
                message = f"retention.keep_last names {axis}, not an axis of the matrix of {name!r}"
                raise unknown(("images", name, "retention", "keep_last", axis), axis, message, set(fam.matrix))


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
def load(path: str | os.PathLike[str], registry: str | None = None, environ: Mapping[str, str] = os.environ) -> Loaded:
    """Read and validate ``path``; ``registry`` (the CLI flag) beats $MULTIBAKE_REGISTRY beats the file."""
    file = os.fspath(path)
    return from_text(read_text(file), file, settings.registry(registry, environ))


def from_text(text: str, file: str, override: Override | None = None) -> Loaded:
    """Validate ``text``, the content of ``file`` (which names it in messages and roots its paths)."""
    data, positions, keys = parse_yaml(text, file)
    if isinstance(data, dict) and override is not None:
        data["registry"] = override.value
    config = validate(data, file, positions, keys)
    return Loaded(
        config=config,
        file=file,
        root=Path(file).resolve().parent,
        positions=positions,
        keys=keys,
        registry_override=override,
    )
