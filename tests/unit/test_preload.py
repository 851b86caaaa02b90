"""preload.py: modules queued for a background import arrive in sys.modules, in order, past a missing one."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from multibake import preload


def _wait_for(name: str, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while name not in sys.modules and time.monotonic() < deadline:
        time.sleep(0.01)
    return name in sys.modules


def test_queued_modules_are_imported_in_the_background_past_a_missing_or_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = tmp_path / "order.txt"
    for name in ("mb_preload_first", "mb_preload_second"):
        (tmp_path / f"{name}.py").write_text(
            f"with open({str(order)!r}, 'a') as f:\n    f.write({name!r} + '\\n')\n", encoding="utf-8"
        )
    (tmp_path / "mb_preload_broken.py").write_text("raise RuntimeError('broken on import')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        preload.later("mb_preload_first", "mb_preload_missing_module", "mb_preload_broken", "mb_preload_second")
        assert _wait_for("mb_preload_second")
        assert order.read_text(encoding="utf-8").split() == ["mb_preload_first", "mb_preload_second"]
        assert "mb_preload_missing_module" not in sys.modules
        assert "mb_preload_broken" not in sys.modules  # the main thread's import would raise it again
        preload.later("mb_preload_first")  # already imported: nothing runs twice
        time.sleep(0.05)
        assert order.read_text(encoding="utf-8").split() == ["mb_preload_first", "mb_preload_second"]
    finally:
        for name in ("mb_preload_first", "mb_preload_second"):
            sys.modules.pop(name, None)


def test_a_build_does_not_import_the_http_stack_before_bake() -> None:
    """What promote needs is left to preload: importing the release pipeline loads no HTTP library."""
    import subprocess

    code = (
        "import sys, multibake.cli.app, multibake.release.pipeline; "
        "print(' '.join(m for m in ('multibake.registry.wire', 'http.client', 'tenacity') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
