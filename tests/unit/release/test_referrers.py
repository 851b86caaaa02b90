"""attest: {placement: referrers}: attestation manifests out of the index, found again as referrers."""

from __future__ import annotations

import json

from multibake.compare import sbom
from multibake.config.schema import Retry
from multibake.registry import attestations
from multibake.registry.client import Registry
from multibake.release import referrers
from multibake.retry import RetryPolicy
from tests.unit.compare.test_sbom import _attested, _spdx
from tests.unit.fakes import FakeRegistry


def _reg(fake: FakeRegistry) -> Registry:
    return Registry(policy=RetryPolicy(limits=Retry(), sleep=lambda _: None, echo=lambda _: None), api=fake)


def test_the_index_keeps_its_platforms_and_the_attestations_become_referrers() -> None:
    fake = FakeRegistry()
    ref = "localhost:5000/t/app:1"
    _attested(fake, ref, {"linux/amd64": _spdx(("deb", "libc6", "2.41")), "linux/arm64": _spdx(("npm", "ms", "2"))})
    reg = _reg(fake)
    staged = reg.manifest(ref)
    assert staged is not None and staged.attestations() == 2
    public = referrers.clean(staged)
    assert public.attestations() == 0 and public.entries() == staged.entries()
    assert referrers.clean(public) is public  # nothing to take out: the same bytes

    assert referrers.detach(reg, "localhost:5000/t/app", staged) == 2
    amd64 = staged.entries()["linux/amd64"]
    listing = fake.held(f"localhost:5000/t/app:{attestations.fallback_tag(amd64)}")
    assert listing is not None
    (entry,) = listing["manifests"]
    assert entry["artifactType"] == referrers.ARTIFACT_TYPE
    referrer = fake.held(f"localhost:5000/t/app@{entry['digest']}")
    assert referrer is not None and referrer["subject"]["digest"] == amd64

    # the public index alone: the SBOM is found among the image's referrers
    fake.store("localhost:5000/t/app:clean", public.body, public.media_type)
    found = {f.platform: f for f in sbom.read(reg, "localhost:5000/t/app:clean")}
    assert found["linux/amd64"].placement == "referrers"
    assert [p.name for p in found["linux/arm64"].packages] == ["ms"]

    # a second detach replaces the image's attestations, other referrers (a signature) stay
    signature = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "5" * 64, "size": 1}
    tag = f"localhost:5000/t/app:{attestations.fallback_tag(amd64)}"
    listing["manifests"].append(signature)
    fake.store(tag, json.dumps(listing).encode(), "application/vnd.oci.image.index.v1+json")
    referrers.detach(reg, "localhost:5000/t/app", staged)
    again = fake.held(tag)
    assert again is not None and len(again["manifests"]) == 2 and signature in again["manifests"]
