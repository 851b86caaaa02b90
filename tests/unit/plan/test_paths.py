"""The paths rule's other half: bake's fs entitlements, exactly for the paths outside its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from multibake.cli import app as cli
from multibake.config.load import load
from multibake.plan import buildid, paths, planner
from tests.helpers import FIXED_META, make_context, write_config


def _entitlements(project: Path, text: str) -> tuple[str, ...]:
    (project / "release").mkdir(exist_ok=True)
    loaded = load(write_config(project / "release", text))
    return paths.entitlements(loaded, planner.plan(loaded, FIXED_META))


def test_nothing_is_asked_for_a_project_inside_the_config_directory(tmp_path: Path) -> None:
    make_context(tmp_path / "release", "app")
    text = "registry: r.example.com/x\nplatforms: [linux/amd64]\nimages:\n  app: {context: app}\n"
    assert _entitlements(tmp_path, text) == ()


def test_contexts_cache_folders_and_secret_files_outside_are_named_exactly(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # the project is the git work tree; the config lives in release/
    make_context(tmp_path, "images/app")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read")
    text = (
        "registry: r.example.com/x\nplatforms: [linux/amd64]\n"
        "cache: {type: local, directory: ../cache}\n"
        "images:\n  app:\n    context: ../images/app\n"
        f"    secrets: {{ca: {{file: {ca}}}, token: {{env: TOKEN}}}}\n"
    )
    assert _entitlements(tmp_path, text) == (
        f"fs.read={ca}",
        f"fs.read={tmp_path / 'cache' / 'app--image'}",
        f"fs.read={tmp_path / 'images' / 'app'}",
        f"fs.write={tmp_path / 'cache' / 'app--image'}",
    )


# --- a symlink loop is a configuration error, not a traceback ---------------------------------------

LOOP_CONFIG = "registry: r.example.com/x\nplatforms: [linux/amd64]\nimages:\n  a: {context: loop}\n"


@pytest.mark.parametrize("command", [["validate"], ["hcl", "-o", "-"], ["lock", "-o", "x.lock.json"]])
def test_a_context_that_is_a_symlink_loop_is_exit_2_naming_the_file(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loop").symlink_to("loop")
    config = write_config(tmp_path, LOOP_CONFIG)
    monkeypatch.chdir(tmp_path)
    assert cli.run([*command, "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{config}:4:" in err and "images.a.context" in err and "symbolic link loop" in err
    assert not (tmp_path / "x.lock.json").exists()


def test_a_dockerfile_that_is_a_symlink_loop_names_the_dockerfile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").symlink_to("Dockerfile")
    config = write_config(tmp_path, LOOP_CONFIG.replace("context: loop", "context: app"))
    assert cli.run(["validate", "-c", str(config)]) == 2
    assert "Dockerfile is a symbolic link loop" in capsys.readouterr().err


def test_a_symlink_loop_inside_a_context_is_sent_as_a_link_and_hashed_as_one(tmp_path: Path) -> None:
    make_context(tmp_path, "app")
    (tmp_path / "app" / "self").symlink_to("self")
    loaded = load(write_config(tmp_path, LOOP_CONFIG.replace("context: loop", "context: app")))
    first = buildid.compute(planner.plan(loaded, FIXED_META), loaded.root)
    (tmp_path / "app" / "self").unlink()
    (tmp_path / "app" / "self").symlink_to("other")
    assert buildid.compute(planner.plan(loaded, FIXED_META), loaded.root) != first
