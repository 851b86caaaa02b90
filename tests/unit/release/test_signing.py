"""Signing inside the release transaction, with a fake cosign that writes `.sig` tags into the fake registry."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from multibake.cli import report
from multibake.errors import UsageError
from multibake.kinds import Status
from multibake.release import pipeline as release
from multibake.release.signing import is_signature_tag, signature_ref
from multibake.release.tools import Tools
from tests.unit.fakes import FakeRegistry
from tests.unit.release.test_release import (
    APP1,
    BB,
    CONFIG,
    REG,
    Stack,
    _public_tags,
    stack,  # noqa: F401  # the fixture `signed` builds on
)

SIGNED_CONFIG = CONFIG.replace("images:\n", "sign: {cosign: {key: cosign.key}}\nimages:\n", 1)


@dataclass
class FakeCosign:
    """cosign sign/verify/version against the fake registry: a signature is a `.sig` tag."""

    registry: FakeRegistry
    calls: list[list[str]] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    public_tags_at_sign: list[int] = field(default_factory=list)  # public tags that existed when each run signed
    fail: list[str] = field(default_factory=list)  # stderr of the next sign runs, in order
    version: str = "v2.6.5"
    sign_first_then_fail: bool = False

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        self.envs.append(dict(env))
        if argv[1] == "version":
            return subprocess.CompletedProcess(argv, 0, json.dumps({"gitVersion": self.version}), "")
        images = [a for a in argv if "@sha256:" in a]
        if argv[1] == "sign":
            public = [tag for _, tag in _public_tags(self.registry) if not is_signature_tag(tag)]
            self.public_tags_at_sign.append(len(public))
            if self.fail:
                if self.sign_first_then_fail:  # cosign signs one image after the other, then meets the failure
                    self.registry.store(signature_ref(images[0]), b"{}", "application/json")
                return subprocess.CompletedProcess(argv, 1, "", self.fail.pop(0))
            for image in images:
                self.registry.store(signature_ref(image), json.dumps({"signs": image}).encode(), "application/json")
            return subprocess.CompletedProcess(argv, 0, "", "")
        assert argv[1] == "verify"
        held = self.registry.held(signature_ref(images[0]))
        if held is None:
            return subprocess.CompletedProcess(argv, 10, "", "Error: no signatures found\n")
        return subprocess.CompletedProcess(argv, 0, "[]", "")

    @property
    def signed(self) -> list[str]:
        return [a for c in self.calls if c[1] == "sign" for a in c if "@sha256:" in a]


@pytest.fixture
def signed(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stack, FakeCosign]]:  # noqa: F811
    monkeypatch.setenv("COSIGN_PASSWORD", "s3cret-pw")
    stack.config.write_text(SIGNED_CONFIG.lstrip("\n"))
    (stack.config.parent / "cosign.key").write_text("KEY")
    (stack.config.parent / "cosign.pub").write_text("PUB")
    yield stack, FakeCosign(stack.registry)


def _tools(st: Stack, fake: FakeCosign) -> Tools:
    return replace(st.tools(), cosign=fake)


def _build(st: Stack, fake: FakeCosign, **options: object) -> release.Built:
    from multibake.release.resolve import BuildOptions

    opts = BuildOptions(config=st.config, push=True, result_dir=st.config.parent / "shards")
    return release.build(replace(opts, **options), _tools(st, fake))  # type: ignore[arg-type]


def test_every_index_and_platform_image_is_signed_before_any_public_tag_moves(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    built = _build(st, fake)
    assert built.ok and built.report is not None
    assert fake.public_tags_at_sign and set(fake.public_tags_at_sign) == {0}, "no public tag before signing"
    for cell in built.report.cells:
        assert cell.digest is not None
        image = f"{REG}/{cell.family}@{cell.digest}"
        images = [i for i, _ in cell.signed]
        assert images[0] == image, "the index first"
        assert set(images[1:]) == {f"{REG}/{cell.family}@{d}" for d in cell.platform_digests.values()}
        assert all(ref == signature_ref(i) for i, ref in cell.signed)
    sign = next(c for c in fake.calls if c[1] == "sign")
    assert sign[sign.index("--key") + 1] == str(st.config.parent / "cosign.key")
    assert "--tlog-upload=false" in sign and "--allow-http-registry" in sign
    assert all("s3cret" not in a for c in fake.calls for a in c), "the password only in the environment"
    assert fake.envs[-1]["COSIGN_PASSWORD"] == "s3cret-pw"
    doc = report.build_json(built.report)
    assert sum(len(c["signatures"]) for c in doc["cells"]) == 3 * 4
    first = doc["cells"][0]["signatures"][0]
    assert first["signature"].endswith(".sig") and first["image"] == built.report.cells[0].signed[0][0]
    assert any("12 image(s) signed with cosign before their tags moved" in line for line in st.said)


def test_annotated_indexes_are_signed_as_the_tags_serve_them(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    text = st.config.read_text().replace('args: {VERSION: "{version}"}', 'annotations: {a.b: "v{version}"}')
    st.config.write_text(text)
    built = _build(st, fake)
    assert built.ok and built.report is not None
    app = next(c for c in built.report.cells if c.target == APP1)
    held = st.registry.held(f"{REG}/app:1.0")
    assert held is not None and held["annotations"] == {"a.b": "v1.0"}
    assert app.signed[0][0] == f"{REG}/app@{app.digest}"


def test_a_signing_failure_moves_no_public_tag_and_names_the_image(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    fake.fail = ["Error: signing [x]: getting signer: reading key: decrypt: encrypted: decryption failed\n"] * 3
    built = _build(st, fake)
    assert not built.ok and built.report is not None
    assert [tag for _, tag in _public_tags(st.registry) if not is_signature_tag(tag)] == []
    assert {c.status for c in built.report.cells} == {Status.STAGED}
    errors = [c.error or "" for c in built.report.cells]
    assert any("signing 127.0.0.1:5000/t/" in e and "@sha256:" in e and "decryption failed" in e for e in errors)
    assert all("s3cret" not in e for e in errors)


def test_a_transient_registry_failure_while_signing_is_retried(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    fake.fail = ["Error: PUT http://127.0.0.1:5000/v2/t/bb/manifests/sha256-1.sig: unexpected status code 503\n"]
    built = _build(st, fake)
    assert built.ok
    assert any("transient failure" in line and "signing" in line for line in st.echoed)


def test_a_retry_signs_only_the_images_still_unsigned(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    fake.sign_first_then_fail = True
    fake.fail = ["Error: PUT http://127.0.0.1:5000/v2/t/bb/manifests/sha256-1.sig: unexpected status code 502\n"]
    assert _build(st, fake).ok
    runs = [[a for a in c if "@sha256:" in a] for c in fake.calls if c[1] == "sign"]
    failed, retried = next((r, n) for r in runs for n in runs if r != n and r[1:] == n)
    assert retried == failed[1:], "the image signed before the failure is not signed again"


def test_an_unchanged_release_signs_nothing(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    assert _build(st, fake).ok
    before = len(fake.signed)
    again = _build(st, fake)
    assert again.ok and again.report is not None
    assert {c.status for c in again.report.cells} == {Status.UNCHANGED}
    assert len(fake.signed) == before, "no signature written"


def test_a_signed_release_reads_each_public_tag_once_before_moving_it_and_once_to_verify(
    signed: tuple[Stack, FakeCosign],
) -> None:
    """Staged indexes and public tags are read in one round, and signing uses that round's reads."""
    st, fake = signed
    assert _build(st, fake).ok
    reads = Counter(ref for ref in st.registry.manifest_reads if ref in (f"{REG}/app:1.0", f"{REG}/app:1.0-armv7"))
    assert reads == {f"{REG}/app:1.0": 2, f"{REG}/app:1.0-armv7": 2}


def test_signing_turned_on_for_an_unchanged_release_signs_what_the_tags_serve(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    assert _build(st, fake, sign=False).ok
    assert fake.signed == []
    again = _build(st, fake)
    assert again.ok and again.report is not None
    assert {c.status for c in again.report.cells} == {Status.UNCHANGED}
    assert len(fake.signed) == 12
    assert release.verify(st.config, None, (), _tools(st, fake)).ok


def test_no_sign_and_sign_on_the_command_line(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    st.config.write_text(CONFIG.lstrip("\n"))
    with pytest.raises(UsageError, match="--sign: family 'bb' has no sign:"):
        _build(st, fake, sign=True)
    assert st.docker_made == 0
    assert _build(st, fake).ok and fake.calls == []


def test_a_missing_key_file_is_refused_before_anything_is_built(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    (st.config.parent / "cosign.key").unlink()
    with pytest.raises(UsageError, match=r"platforms.yaml:\d+:\d+: sign.cosign.key: no such key file cosign.key"):
        _build(st, fake)
    assert st.docker_made == 0 and _public_tags(st.registry) == {}


def test_an_unset_env_key_or_an_old_cosign_is_refused_before_anything_is_built(
    signed: tuple[Stack, FakeCosign],
) -> None:
    st, fake = signed
    st.config.write_text(SIGNED_CONFIG.replace("cosign.key", "env://NO_SUCH_KEY_VAR").lstrip("\n"))
    with pytest.raises(UsageError, match=r"\$NO_SUCH_KEY_VAR is unset"):
        _build(st, fake)
    st.config.write_text(SIGNED_CONFIG.lstrip("\n"))
    fake.version = "v2.2.4"
    with pytest.raises(UsageError, match=r"needs cosign >= 2\.6\.0"):
        _build(st, fake)
    assert st.docker_made == 0


def test_verify_names_the_tag_platform_and_digest_of_a_missing_signature(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    built = _build(st, fake)
    assert built.ok and built.report is not None
    tools = _tools(st, fake)
    checked = release.verify(st.config, None, (), tools)
    assert checked.ok and checked.checks is not None
    index = next(c for c in checked.checks if c.ref == f"{REG}/app:1.0")
    assert {state for _, _, state in index.signatures} == {"signed"} and len(index.signatures) == 4
    arm = built.report.cells[1].platform_digests["linux/arm/v7"]
    del st.registry.manifests[(f"{REG}/app", f"{arm.replace(':', '-')}.sig")]
    checked = release.verify(st.config, None, (), tools)
    assert not checked.ok and checked.checks is not None
    bad = {c.ref: c.problem for c in checked.checks if not c.ok}
    assert bad[f"{REG}/app:1.0-armv7"] == f"linux/arm/v7 {arm}: signature missing"
    assert f"linux/arm/v7 {arm}: signature missing" in (bad[f"{REG}/app:1.0"] or "")
    doc = report.verify_json(list(checked.checks))
    tag = next(t for t in doc["tags"] if t["ref"] == f"{REG}/app:1.0-armv7")
    assert tag["signatures"] == [{"image": "linux/arm/v7", "digest": arm, "state": "missing"}]
    assert any(f"app:1.0-armv7: linux/arm/v7 {arm}" in line for line in st.said)


def test_signature_tags_are_never_release_tags() -> None:
    assert is_signature_tag("sha256-" + "a" * 64 + ".sig")
    assert is_signature_tag("sha256-" + "a" * 64)  # cosign v3's referrers fallback
    assert not is_signature_tag("3.20-armv7") and not is_signature_tag("sha256-abc.sig")
    assert signature_ref(f"{REG}/app@sha256:{'b' * 64}") == f"{REG}/app:sha256-{'b' * 64}.sig"


def test_a_key_file_beside_its_pub_verifies_with_the_pub(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    assert _build(st, fake).ok
    assert release.verify(st.config, None, (BB,), _tools(st, fake)).ok
    verify = next(c for c in fake.calls if c[1] == "verify")
    assert verify[verify.index("--key") + 1] == str(Path(st.config.parent / "cosign.pub"))


def test_diff_notes_a_signature_that_appeared_or_vanished() -> None:
    from multibake.compare import diff as compare
    from multibake.compare.changes import signature_notes
    from multibake.registry.client import Registry
    from multibake.retry import RetryPolicy

    fake = FakeRegistry()
    repo = f"{REG}/app"
    old = fake.publish(f"{repo}:old", ["linux/amd64"])
    new = fake.publish(f"{repo}:new", ["linux/arm/v7"])
    fake.store(signature_ref(f"{repo}@{new}"), b"{}", "application/json")
    reg = Registry(policy=RetryPolicy(), api=fake)
    pairs = [
        compare.Pair(ref=f"{repo}:1", old=f"{repo}@{old}", new=f"{repo}@{new}"),
        compare.Pair(ref=f"{repo}:2", old=f"{repo}@{new}", new=f"{repo}@{old}"),
        compare.Pair(ref=f"{repo}:3", old=f"{repo}@{new}", new=f"{repo}@{new}"),
    ]
    facts = compare.read_tags(reg, [ref for p in pairs for ref in (p.old, p.new) if ref])
    assert signature_notes(reg, pairs, facts) == [
        f"{repo}:1: a signature appeared (its cosign .sig tag)",
        f"{repo}:2: a signature vanished (its cosign .sig tag)",
    ]


def test_shards_sign_nothing_and_publish_from_signs_before_tags_move(signed: tuple[Stack, FakeCosign]) -> None:
    from multibake.release import shards

    st, fake = signed
    lock = st.config.parent / "lock.json"
    resolved = shards.resolve(st.config, None, None, check_files=True)
    shards.write_lock(shards.lock_file(resolved.plan, resolved.meta, "platforms.yaml"), lock)
    for platform in ("linux/amd64", "linux/arm64", "linux/arm/v7"):
        assert _build(st, fake, shard=f"platform={platform}", lock=lock).ok
    assert fake.signed == [], "a shard only stages"
    checked = release.publish_shards(st.config, None, lock, (st.config.parent / "shards",), _tools(st, fake))
    assert checked.ok and checked.checks
    assert len(fake.signed) == 12 and set(fake.public_tags_at_sign) == {0}


def test_verify_needs_the_public_key_only(signed: tuple[Stack, FakeCosign], monkeypatch: pytest.MonkeyPatch) -> None:
    st, fake = signed
    assert _build(st, fake).ok
    (st.config.parent / "cosign.key").unlink()  # a verify job holds the public key alone
    assert release.verify(st.config, None, (), _tools(st, fake)).ok
    st.config.write_text(SIGNED_CONFIG.replace("key: cosign.key", "key: env://CI_KEY, pub: cosign.pub").lstrip("\n"))
    monkeypatch.delenv("CI_KEY", raising=False)
    assert release.verify(st.config, None, (), _tools(st, fake)).ok
    (st.config.parent / "cosign.pub").unlink()
    with pytest.raises(UsageError, match=r"sign.cosign.pub: no such key file cosign.pub"):
        release.verify(st.config, None, (), _tools(st, fake))


def test_sign_without_push_is_refused(signed: tuple[Stack, FakeCosign]) -> None:
    st, fake = signed
    with pytest.raises(UsageError, match="--sign signs what a release publishes: add --push"):
        _build(st, fake, push=False, sign=True)
    assert st.docker_made == 0


def test_the_password_is_not_in_the_repr_of_a_signing() -> None:
    from multibake.release.signing import Signing
    from multibake.retry import RetryPolicy

    signing = Signing(signers={}, policy=RetryPolicy(), environ={"COSIGN_PASSWORD": "hunter2-pass"})
    assert "hunter2" not in repr(signing)
