"""config.py: loading platforms.yaml into a frozen Config, keeping every scalar's text and position."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from multibake.config import settings
from multibake.config.load import Loaded, load
from multibake.config.schema import CacheType, Config, PerPlatformTags
from multibake.config.yamlpos import format_path
from multibake.errors import EXIT_USAGE, ConfigError
from multibake.plan import paths
from multibake.plan.planner import plan
from tests.helpers import FIXED_META, SHIPPED_CONFIG, make_context, write_config

MINIMAL = """
registry: localhost:5000/test
platforms: [linux/amd64]
images:
  app:
    context: app
    matrix:
      v: ["1"]
"""


def test_shipped_config_loads() -> None:
    loaded = load(SHIPPED_CONFIG)
    cfg = loaded.config
    assert cfg.registry == "localhost:5000/multibake"
    assert cfg.platforms == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert cfg.per_platform_tags is PerPlatformTags.SUFFIX
    assert cfg.cache.type is CacheType.REGISTRY
    assert list(cfg.images) == ["alpine-s6-overlay", "alpine-s6-nodejs"]
    overlay = cfg.images["alpine-s6-overlay"]
    assert overlay.matrix == {"alpine": ["3.19", "3.20", "3.21"], "s6_overlay": ["3.1.6.2", "3.2.0.2"]}
    assert overlay.exclude == [{"alpine": "3.19", "s6_overlay": "3.2.0.2"}]
    assert overlay.args == {"ALPINE_VERSION": "{alpine}", "S6_OVERLAY_VERSION": "{s6_overlay}"}
    nodejs = cfg.images["alpine-s6-nodejs"]
    assert nodejs.base == "alpine-s6-overlay"
    assert nodejs.include == [
        {"alpine": "3.19", "s6_overlay": "3.1.6.2", "node": "18", "platforms": ["linux/amd64", "linux/arm64"]}
    ]
    assert loaded.root == SHIPPED_CONFIG.parent
    assert loaded.file == str(SHIPPED_CONFIG)
    assert loaded.registry_override is None


def test_defaults(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path, MINIMAL)).config
    assert cfg.per_platform_tags is PerPlatformTags.SUFFIX
    assert cfg.cache.type is CacheType.REGISTRY
    assert cfg.cache.mode == "max"
    assert cfg.cache.repository is None
    assert cfg.cache.directory == ".multibake/cache"
    assert (cfg.retry.attempts, cfg.retry.initial_delay, cfg.retry.max_delay) == (4, 2.0, 60.0)
    assert cfg.source is None
    fam = cfg.images["app"]
    assert fam.dockerfile == "Dockerfile"
    assert fam.target is None
    assert fam.image is None
    assert fam.base is None
    assert fam.platforms is None
    assert fam.tags == []


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path, MINIMAL)).config
    with pytest.raises(ValidationError):
        cfg.registry = "other"  # type: ignore[misc]


def test_unquoted_numbers_and_booleans_stay_text(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        registry: localhost:5000/test
        platforms: [linux/amd64]
        images:
          app:
            context: app
            matrix:
              v: [3.20, 3.10, 1.0, 010, yes, on, no, off, 0x1F, 1e3, 0o17, 1_000, +1, .5]
            args:
              PLAIN: 3.20
              BOOL: true
            labels:
              n: 010
        """,
    )
    fam = load(path).config.images["app"]
    written = ["3.20", "3.10", "1.0", "010", "yes", "on", "no", "off", "0x1F", "1e3", "0o17", "1_000", "+1", ".5"]
    assert fam.matrix["v"] == written
    assert fam.args == {"PLAIN": "3.20", "BOOL": "true"}
    assert fam.labels == {"n": "010"}


def test_quoted_and_unquoted_are_the_same(tmp_path: Path) -> None:
    path = write_config(tmp_path, MINIMAL.replace('["1"]', "[3.20, \"3.21\", '3.22', 3.230]"))
    assert load(path).config.images["app"].matrix["v"] == ["3.20", "3.21", "3.22", "3.230"]


def test_quoted_duplicate_of_unquoted_value_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, MINIMAL.replace('["1"]', '[3.20, "3.20"]'))
    with pytest.raises(ConfigError, match=r"'3\.20' twice"):
        plan(load(path), FIXED_META)


def test_numeric_fields_are_coerced(tmp_path: Path) -> None:
    text = MINIMAL + "retry:\n  attempts: 7\n  initial_delay: 0.5\n  max_delay: 10\n"
    retry = load(write_config(tmp_path, text)).config.retry
    assert (retry.attempts, retry.initial_delay, retry.max_delay) == (7, 0.5, 10.0)


def test_platform_spellings_normalised(tmp_path: Path) -> None:
    text = MINIMAL.replace("[linux/amd64]", "[x86_64, aarch64, armv7l, arm32v6]")
    text += "    platforms: [arm64v8, linux/arm64/v8]\n".replace("linux/arm64/v8", "amd64")
    cfg = load(write_config(tmp_path, text)).config
    assert cfg.platforms == ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"]
    assert cfg.images["app"].platforms == ["linux/arm64", "linux/amd64"]


def test_anchors_and_aliases_work(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        registry: localhost:5000/test
        platforms: &plats [linux/amd64, linux/arm64]
        images:
          app:
            context: app
            platforms: *plats
            matrix:
              v: &versions ["1", "2"]
          other:
            context: other
            matrix:
              v: *versions
        """,
    )
    cfg = load(path).config
    assert cfg.images["app"].platforms == ["linux/amd64", "linux/arm64"]
    assert cfg.images["other"].matrix == {"v": ["1", "2"]}


# --- registry precedence: --registry > $MULTIBAKE_REGISTRY > file ---------------------------------


def _source(loaded: Loaded) -> str:
    return loaded.registry_override.named if loaded.registry_override else "file"


def test_registry_from_file(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL), environ={})
    assert (loaded.config.registry, _source(loaded)) == ("localhost:5000/test", "file")


def test_registry_from_env_beats_file(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL), environ={"MULTIBAKE_REGISTRY": "registry.example.com/env"})
    assert (loaded.config.registry, _source(loaded)) == ("registry.example.com/env", "$MULTIBAKE_REGISTRY")


def test_registry_flag_beats_env_and_file(tmp_path: Path) -> None:
    environ = {"MULTIBAKE_REGISTRY": "registry.example.com/env"}
    loaded = load(write_config(tmp_path, MINIMAL), registry="flag.example.com/cli", environ=environ)
    assert (loaded.config.registry, _source(loaded)) == ("flag.example.com/cli", "--registry")


def test_empty_env_registry_is_ignored(tmp_path: Path) -> None:
    assert load(write_config(tmp_path, MINIMAL), environ={"MULTIBAKE_REGISTRY": ""}).config.registry == (
        "localhost:5000/test"
    )


def test_settings_precedence_flag_environment_default() -> None:
    env = {"MULTIBAKE_CONFIG": "ci/platforms.yaml", "MULTIBAKE_DEBUG": "1"}
    assert settings.config_path(Path("mine.yaml"), env) == Path("mine.yaml")
    assert settings.config_path(None, env) == Path("ci/platforms.yaml")
    assert settings.config_path(None, {}) == Path("platforms.yaml")
    assert settings.debug(False, env) and settings.debug(True, {}) and not settings.debug(False, {})
    assert settings.registry(None, {}) is None
    override = settings.registry("r.example/x", {"MULTIBAKE_REGISTRY": "e.example/y"})
    assert override is not None and override.source is settings.Source.COMMAND_LINE


def test_registry_override_supplies_a_missing_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, MINIMAL.replace("registry: localhost:5000/test\n", ""))
    with pytest.raises(ConfigError, match="'registry' is missing"):
        load(path)
    assert load(path, registry="r.example.com/x").config.registry == "r.example.com/x"
    monkeypatch.setenv("MULTIBAKE_REGISTRY", "e.example.com/y")
    assert load(path).config.registry == "e.example.com/y"


# --- positions ---------------------------------------------------------------------------------


def test_positions_of_values(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL))
    # line and column (1-based) of the value written at each key path
    assert loaded.positions[("registry",)] == (1, 11)
    assert loaded.positions[("platforms", 0)] == (2, 13)
    assert loaded.positions[("images", "app", "context")] == (5, 14)
    assert loaded.positions[("images", "app", "matrix", "v", 0)] == (7, 11)
    loc = loaded.loc(("images", "app", "matrix", "v", 0))
    assert str(loc) == f"{loaded.file}:7:11: images.app.matrix.v[0]"


def test_loc_falls_back_to_nearest_ancestor(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL))
    loc = loaded.loc(("images", "app", "dockerfile"))  # not written: defaults
    assert (loc.line, loc.column) == loaded.positions[("images", "app")]
    assert loc.path == "images.app.dockerfile"


def test_format_path() -> None:
    assert format_path(("images", "a", "tags", 0, "when", "x")) == "images.a.tags[0].when.x"
    assert format_path(()) == ""
    assert format_path(("platforms", 2)) == "platforms[2]"


# --- reading the file --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such file") as info:
        load(missing)
    assert str(missing) in str(info.value)
    assert info.value.exit_code == EXIT_USAGE


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "platforms.yaml"
    path.write_bytes(b"registry: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


# --- check_paths -------------------------------------------------------------------------------


def test_check_paths_accepts_existing_and_remote_contexts(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL))
    make_context(tmp_path, "app")
    make_context(tmp_path, "other", "sub/Dockerfile.x")
    paths.check_paths(
        loaded,
        [
            paths.BuildFiles("app", "app", "Dockerfile"),
            paths.BuildFiles("app", "other", "sub/Dockerfile.x"),
            paths.BuildFiles("app", "https://github.com/org/repo.git#main", "Dockerfile"),
            paths.BuildFiles("app", "git@github.com:org/repo.git", "Dockerfile"),
            paths.BuildFiles("app", "target:something", "Dockerfile"),
        ],
    )


def test_check_paths_missing_context(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match="build context 'app' is not a directory") as info:
        paths.check_paths(loaded, [paths.BuildFiles("app", "app", "Dockerfile")])
    assert ":5:14: images.app.context:" in str(info.value)


def test_check_paths_missing_dockerfile(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, MINIMAL))
    (tmp_path / "app").mkdir()
    with pytest.raises(ConfigError, match="no Dockerfile at app/Dockerfile"):
        paths.check_paths(loaded, [paths.BuildFiles("app", "app", "Dockerfile")])


def test_check_paths_is_relative_to_the_config_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "project"
    sub.mkdir()
    make_context(sub, "app")
    loaded = load(write_config(sub, MINIMAL))
    monkeypatch.chdir(tmp_path)
    paths.check_paths(loaded, [paths.BuildFiles("app", "app", "Dockerfile")])


# --- schema ------------------------------------------------------------------------------------


def test_json_schema_describes_the_file() -> None:
    schema = Config.model_json_schema()
    assert {"registry", "platforms", "images"} <= set(schema["properties"])
    assert set(schema["required"]) == {"registry", "platforms", "images"}
    assert schema["additionalProperties"] is False
