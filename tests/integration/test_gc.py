"""multibake gc on the real stack: a registry of the test's own with deletes enabled (delregistry.py).

The fast tier's busybox base and an app family FROM it, three versions. Every assertion reads what the
registry holds after gc; kept tags are pulled and run on all three platforms, and verify passes.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import local_context, run_cli
from tests.integration import delregistry, registry

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX_BASE = ROOT / "samples" / "offline" / "busybox-base"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
STAGING = "multibake-staging-"


@pytest.fixture(scope="module")
def deleting(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry with ``storage.delete.enabled: true`` on its own 127.0.0.1 port, for this module."""
    with delregistry.start(tmp_path_factory.mktemp("gc-registry")) as reg:
        yield reg.host


def project(tmp_path: Path, ns: str, rev: str, retention: str = "") -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "Dockerfile").write_text(
        'FROM base\nARG VERSION\nRUN echo "$VERSION" > /version && echo "' + rev + '" > /rev && uname -m > /arch\n'
    )
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {ns}\n"
        "platforms: [linux/amd64, linux/arm64, linux/arm/v7]\n"
        "per_platform_tags: suffix\n"
        "images:\n"
        "  bb:\n"
        f"    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    matrix: {busybox: ["1.35"]}\n'
        '    args: {BUSYBOX_VERSION: "{busybox}"}\n'
        "  app:\n"
        "    context: app\n"
        "    base: bb\n"
        '    matrix: {version: ["1.0", "2.0", "3.0"]}\n'
        '    args: {VERSION: "{version}"}\n' + retention
    )
    return cfg


def multibake(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=ROOT, env={"SOURCE_DATE_EPOCH": "1764547200"})


def push(cfg: Path, *args: str) -> None:
    proc = multibake("build", "--push", "--progress", "plain", "-c", str(cfg), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]


def gc(cfg: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = multibake("gc", "-c", str(cfg), "--json", *args)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        pytest.fail(f"no JSON (exit {proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")


def held(ns: str) -> dict[str, str]:
    """repo:tag → digest of everything the namespace's repositories hold."""
    host, _, path = ns.partition("/")
    out = {}
    for repo in ("bb", "app"):
        for tag in registry.tags(host, f"{path}/{repo}"):
            found = registry.get(f"{ns}/{repo}:{tag}")
            assert found is not None
            out[f"{repo}:{tag}"] = found.digest
    return out


def exists(ref: str) -> bool:
    host, _, rest = ref.partition("/")
    repo, _, digest = rest.partition("@")
    try:
        registry.manifest(host, repo, digest)
    except OSError:  # urllib's HTTPError: 404 manifest unknown
        return False
    return True


def runs_everywhere(ref: str, platforms: tuple[str, ...] = PLATFORMS) -> None:
    for platform in platforms:
        proc = subprocess.run(
            ["docker", "run", "--rm", "--pull", "always", "--platform", platform, ref, "uname", "-m"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"{ref} on {platform}: {proc.stderr[-800:]}"


def test_gc_removes_the_leftovers_of_a_release_stopped_before_its_tags_moved(deleting: str, tmp_path: Path) -> None:
    ns = f"{deleting}/gc-{uuid.uuid4().hex[:8]}"
    cfg = project(tmp_path, ns, "a")
    push(cfg)
    released = held(ns)
    public = {ref: d for ref, d in released.items() if STAGING not in ref}
    code, dry, _ = gc(cfg, "--grace", "0")
    assert code == 0 and dry["steps"], "after a release, each staging tag shares its index with a public tag"
    assert {s["action"] for s in dry["steps"]} == {"untag"}, "so it is removed alone, never by manifest delete"

    # the next release built and staged every cell, then stopped before promoting: its staging
    # tags point at indexes no public tag names (a shard build that nobody published leaves the same)
    project(tmp_path, ns, "b")
    proc = multibake("build", "--push", "--progress", "plain", "-c", str(cfg), "--shard", "family=app")
    assert proc.returncode == 0, proc.stderr[-3000:]
    left = {ref: d for ref, d in held(ns).items() if STAGING in ref and d not in public.values()}
    assert {ref for ref in left if ref.startswith("app:")} == {f"app:{STAGING}app-{v}_0" for v in (1, 2, 3)}

    code, young, _ = gc(cfg)  # the default grace period: a release minutes old may still be running
    assert code == 0 and young["steps"] == [], young["steps"]

    code, dry, _ = gc(cfg, "--grace", "0")
    assert code == 0 and dry["applied"] is False
    deletes = [s for s in dry["steps"] if s["action"] == "delete"]
    assert {f"{s['repository'].rpartition('/')[2]}:{t}" for s in deletes for t in s["tags"]} == set(left)
    assert dry["freed"] > 0
    assert {ref: d for ref, d in held(ns).items() if STAGING not in ref} == public, "a dry run deletes nothing"

    code, done, err = gc(cfg, "--grace", "0", "--apply")
    assert code == 0, err[-2000:]
    assert all(s["done"] for s in done["steps"])
    assert held(ns) == public, "every staging tag gone, every public tag where it was"
    for ref, digest in left.items():
        assert not exists(f"{ns}/{ref.partition(':')[0]}@{digest}"), f"{ref}'s index is deleted"
    _verified_and_running(cfg, ns)

    project(tmp_path, ns, "c")  # a release that changes the app: its tags move to the staged indexes
    push(cfg)
    public = {ref: d for ref, d in held(ns).items() if STAGING not in ref}
    code, done, err = gc(cfg, "--grace", "0", "--apply")
    assert code == 0, err[-2000:]
    moved = {f"app:{s['tags'][0]}" for s in done["steps"] if s["action"] == "untag"}
    assert moved == {f"app:{STAGING}app-{v}_0" for v in (1, 2, 3)} and all(s["done"] for s in done["steps"])
    assert held(ns) == public, "the staging tags removed alone: the public tags kept their indexes"
    _verified_and_running(cfg, ns)
    code, again, _ = gc(cfg, "--grace", "0", "--apply")
    assert code == 0 and again["steps"] == [], "a second run finds nothing"


def _verified_and_running(cfg: Path, ns: str) -> None:
    verify = multibake("verify", "-c", str(cfg))
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    for ref in ("bb:1.35", "app:1.0", "app:3.0"):
        runs_everywhere(f"{ns}/{ref}")
    runs_everywhere(f"{ns}/app:3.0-armv7", ("linux/arm/v7",))


def test_retention_keeps_the_last_two_values_and_deletes_nothing_else(deleting: str, tmp_path: Path) -> None:
    ns = f"{deleting}/gcret-{uuid.uuid4().hex[:8]}"
    cfg = project(tmp_path, ns, "a")
    push(cfg)
    before = held(ns)
    index = registry.get(f"{ns}/app:1.0")
    assert index is not None
    project(tmp_path, ns, "a", retention="    retention: {keep_last: {version: 2}}\n")

    code, done, err = gc(cfg, "--apply")
    assert code == 0, err[-2000:]
    gone = {f"app:{t}" for s in done["steps"] for t in s["tags"]}
    oldest = {"app:1.0", "app:1.0-amd64", "app:1.0-arm64", "app:1.0-armv7", f"app:{STAGING}app-1_0"}
    assert gone == oldest, "the oldest cell's tags, per-platform tags and its staging tag"
    assert held(ns) == {ref: d for ref, d in before.items() if ref not in oldest}, "nothing else"
    for digest in [index.digest, *index.platforms().values()]:
        assert not exists(f"{ns}/app@{digest}"), "the oldest index and its images are deleted"
    # the cell is still in the matrix: verify reports it missing; the others pass
    verify = multibake("verify", "-c", str(cfg), "--json", "app:version=2.0", "app:version=3.0", "bb")
    assert verify.returncode == 0, verify.stdout[-2000:]
    for ref in ("bb:1.35", "app:2.0", "app:3.0"):
        runs_everywhere(f"{ns}/{ref}")


def test_a_registry_without_deletes_gets_one_line_and_exit_1(stack: None, tmp_path: Path) -> None:
    with delregistry.start(tmp_path / "registry", deletes=False) as reg:
        cfg = project(tmp_path, f"{reg.host}/gcno-{uuid.uuid4().hex[:8]}", "a")
        push(cfg, "bb")
        proc = multibake("gc", "-c", str(cfg), "--grace", "0", "--apply")
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "does not allow deletes" in lines[0] and "Traceback" not in proc.stderr
        assert "storage.delete.enabled" in lines[0]


def _cosign() -> str | None:
    import os
    import shutil

    cache = Path(os.environ.get("MULTIBAKE_CACHE", "/var/cache/multibake"))
    found = sorted(cache.glob("cosign-v2*/cosign"))
    return str(found[-1]) if found else shutil.which("cosign")


def test_signatures_go_with_what_gc_deletes_and_stay_with_what_it_keeps(deleting: str, tmp_path: Path) -> None:
    import os

    cosign = _cosign()
    if cosign is None:
        pytest.skip("cosign is not installed (a cosign v2 binary in $MULTIBAKE_CACHE/cosign-v2*/ or on PATH)")
    ns = f"{deleting}/gcsig-{uuid.uuid4().hex[:8]}"
    cfg = project(tmp_path, ns, "a")
    push(cfg)
    env = {**os.environ, "COSIGN_PASSWORD": "", "COSIGN_YES": "true"}
    subprocess.run([cosign, "generate-key-pair"], cwd=tmp_path, env=env, check=True, capture_output=True)
    signed = {}
    for version in ("1.0", "3.0"):
        index = registry.get(f"{ns}/app:{version}")
        assert index is not None
        signed[version] = [index.digest, *(str(m["digest"]) for m in index.doc["manifests"])]  # attestations too
        proc = subprocess.run(
            [cosign, "sign", "--key", "cosign.key", "--tlog-upload=false", "--recursive",
             "--allow-http-registry", f"{ns}/app@{index.digest}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]

    def sig_tags(version: str) -> set[str]:
        return {f"app:sha256-{d.removeprefix('sha256:')}.sig" for d in signed[version]}

    before = held(ns)
    assert sig_tags("1.0") | sig_tags("3.0") <= set(before), "cosign signed each index and each manifest in it"
    project(tmp_path, ns, "a", retention="    retention: {keep_last: {version: 2}}\n")
    code, _, err = gc(cfg, "--apply")
    assert code == 0, err[-2000:]
    after = held(ns)
    assert not sig_tags("1.0") & set(after), "the signatures of what gc deleted are gone"
    assert sig_tags("3.0") <= set(after), "the signatures of what it kept stay"
    gone = set(before) - set(after)
    assert gone == sig_tags("1.0") | {
        "app:1.0",
        "app:1.0-amd64",
        "app:1.0-arm64",
        "app:1.0-armv7",
        f"app:{STAGING}app-1_0",
    }
