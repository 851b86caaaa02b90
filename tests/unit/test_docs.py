"""docs/: the generated reference pages match the code, and the hand-written pages stay true to it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from multibake import errors
from tests.helpers import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def _generator() -> ModuleType:
    """scripts/gen_docs.py, imported from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_docs", REPO_ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_docs", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _generator()


def test_generated_pages_match_the_code(gen: ModuleType) -> None:
    pages: dict[Path, str] = gen.pages()
    assert set(pages) == {DOCS / "platforms-yaml.md", DOCS / "commands.md"}
    for path, text in pages.items():
        committed = path.read_text(encoding="utf-8") if path.is_file() else ""
        assert committed == text, f"{path.relative_to(REPO_ROOT)} is out of date: run python3 scripts/gen_docs.py"


def test_check_mode_reports_drift(gen: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stale = tmp_path / "commands.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "pages", lambda: {stale: "new\n", tmp_path / "platforms-yaml.md": "x\n"})
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == "new\n"


def test_the_schema_page_names_every_key_of_the_schema(gen: ModuleType) -> None:
    doc = gen.schema()
    text = (DOCS / "platforms-yaml.md").read_text(encoding="utf-8")
    for name, node in [("", doc), *doc["$defs"].items()]:
        if name:
            assert f"## {name}\n" in text
        for key in node.get("properties", {}):
            assert f"| `{key}` |" in text, (name, key)


def test_the_command_page_names_every_command_and_option() -> None:
    import typer.main

    from multibake.cli import app as cli

    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    root: Any = typer.main.get_command(cli.app)  # a TyperGroup: .commands maps names to commands
    for name, cmd in root.commands.items():
        assert f"## multibake {name}\n" in text
        for param in getattr(cmd, "params", []):
            for opt in param.opts:
                if opt.startswith("-"):
                    assert f"`{opt}`" in text, (name, opt)


def test_exit_codes_page_gives_every_code() -> None:
    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    codes = {errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED}
    assert codes == {0, 1, 2, 130}
    for code in codes:
        assert f"| `{code}` |" in text, code


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_point_at_files_that_exist(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"{page}: broken link {target}"
