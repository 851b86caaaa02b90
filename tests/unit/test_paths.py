"""The paths rule's other half: bake's fs entitlements, exactly for the paths outside its directory."""

from __future__ import annotations

from pathlib import Path

from multibake.config.load import load
from multibake.plan import paths, planner
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
