"""SBOM attestations on the real stack: one SPDX document per platform image, read back from the registry.

The generator is the scanner image scripts/sbom-scanner.sh puts into the local registry. Every
assertion reads the registry (tests/integration/registry.py) or what `multibake sbom` prints from it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration import registry
from tests.integration.test_publish import _two_leaves, multibake, plan_of, public_digests, push

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}
SDE_TIME = "2023-11-14T22:13:20Z"
SPDX = "https://spdx.dev/Document"
BUILDERS = [pytest.param("default", id="docker-driver"), pytest.param("multibake-remote", id="remote")]


def spdx_of(ref: str, platform: str) -> dict[str, Any] | None:
    """The SPDX document of one platform image, found as a consumer would: the index's attestation entry."""
    host, repo, _ = registry.split(ref)
    index = registry.get(ref)
    assert index is not None and index.is_index, ref
    image = index.platforms()[platform]
    for entry in index.doc["manifests"]:
        notes = entry.get("annotations") or {}
        if notes.get("vnd.docker.reference.digest") != image:
            continue
        for layer in registry.manifest(host, repo, entry["digest"])["layers"]:
            if layer["annotations"]["in-toto.io/predicate-type"] == SPDX:
                statement: dict[str, Any] = json.loads(registry.blob(host, repo, layer["digest"]))
                predicate: dict[str, Any] = statement["predicate"]
                return predicate
    return None


@pytest.mark.parametrize("builder", BUILDERS)
def test_each_platform_image_gets_its_sbom_and_a_second_release_moves_no_tag(
    stack: None, sbom_generator: str, tmp_path: Path, builder: str
) -> None:
    ns = f"127.0.0.1:5000/sbom-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, "uname -m > /two")
    cfg.write_text(cfg.read_text() + f"attest: {{sbom: {{generator: {sbom_generator}}}}}\n")
    code, _, err = push(cfg, "--builder", builder, env=SDE)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        for platform in cell["platforms"]:
            doc = spdx_of(cell["tags"][0], platform)
            assert doc is not None, (cell["tags"][0], platform)
            assert doc["creationInfo"]["created"] == SDE_TIME  # the release's time, not the scan's
            assert "busybox" in {p["name"] for p in doc["packages"]}
    first = public_digests(plan)

    # multibake sbom reads the same document back; the table names the package per platform
    ref = plan["cells"][0]["tags"][0]
    shown = multibake("sbom", ref, "--platform", "linux/arm/v7", "--format", "spdx-json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == spdx_of(ref, "linux/arm/v7")
    table = multibake("sbom", ref)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert {(r[0], r[2]) for r in rows if len(r) == 4} >= {(p, "busybox") for p in plan["cells"][0]["platforms"]}
    assert multibake("verify", "-c", str(cfg)).returncode == 0

    # the no-op rule: the same tree released again moves no tag (the SBOMs are the same documents)
    code, report, err = push(cfg, "--builder", builder, env=SDE)
    assert code == 0, err[-3000:]
    assert {c["status"] for c in report["cells"]} == {"unchanged"}, report["cells"]
    assert public_digests(plan) == first


def test_verify_names_the_platform_image_without_its_sbom(stack: None, sbom_generator: str, tmp_path: Path) -> None:
    ns = f"127.0.0.1:5000/nosbom-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, "uname -m > /two")
    code, _, err = push(cfg, "--attest", "sbom=off", env=SDE)
    assert code == 0, err[-3000:]
    cfg.write_text(cfg.read_text() + f"attest: {{sbom: {{generator: {sbom_generator}}}}}\n")
    proc = multibake("verify", "-c", str(cfg))
    assert proc.returncode == 1
    assert "no SBOM attestation for linux/amd64 (sha256:" in proc.stdout + proc.stderr
    assert "linux/arm/v7 (sha256:" in proc.stdout + proc.stderr
    shown = multibake("sbom", plan_of(cfg)["cells"][0]["tags"][0])
    assert shown.returncode == 1 and "has no SBOM attestation" in shown.stderr


@pytest.mark.parametrize("builder", BUILDERS)
def test_referrers_placement_leaves_runnable_platforms_only_in_the_index(
    stack: None, sbom_generator: str, tmp_path: Path, builder: str
) -> None:
    ns = f"127.0.0.1:5000/sbomref-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, "uname -m > /two")
    cfg.write_text(
        cfg.read_text() + f"attest: {{placement: referrers, provenance: min, sbom: {{generator: {sbom_generator}}}}}\n"
    )
    code, _, err = push(cfg, "--builder", builder, env=SDE)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        index = registry.get(cell["tags"][0])
        assert index is not None and index.attestations() == 0, cell["tags"][0]
        assert sorted(index.platforms()) == sorted(cell["platforms"])
        host, repo, _ = registry.split(cell["tags"][0])
        for platform, digest in index.platforms().items():
            # the referrers tag of the OCI distribution spec lists the image's attestation manifest
            listing = registry.get(f"{host}/{repo}:sha256-{digest.removeprefix('sha256:')}")
            assert listing is not None and listing.is_index, (cell["tags"][0], platform)
            (entry,) = listing.doc["manifests"]
            referrer = registry.manifest(host, repo, entry["digest"])
            assert referrer["subject"]["digest"] == digest
            kinds = {layer["annotations"]["in-toto.io/predicate-type"] for layer in referrer["layers"]}
            assert SPDX in kinds and any(k.startswith("https://slsa.dev/provenance/") for k in kinds)
    shown = multibake("sbom", plan["cells"][0]["tags"][0], "--platform", "linux/arm/v7")
    assert shown.returncode == 0 and "busybox" in shown.stdout and "attestation in the referrers" in shown.stdout
    assert multibake("verify", "-c", str(cfg)).returncode == 0
    first = public_digests(plan)
    code, report, err = push(cfg, "--builder", builder, env=SDE)
    assert code == 0, err[-3000:]
    assert {c["status"] for c in report["cells"]} == {"unchanged"}
    assert public_digests(plan) == first


def _npm(name: str, version: str) -> str:
    return f'echo \'{{"name":"{name}","version":"{version}"}}\' > /app/{name}/package.json'


def test_diff_reports_packages_added_removed_and_changed_per_platform(
    stack: None, sbom_generator: str, tmp_path: Path
) -> None:
    ns = f"127.0.0.1:5000/sbomdiff-{uuid.uuid4().hex[:8]}"
    before = f"mkdir -p /app/demo /app/old && {_npm('demo', '1.0.0')} && {_npm('old', '0.1.0')}"
    cfg = _two_leaves(tmp_path, ns, before)
    cfg.write_text(cfg.read_text() + f"attest: {{sbom: {{generator: {sbom_generator}}}}}\n")
    code, _, err = push(cfg, "--builder", "multibake-remote", env=SDE)
    assert code == 0, err[-3000:]
    after = f"mkdir -p /app/demo /app/new && {_npm('demo', '1.1.0')} && {_npm('new', '2.0.0')}"
    (tmp_path / "two" / "Dockerfile").write_text(f"FROM base\nRUN {after}\n")
    code, _, err = push(cfg, "--builder", "multibake-remote", env=SDE)
    assert code == 0, err[-3000:]
    proc = multibake("diff", "--previous", "--json", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    changed = [t for t in doc["tags"] if t["change"] == "changed"]
    assert changed and all("/two:" in t["ref"] for t in changed)
    # the multi-arch tags: their index leads to each image's SBOM (a per-platform tag alone does not)
    for tag in [t for t in changed if not t["ref"].endswith(("-amd64", "-arm64", "-armv7"))]:
        for row in tag["platforms"]:
            got = {(p["type"], p["name"], p["before"], p["after"]) for p in row["packages"]}
            assert got == {
                ("npm", "demo", "1.0.0", "1.1.0"),
                ("npm", "old", "0.1.0", None),
                ("npm", "new", None, "2.0.0"),
            }
    table = multibake("diff", "--previous", "-c", str(cfg))
    assert "~ npm demo 1.0.0 → 1.1.0" in table.stdout and "+ npm new 2.0.0" in table.stdout
