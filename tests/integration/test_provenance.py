"""Provenance attestations on the real stack: attest: / --attest decide what each index holds.

Every assertion reads the registry (tests/integration/registry.py), never multibake's intent.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.integration import registry
from tests.integration.test_publish import _two_leaves, multibake, plan_of, public_digests, push

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}  # the release's time, as a checkout's commit time gives it


def _indexes(plan: dict[str, Any]) -> dict[str, registry.Manifest]:
    held = {ref: registry.get(ref) for cell in plan["cells"] for ref in cell["tags"]}
    assert all(m is not None and m.is_index for m in held.values()), held
    return {ref: m for ref, m in held.items() if m is not None}


def _verify(cfg: Path) -> dict[str, Any]:
    proc = multibake("verify", "--json", "-c", str(cfg))
    assert proc.returncode == 0, proc.stdout[-2000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _predicate(ref: str, index: registry.Manifest) -> dict[str, Any]:
    """The provenance predicate of the index's first attestation manifest (an in-toto statement)."""
    host, repo, _ = registry.split(ref)
    attestation = next(m for m in index.doc["manifests"] if m["platform"]["os"] == "unknown")
    layer = registry.manifest(host, repo, attestation["digest"])["layers"][0]
    assert layer["annotations"]["in-toto.io/predicate-type"].startswith("https://slsa.dev/provenance/")
    statement: dict[str, Any] = json.loads(registry.blob(host, repo, layer["digest"]))
    predicate: dict[str, Any] = statement["predicate"]
    return predicate


def test_provenance_off_publishes_no_attestation_and_min_brings_them_back(stack: None, tmp_path: Path) -> None:
    ns = f"127.0.0.1:5000/prov-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, "uname -m > /two")
    code, _, err = push(cfg, "--attest", "provenance=off", env=SDE)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    for ref, index in _indexes(plan).items():
        assert index.attestations() == 0, ref
        assert len(index.doc["manifests"]) == 3, "the three platform images and nothing else"
    assert {t["attestations"] for t in _verify(cfg)["tags"] if t["kind"] == "index"} == {0}
    off = public_digests(plan)

    # platforms.yaml asks for min; the same images, now with their attestations: the tags move
    cfg.write_text(cfg.read_text() + "attest: {provenance: min}\n")
    code, report, err = push(cfg, env=SDE)
    assert code == 0, err[-3000:]
    assert {c["status"] for c in report["cells"]} == {"published"}
    for ref, index in _indexes(plan).items():
        assert index.attestations() == 3, ref  # one per platform image
        assert index.platforms() == registry.get(ref).platforms()  # type: ignore[union-attr]
        assert "buildConfig" not in _predicate(ref, index), "min records no build definition"
    assert {t["attestations"] for t in _verify(cfg)["tags"] if t["kind"] == "index"} == {3}
    # the same images: the same config and layers. Their manifests differ all the same: without
    # attestations BuildKit writes Docker media types, with them OCI ones
    singles = [ref for cell in plan["cells"] for refs in cell["platform_tags"].values() for ref in refs]
    for ref in singles:
        host, repo, _ = registry.split(ref)
        was, now = (registry.manifest(host, repo, str(d)) for d in (off[ref], public_digests(plan)[ref]))
        assert was["config"]["digest"] == now["config"]["digest"], ref
        assert [la["digest"] for la in was["layers"]] == [la["digest"] for la in now["layers"]], ref


def test_a_release_with_provenance_max_and_nothing_changed_moves_no_tag(stack: None, tmp_path: Path) -> None:
    ns = f"127.0.0.1:5000/provmax-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, "uname -m > /two")
    code, _, err = push(cfg, "--attest", "provenance=max", env=SDE)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    first = public_digests(plan)
    for ref, index in _indexes(plan).items():
        assert index.attestations() == 3, ref
        assert "buildConfig" in _predicate(ref, index), "max records the build definition"

    # rebuilt from cache: new attestation manifests (they record when the build ran), the same images
    code, report, err = push(cfg, "--attest", "provenance=max", env=SDE)
    assert code == 0, err[-3000:]
    assert {c["status"] for c in report["cells"]} == {"unchanged"}, report["cells"]
    assert public_digests(plan) == first, "a release with nothing changed moved a tag"
