"""The release report in a real browser: the offline sample released, its page opened in headless Chromium.

Debian's chromium, driven over the DevTools protocol (browser.py). The grid is read from the rendered
DOM and checked against what the registry serves; the page and a screenshot are kept as artifacts in
$MULTIBAKE_TEST_ARTIFACTS (default .multibake/test-artifacts/ beside the repository's README).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli, unavailable
from tests.integration import browser, registry

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "samples" / "offline"
ARTIFACTS = Path(os.environ.get("MULTIBAKE_TEST_ARTIFACTS") or ROOT / ".multibake" / "test-artifacts")
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
ENV = {"SOURCE_DATE_EPOCH": "1764547200"}

GRID = """[...document.querySelectorAll('section.family')].map(s => ({
  family: s.dataset.family,
  columns: [...s.querySelectorAll('thead th.platform')].map(th => th.dataset.platform),
  rows: [...s.querySelectorAll('tbody tr')].map(tr => ({
    target: tr.dataset.target, status: tr.dataset.status, change: tr.dataset.change || null,
    tags: tr.querySelector('td.tags').innerText,
    cells: [...tr.querySelectorAll('td.cell')].map(td => ({
      platform: td.dataset.platform, status: td.dataset.status, digest: td.dataset.digest,
      bytes: Number(td.dataset.bytes), layers: Number(td.dataset.layers), text: td.innerText,
      delta: td.querySelector('[data-delta]') ? Number(td.querySelector('[data-delta]').dataset.delta) : 0,
      visible: td.getBoundingClientRect().width > 0,
    })),
  })),
}))"""


@pytest.fixture(scope="module")
def chromium() -> str:
    found = browser.executable()
    if found is None:
        message = "chromium is not installed (scripts/setup-stack.sh --browser)"
        unavailable(message)
    return found


def sample(tmp_path: Path, ns: str) -> Path:
    project = tmp_path / "offline"
    shutil.copytree(OFFLINE, project, symlinks=True)
    cfg = project / "platforms.yaml"
    cfg.write_text(cfg.read_text().replace("registry: 127.0.0.1:5000/multibake-sample", f"registry: {ns}"))
    return cfg


def _sizes(ref: str) -> dict[str, tuple[str, int, int]]:
    """platform → (digest, compressed bytes, layers) of the index ``ref``, as the registry serves it."""
    index = registry.get(ref)
    assert index is not None
    host, repo, _ = registry.split(ref)
    out = {}
    for platform, digest in index.platforms().items():
        layers = registry.manifest(host, repo, digest)["layers"]
        out[platform] = (digest, sum(int(layer["size"]) for layer in layers), len(layers))
    return out


def test_the_release_page_of_the_offline_sample_in_headless_chromium(
    stack: None, chromium: str, tmp_path: Path
) -> None:
    ns = f"127.0.0.1:5000/report-{uuid.uuid4().hex[:8]}"
    cfg = sample(tmp_path, ns)
    page_file = tmp_path / "release.html"
    first = run_cli("build", "--push", "--progress", "plain", "-c", str(cfg), "--report", str(page_file), env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    assert page_file.is_file()
    # the next release: the full flavor grows by a 200 kB file
    dockerfile = cfg.parent / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("seq 1 100", "seq 1 40000"))
    second = run_cli("build", "--push", "--progress", "plain", "-c", str(cfg), "--report", str(page_file), env=ENV)
    assert second.returncode == 0, second.stderr[-3000:]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(page_file, ARTIFACTS / "release-report.html")
    with browser.chromium() as page:
        page.open(page_file.as_uri(), width=1600, height=1000)
        grid: list[dict[str, Any]] = page.evaluate(GRID)
        shot = page.screenshot(ARTIFACTS / "release-report.png")
        assert page.requests_made == [page_file.as_uri()], "the page loads nothing else"
    assert shot.stat().st_size > 10_000

    families = {f["family"]: f for f in grid}
    assert set(families) == {"busybox-base", "app"}
    app = families["app"]
    assert app["columns"] == PLATFORMS, "an arm/v7 column, in the plan's order"
    assert {r["target"] for r in app["rows"]} == {"app-1_0-slim", "app-1_0-full", "app-2_0-slim", "app-2_0-full"}
    for row in app["rows"]:
        assert row["status"] == "ok"
        version, flavor = row["target"].split("-")[1].replace("_", "."), row["target"].split("-")[2]
        assert f"{version}-{flavor}" in row["tags"]
        held = _sizes(f"{ns}/app:{version}-{flavor}")
        assert [c["platform"] for c in row["cells"]] == PLATFORMS
        for cell in row["cells"]:
            digest, size, layers = held[cell["platform"]]
            assert cell["status"] == "ok" and cell["visible"]
            assert (cell["digest"], cell["bytes"], cell["layers"]) == (digest, size, layers), "as the registry serves"
        armv7 = next(c for c in row["cells"] if c["platform"] == "linux/arm/v7")
        assert f"{version}-{flavor}-armv7" in armv7["text"], "its per-platform tag"
        assert "on " in armv7["text"], "the base it was built on"
        if flavor == "full":
            assert row["change"] == "changed" and armv7["delta"] > 50_000, "the size delta of the last release"
        else:  # rebuilt (the RUN line changed) with the same files: a few bytes either way
            assert abs(armv7["delta"]) < 2_000
