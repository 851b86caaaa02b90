"""SBOM attestations: attest: sbom (release and family), --attest sbom=…, SPDX packages and their diff,
and `multibake sbom` / verify reading attestation manifests from an in-memory registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from multibake.cli import app as cli
from multibake.cli import options
from multibake.compare import sbom
from multibake.config.schema import Retry
from multibake.errors import UsageError
from multibake.kinds import Provenance
from multibake.plan import attest
from multibake.registry.client import Registry
from multibake.retry import RetryPolicy
from tests.helpers import make_context, plan_text
from tests.unit.fakes import INDEX, MANIFEST, FakeRegistry, _digest

GEN = "127.0.0.1:5000/tools/scanner:1"
CONFIG = """
registry: localhost:5000/t
platforms: [linux/amd64, linux/arm64]
{attest}
images:
  bb:
    context: bb
    matrix: {{v: ["1"]}}
  app:
    context: app
    base: bb
    matrix: {{v: ["1"]}}
{family}
"""


def _plan_attest(tmp_path: Path, top: str = "", family: str = "") -> dict[str, tuple[str, ...]]:
    make_context(tmp_path, "bb")
    make_context(tmp_path, "app")
    p = plan_text(tmp_path, CONFIG.format(attest=top, family=family))
    return {c.family: c.attest for c in p.cells}


def test_sbom_on_renders_the_generator_and_the_release_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    got = _plan_attest(tmp_path, f"attest: {{provenance: max, sbom: {{generator: {GEN}}}}}")
    spec = f"type=sbom,generator={GEN},SOURCE_DATE_EPOCH=1717243200"  # the fixed creation time of plan_text
    assert got == {"bb": ("type=provenance,mode=max", spec), "app": ("type=provenance,mode=max", spec)}


def test_a_family_beats_the_top_level_kind_by_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    got = _plan_attest(tmp_path, "attest: {provenance: min, sbom: true}", "    attest: {sbom: false}")
    assert got["bb"] == ("type=provenance,mode=min", "type=sbom,SOURCE_DATE_EPOCH=1717243200")
    assert got["app"] == ("type=provenance,mode=min", "type=sbom,disabled=true")
    assert attest.wants_sbom(got["bb"]) and not attest.wants_sbom(got["app"])


def test_a_generator_that_would_break_the_bake_attribute_is_refused(tmp_path: Path) -> None:
    from multibake.errors import ConfigError

    with pytest.raises(ConfigError, match=r"attest\.sbom.*generator: an image reference"):
        _plan_attest(tmp_path, 'attest: {sbom: {generator: "a,b"}}')


@pytest.mark.parametrize(
    ("items", "want"),
    [
        (("sbom=on",), attest.Choice(sbom=attest.SbomChoice())),
        (("sbom=off",), attest.Choice(sbom=attest.SbomChoice(enabled=False))),
        (
            ("provenance=off", f"sbom=generator={GEN}"),
            attest.Choice(provenance=Provenance.OFF, sbom=attest.SbomChoice(generator=GEN)),
        ),
    ],
)
def test_the_attest_option(items: tuple[str, ...], want: attest.Choice) -> None:
    assert attest.parse_option(items) == want


def test_the_command_line_replaces_only_the_kinds_it_names() -> None:
    current = ("type=provenance,mode=max", "type=sbom,disabled=true")
    chosen = attest.parse_option((f"sbom=generator={GEN}",))
    assert attest.overridden(current, chosen, 5) == (
        "type=provenance,mode=max",
        f"type=sbom,generator={GEN},SOURCE_DATE_EPOCH=5",
    )
    with pytest.raises(UsageError, match="sbom is on, off or generator=IMAGE"):
        attest.parse_option(("sbom=generator=a,b",))


def _spdx(*pkgs: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "documentDescribes": ["SPDXRef-root"],
        "packages": [{"SPDXID": "SPDXRef-root", "name": "sbom"}]
        + [
            {
                "SPDXID": f"SPDXRef-{n}",
                "name": n,
                "versionInfo": v,
                "externalRefs": [{"referenceType": "purl", "referenceLocator": f"pkg:{k}/{n}@{v}"}],
            }
            for k, n, v in pkgs
        ],
    }


def test_packages_and_their_changes() -> None:
    before = sbom.packages(_spdx(("deb", "libc6", "2.41"), ("npm", "ms", "2.1.3"), ("deb", "gone", "1")))
    after = sbom.packages(_spdx(("deb", "libc6", "2.42"), ("npm", "ms", "2.1.3"), ("npm", "new", "0.1")))
    assert [p.name for p in before] == ["gone", "libc6", "ms"]  # the scanned root itself is left out
    changes = {(c.name, c.before, c.after) for c in sbom.compare(before, after)}
    assert changes == {("gone", "1", None), ("libc6", "2.41", "2.42"), ("new", None, "0.1")}


def _attested(fake: FakeRegistry, ref: str, docs: dict[str, dict[str, Any] | None]) -> str:
    """A multi-arch image at ``ref`` whose platform images carry these SPDX documents (None: no SBOM)."""
    repo = ref.rsplit(":", 1)[0]
    entries: list[dict[str, Any]] = []
    attestations = []
    for platform, doc in docs.items():
        digest = fake.image(f"{repo}:img-{platform.replace('/', '-')}", platform)
        os_, arch, *variant = platform.split("/")
        entries.append(
            {
                "mediaType": MANIFEST,
                "digest": digest,
                "platform": {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})},
            }
        )
        layers = []
        if doc is not None:
            body = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicate": doc}).encode()
            fake.blobs[_digest(body)] = body
            layers.append(
                {"digest": _digest(body), "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}
            )
        att = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": layers}).encode()
        notes = {"vnd.docker.reference.digest": digest, "vnd.docker.reference.type": "attestation-manifest"}
        attestations.append(
            {
                "mediaType": MANIFEST,
                "digest": fake.store(f"{repo}:att-{platform.replace('/', '-')}", att, MANIFEST),
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": notes,
            }
        )
    body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries + attestations}).encode()
    return fake.store(ref, body, INDEX)


def test_sbom_reads_each_platform_and_names_the_one_without(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRegistry()
    ref = "localhost:5000/t/app:1"
    _attested(fake, ref, {"linux/amd64": _spdx(("deb", "libc6", "2.41")), "linux/arm/v7": None})
    reg = Registry(policy=RetryPolicy(limits=Retry(), sleep=lambda _: None, echo=lambda _: None), api=fake)
    (found,) = sbom.read(reg, ref, "amd64")
    assert found.platform == "linux/amd64" and found.placement == "index"
    assert [p.name for p in found.packages] == ["libc6"]
    monkeypatch.setattr(options, "registry_api", lambda: fake)
    assert cli.run(["sbom", ref, "--platform", "linux/amd64", "--format", "spdx-json"]) == 0
    assert json.loads(capsys.readouterr().out)["packages"][1]["name"] == "libc6"
    assert cli.run(["sbom", ref]) == 1
    assert "the linux/arm/v7 image" in capsys.readouterr().err
    assert cli.run(["sbom", ref, "--format", "spdx-json", "--platform", "linux/arm64"]) == 2
