"""Publishing against the real stack: per-platform tags, platform_args, atomic releases, shards, skip-existing.

Every assertion reads the registry on 127.0.0.1:5000 (or runs the images), never multibake's intent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import local_context, run_cli
from tests.integration import registry

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX_BASE = ROOT / "samples" / "offline" / "busybox-base"
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
SHORT = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armv7"}
BASHBREW = {"linux/amd64": "amd64", "linux/arm64": "arm64v8", "linux/arm/v7": "arm32v7"}
S6_NAMES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "arm"}


def multibake(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env=env)


def write_release(
    tmp_path: Path, per_platform_tags: str = "suffix", app_run: str = "uname -m > /arch", registry_ns: str = ""
) -> Path:
    """A small release: the busybox base, and a family with per-platform args FROM it.

    Rewriting it in the same tmp_path keeps its registry namespace (a new release of the same images).
    """
    ns_file = tmp_path / ".namespace"
    if not registry_ns:
        if not ns_file.exists():
            ns_file.write_text(f"127.0.0.1:5000/pub-{uuid.uuid4().hex[:8]}")
        registry_ns = ns_file.read_text()
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "Dockerfile").write_text(
        "FROM base\nARG VERSION\nARG S6_ARCH\n"
        f'RUN echo "$VERSION" > /version && echo "$S6_ARCH" > /s6-arch && {app_run}\n'
    )
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {registry_ns}\n"
        "platforms: [linux/amd64, linux/arm64, linux/arm/v7]\n"
        f"per_platform_tags: {per_platform_tags}\n"
        "images:\n"
        "  bb:\n"
        f"    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    matrix: {busybox: ["1.35"]}\n'
        '    args: {BUSYBOX_VERSION: "{busybox}"}\n'
        "  app:\n"
        "    context: app\n"
        "    base: bb\n"
        '    matrix: {version: ["1.0", "2.0"]}\n'
        '    args: {VERSION: "{version}"}\n'
        "    platform_args: {S6_ARCH: s6-overlay}\n"
        '    annotations: {org.opencontainers.image.description: "app {version}"}\n'
    )
    return cfg


def plan_of(cfg: Path) -> dict[str, Any]:
    proc = multibake("plan", "--json", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def push(cfg: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = multibake("build", "--push", "--json", "--progress", "plain", "-c", str(cfg), *args, env=env)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        pytest.fail(f"no JSON (exit {proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-4000:]}")


def public_digests(plan: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for cell in plan["cells"]:
        for ref in [*cell["tags"], *(r for refs in cell["platform_tags"].values() for r in refs)]:
            held = registry.get(ref)
            out[ref] = held.digest if held else None
    return out


@pytest.mark.parametrize(("style", "names"), [("suffix", SHORT), ("prefix", BASHBREW)])
def test_per_platform_tags_are_plain_manifests_matching_the_index(
    stack: None, tmp_path: Path, style: str, names: dict[str, str]
) -> None:
    cfg = write_release(tmp_path, per_platform_tags=style)
    code, _, err = push(cfg)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        index = registry.get(cell["tags"][0])
        assert index is not None and index.is_index
        assert sorted(index.platforms()) == sorted(cell["platforms"])
        host, repo, tag = registry.split(cell["tags"][0])
        for platform in cell["platforms"]:
            (ref,) = cell["platform_tags"][platform]
            want = f"{tag}-{names[platform]}" if style == "suffix" else f"{names[platform]}-{tag}"
            assert ref.endswith(":" + want)
            single = registry.get(ref)
            assert single is not None, ref
            assert single.media_type in registry.MANIFEST_TYPES, f"{ref} is {single.media_type}"
            assert single.digest == index.platforms()[platform], "same image as the index entry"
            config = registry.config_of(host, repo, single.digest)
            declared = f"{config['os']}/{config['architecture']}" + (
                f"/{config['variant']}" if config.get("variant") else ""
            )
            assert declared == platform
    verify = multibake("verify", "--json", "-c", str(cfg))
    assert verify.returncode == 0, verify.stdout[-2000:]
    assert json.loads(verify.stdout)["ok"] is True


def test_platform_args_give_each_platform_its_own_value_and_one_index(stack: None, tmp_path: Path) -> None:
    cfg = write_release(tmp_path)
    code, _, err = push(cfg)
    assert code == 0, err[-3000:]
    ref = next(c for c in plan_of(cfg)["cells"] if c["family"] == "app")["tags"][0]
    index = registry.get(ref)
    assert index is not None and sorted(index.platforms()) == sorted(PLATFORMS)
    assert index.doc.get("annotations", {}).get("org.opencontainers.image.description", "").startswith("app ")
    for platform in PLATFORMS:
        out = subprocess.run(
            ["docker", "run", "--rm", "--pull", "always", "--platform", platform, ref, "cat", "/s6-arch"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == S6_NAMES[platform]


def test_a_failed_release_leaves_public_tags_alone_and_a_rerun_converges(stack: None, tmp_path: Path) -> None:
    cfg = write_release(tmp_path)
    code, _, err = push(cfg)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    before = public_digests(plan)
    assert all(before.values())

    # the same release, changed so that arm/v7 fails after amd64 and arm64 have been built
    write_release(tmp_path, app_run='test "$(uname -m)" != armv7l && uname -m > /arch-v2')
    assert plan_of(cfg)["registry"] == plan["registry"], "the same images, a new release"
    code, report, _ = push(cfg)
    assert code == 1
    assert any(c["status"] == "failed" for c in report["cells"])
    assert public_digests(plan) == before, "no public tag may move when a release fails"
    verify = multibake("verify", "-c", str(cfg))
    assert verify.returncode == 0, "the previous release is still whole"

    write_release(tmp_path, app_run="uname -m > /arch-v3")  # fixed
    code, _, err = push(cfg)
    assert code == 0, err[-3000:]
    after = public_digests(plan)
    app_tags = [t for c in plan["cells"] if c["family"] == "app" for t in c["tags"]]
    assert all(after[t] != before[t] for t in app_tags), "the rerun published the new release"
    assert multibake("verify", "-c", str(cfg)).returncode == 0


def test_three_platform_shards_merge_into_the_same_release_as_one_machine(stack: None, tmp_path: Path) -> None:
    cfg = write_release(tmp_path)
    lock = tmp_path / "multibake.lock.json"
    assert multibake("lock", "-c", str(cfg), "-o", str(lock)).returncode == 0
    env = {"SOURCE_DATE_EPOCH": "1700000000"}  # the image configs' own timestamps, as a lock would pin in CI

    code, _, err = push(cfg, "--lock", str(lock), env=env)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    single = {c["tags"][0]: registry.get(c["tags"][0]) for c in plan["cells"]}

    matrix = json.loads(multibake("ci", "matrix", "--format", "github", "-c", str(cfg)).stdout)
    shards = [row["shard"] for row in matrix["include"]]
    assert shards == [f"platform={p}" for p in PLATFORMS]
    results = tmp_path / "shards"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "multibake",
                "build",
                "--push",
                "--progress",
                "plain",
                "-c",
                str(cfg),
                "--shard",
                shard,
                "--lock",
                str(lock),
                "--result-dir",
                str(results),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for shard in shards
    ]
    for proc in procs:
        _, errs = proc.communicate(timeout=1800)
        assert proc.returncode == 0, errs[-3000:]
    assert len(list(results.glob("*.json"))) == 3

    published = multibake("publish", "--from", str(results), "-c", str(cfg), "--lock", str(lock), env=env)
    assert published.returncode == 0, published.stderr[-3000:]
    for ref, held in single.items():
        merged = registry.get(ref)
        assert merged is not None and held is not None
        assert merged.platforms() == held.platforms(), f"{ref}: the shards built the very same images"


def test_publish_refuses_an_incomplete_set_of_shards(stack: None, tmp_path: Path) -> None:
    cfg = write_release(tmp_path)
    lock = tmp_path / "lock.json"
    assert multibake("lock", "-c", str(cfg), "-o", str(lock)).returncode == 0
    results = tmp_path / "shards"
    for shard in ("platform=linux/amd64", "platform=linux/arm64"):  # arm/v7 never ran
        proc = multibake(
            "build", "--push", "-c", str(cfg), "--shard", shard, "--lock", str(lock), "--result-dir", str(results)
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    published = multibake("publish", "--from", str(results), "-c", str(cfg), "--lock", str(lock))
    assert published.returncode == 1
    assert "linux/arm/v7" in published.stderr
    assert all(d is None for d in public_digests(plan_of(cfg)).values()), "nothing public was written"


def test_skip_existing_rebuilds_only_what_changed(stack: None, tmp_path: Path) -> None:
    cfg = write_release(tmp_path)
    code, _, err = push(cfg)
    assert code == 0, err[-3000:]

    code, report, err = push(cfg, "--skip-existing")
    assert code == 0, err[-3000:]
    assert report["bake_runs"] == [], "an unchanged tree runs no build at all"
    assert {c["status"] for c in report["cells"]} == {"up-to-date"}

    dockerfile = tmp_path / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN echo changed > /changed\n")
    code, report, err = push(cfg, "--skip-existing")
    assert code == 0, err[-3000:]
    status = {c["family"]: c["status"] for c in report["cells"]}
    assert status == {"bb": "up-to-date", "app": "published"}
    assert multibake("verify", "-c", str(cfg)).returncode == 0


def _two_leaves(tmp_path: Path, ns: str, two_run: str) -> Path:
    """bb, and two leaf families FROM it with a Dockerfile each (per-platform tags on)."""
    for leaf, run in (("one", "uname -m > /one"), ("two", two_run)):
        (tmp_path / leaf).mkdir(exist_ok=True)
        (tmp_path / leaf / "Dockerfile").write_text(f"FROM base\nRUN {run}\n")
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {ns}\nplatforms: [linux/amd64, linux/arm64, linux/arm/v7]\nper_platform_tags: suffix\n"
        f"images:\n  bb:\n    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    args: {BUSYBOX_VERSION: "1.35"}\n'
        '  one:\n    context: one\n    base: bb\n    matrix: {v: ["1"]}\n'
        '  two:\n    context: two\n    base: bb\n    matrix: {v: ["1"]}\n'
    )
    return cfg


def test_a_release_with_nothing_changed_moves_no_tag_and_a_change_moves_only_its_cell(
    stack: None, tmp_path: Path
) -> None:
    ns = f"127.0.0.1:5000/noop-{uuid.uuid4().hex[:8]}"
    # the release's time, as a checkout's commit time would give it (tmp_path is no git checkout)
    sde = {"SOURCE_DATE_EPOCH": "1700000000"}
    cfg = _two_leaves(tmp_path, ns, "uname -m > /two")
    code, _, err = push(cfg, env=sde)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    repos = sorted({registry.split(c["tags"][0])[1] for c in plan["cells"]})
    first = public_digests(plan)
    listed = {repo: registry.tags("127.0.0.1:5000", repo) for repo in repos}

    code, report, err = push(cfg, env=sde)  # nothing changed
    assert code == 0, err[-3000:]
    assert {c["status"] for c in report["cells"]} == {"unchanged"}, report["cells"]
    assert public_digests(plan) == first, "a release with nothing changed moved a tag"
    assert {repo: registry.tags("127.0.0.1:5000", repo) for repo in repos} == listed

    _two_leaves(tmp_path, ns, "uname -m > /two && echo changed > /changed")  # one leaf changes
    code, report, err = push(cfg, env=sde)
    assert code == 0, err[-3000:]
    status = {c["family"]: c["status"] for c in report["cells"]}
    assert status == {"bb": "unchanged", "one": "unchanged", "two": "published"}, status
    after = public_digests(plan)
    two = next(c for c in plan["cells"] if c["family"] == "two")
    moved = {ref for ref in first if after[ref] != first[ref]}
    assert moved == {*two["tags"], *(r for refs in two["platform_tags"].values() for r in refs)}
