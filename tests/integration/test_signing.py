"""Signed releases on the real stack: cosign with a key pair the test makes, no transparency log.

A release of the fast offline sample signs every index and platform image before a tag moves; cosign
itself (not only multibake) accepts them; ``multibake verify`` fails after a tag moved to an unsigned
image, after a signature was deleted, and with the wrong public key; a wrong password or a missing key
moves no tag; a registry failing 20 % of cosign's requests ends signed and complete, or with no tag
moved; an unchanged release writes no signature; the htpasswd + TLS registry takes signatures too.
Runs on whichever builder $BUILDX_BUILDER names (docker driver, or ``multibake-remote``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from multibake.registry.auth import PASSWORD_ENV, USER_ENV
from tests.helpers import local_context, run_cli
from tests.integration import registry
from tests.integration.authregistry import AuthRegistry
from tests.integration.faultproxy import Chaos, FaultProxy
from tests.integration.reliability import ENV, Release, fast_project, namespace, upstream

PASSWORD = f"pw-{uuid.uuid4().hex}"
UPSTREAM = "127.0.0.1:5000"
PROXY = "127.0.0.1:5001"
RETRY = "attempts: 6, initial_delay: 0.5, max_delay: 2, timeout: 10"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Keys:
    cosign: str
    folder: Path

    @property
    def pub(self) -> Path:
        return self.folder / "cosign.pub"

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        return {**ENV, "COSIGN_PASSWORD": password, "MULTIBAKE_COSIGN": self.cosign}


def make_keys(cosign: str, folder: Path) -> Keys:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [cosign, "generate-key-pair"],
        cwd=folder,
        env={**os.environ, "COSIGN_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return Keys(cosign=cosign, folder=folder)


@pytest.fixture
def keys(cosign_bin: str, tmp_path: Path) -> Keys:
    return make_keys(cosign_bin, tmp_path / "keys")


def signed_project(tmp_path: Path, keys: Keys, extra: str = "") -> Path:
    """The fast sample tier, signed with ``keys`` (the key beside platforms.yaml, as a user keeps it)."""
    cfg = fast_project(tmp_path, RETRY)
    shutil.copy(keys.folder / "cosign.key", cfg.parent / "cosign.key")
    shutil.copy(keys.pub, cfg.parent / "cosign.pub")
    text = cfg.read_text().split("sign:\n", 1)[0]
    cfg.write_text(text + f"sign:\n  cosign:\n    key: cosign.key\n{extra}")
    return cfg


def multibake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=1500)


def release(cfg: Path, reg: str, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    proc = multibake("build", "--push", "--json", "--progress", "plain", "-c", str(cfg), "--registry", reg, env=env)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        return proc.returncode, {}, proc.stdout[-2000:] + proc.stderr


def plan_of(cfg: Path, reg: str) -> dict[str, Any]:
    proc = multibake("plan", "--json", "-c", str(cfg), "--registry", reg, env=ENV)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def public_refs(plan: dict[str, Any]) -> list[str]:
    return [
        upstream(ref)
        for cell in plan["cells"]
        for ref in [*cell["tags"], *(r for refs in cell["platform_tags"].values() for r in refs)]
    ]


def served(plan: dict[str, Any]) -> dict[str, str]:
    """image (repo@digest) → the first public tag serving it: each index and each platform image in it."""
    out: dict[str, str] = {}
    for ref in public_refs(plan):
        held = registry.get(ref)
        if held is None:
            continue
        repo = ref.rsplit(":", 1)[0]
        for digest in [held.digest, *held.platforms().values()]:
            out.setdefault(f"{repo}@{digest}", ref)
    return out


def signature(image: str) -> registry.Manifest | None:
    repo, _, digest = image.partition("@")
    return registry.get(f"{repo}:{digest.replace(':', '-')}.sig")


def cosign_verify(keys: Keys, ref: str, pub: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [keys.cosign, "verify", "--key", str(pub or keys.pub), "--insecure-ignore-tlog=true"]
    return subprocess.run([*argv, "--allow-http-registry", ref], capture_output=True, text=True, check=False)


def put_manifest(ref: str, doc: dict[str, Any], media_type: str) -> None:
    host, repo, tag = registry.split(ref)
    body = json.dumps(doc).encode()
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}", data=body, method="PUT", headers={"Content-Type": media_type}
    )
    with urllib.request.urlopen(req, timeout=30):
        pass


def delete_manifest(ref: str, digest: str) -> None:
    host, repo, _ = registry.split(ref)
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(req, timeout=30):
        pass


def verify(cfg: Path, reg: str, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    proc = multibake("verify", "--json", "-c", str(cfg), "--registry", reg, env=env)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def test_a_signed_release_signs_every_image_and_verify_proves_it(
    stack: str, keys: Keys, tmp_path: Path, measured: Callable[[str], None]
) -> None:
    cfg = signed_project(tmp_path, keys)
    reg = namespace(UPSTREAM, "signed")
    code, doc, err = release(cfg, reg, keys.env())
    assert code == 0, err[-4000:]
    plan = plan_of(cfg, reg)
    images = served(plan)
    assert len(images) == sum(1 + len(c["platforms"]) for c in plan["cells"])
    unsigned = [image for image in images if signature(image) is None]
    assert unsigned == [], unsigned[:5]
    assert sum(len(c["signatures"]) for c in doc["cells"]) == len(images)
    assert all(s["signature"].endswith(".sig") for c in doc["cells"] for s in c["signatures"])
    assert PASSWORD not in err and PASSWORD not in json.dumps(doc)
    # cosign itself accepts the index and an arm/v7 per-platform tag
    app = next(c for c in plan["cells"] if c["family"] == "app")
    for ref in (app["tags"][0], app["platform_tags"]["linux/arm/v7"][0]):
        checked = cosign_verify(keys, ref)
        assert checked.returncode == 0, f"{ref}: {checked.stderr[-1500:]}"
    code, report, err = verify(cfg, reg, keys.env())
    assert code == 0, err[-2000:]
    states = {s["state"] for tag in report["tags"] for s in tag["signatures"]}
    assert states == {"signed"}
    # a second, unchanged release writes no signature and moves no tag
    before = {image: signature(image) for image in images}
    code, doc, err = release(cfg, reg, keys.env())
    assert code == 0, err[-3000:]
    assert {c["status"] for c in doc["cells"]} == {"unchanged"} and not any(c["signatures"] for c in doc["cells"])
    assert {image: signature(image) for image in images} == before
    measured(f"signing: {len(images)} images signed in one release of {len(plan['cells'])} cells")
    _verify_fails(cfg, reg, keys, tmp_path, app)


def _verify_fails(cfg: Path, reg: str, keys: Keys, tmp_path: Path, app: dict[str, Any]) -> None:
    """verify fails with the wrong public key, after a signature is deleted, after a tag moved to an unsigned image."""
    other = make_keys(keys.cosign, tmp_path / "other")
    shutil.copy(other.pub, cfg.parent / "other.pub")
    text = cfg.read_text()
    cfg.write_text(text.replace("    key: cosign.key\n", "    key: cosign.key\n    pub: other.pub\n"))
    code, report, err = verify(cfg, reg, keys.env())
    assert code == 1 and "signature invalid" in err, err[-2000:]
    assert {s["state"] for tag in report["tags"] for s in tag["signatures"]} == {"invalid"}
    cfg.write_text(text)
    # the signature of the arm/v7 image of one app cell, deleted
    arm_tag = upstream(app["platform_tags"]["linux/arm/v7"][0])
    arm = registry.get(arm_tag)
    assert arm is not None
    sig = signature(f"{arm_tag.rsplit(':', 1)[0]}@{arm.digest}")
    assert sig is not None
    delete_manifest(arm_tag, sig.digest)
    code, report, err = verify(cfg, reg, keys.env())
    assert code == 1
    assert f"{app['platform_tags']['linux/arm/v7'][0]}: linux/arm/v7 {arm.digest}: signature missing" in err, err
    bad = [t for t in report["tags"] if not t["ok"]]
    assert {t["ref"] for t in bad} >= {app["tags"][0], app["platform_tags"]["linux/arm/v7"][0]}
    assert cosign_verify(keys, arm_tag).returncode != 0, "cosign agrees: no signature"
    # a public tag moved to an image nobody signed: a copy of the index with one more annotation
    index_tag = upstream(app["tags"][-1])
    index = registry.get(index_tag)
    assert index is not None
    doc = {**index.doc, "annotations": {**index.doc.get("annotations", {}), "moved.by": "hand"}}
    put_manifest(index_tag, doc, index.media_type)
    moved = registry.get(index_tag)
    assert moved is not None
    code, report, err = verify(cfg, reg, keys.env())
    assert code == 1
    assert f"{app['tags'][-1]}: index {moved.digest}: signature missing" in err, err


@pytest.mark.parametrize("fault", ["wrong password", "missing key"])
def test_a_wrong_password_or_a_missing_key_moves_no_public_tag(
    stack: str, keys: Keys, tmp_path: Path, fault: str
) -> None:
    cfg = signed_project(tmp_path, keys)
    reg = namespace(UPSTREAM, "unsigned")
    env = keys.env("not-the-password" if fault == "wrong password" else PASSWORD)
    if fault == "missing key":
        (cfg.parent / "cosign.key").unlink()
    code, _, err = release(cfg, reg, env)
    plan = plan_of(cfg, reg)
    assert [ref for ref in public_refs(plan) if registry.get(ref) is not None] == []
    if fault == "missing key":
        assert code == 2, err[-2000:]
        assert "platforms.yaml:" in err and "sign.cosign.key: no such key file cosign.key" in err
        return
    assert code == 1, err[-3000:]
    lines = [ln for ln in err.splitlines() if "signing 127.0.0.1:5000/" in ln and "decrypt" in ln]
    assert lines, err[-3000:]
    assert "@sha256:" in lines[0]
    assert PASSWORD not in err and "not-the-password" not in err


def test_a_registry_failing_a_fifth_of_cosigns_requests_ends_signed_or_moves_nothing(
    stack: str, keys: Keys, tmp_path: Path, measured: Callable[[str], None]
) -> None:
    cfg = signed_project(tmp_path, keys)
    reg = namespace(PROXY, "sign-flaky")
    faults = ("500", "502", "503", "429", "reset")
    with FaultProxy(chaos=Chaos(rate=0.2, seed=5, faults=faults, agent="cosign/")) as proxy:
        code, _, err = release(cfg, reg, keys.env())
    plan = plan_of(cfg, reg)
    refs = public_refs(plan)
    present = [ref for ref in refs if registry.get(ref) is not None]
    unsigned = [(image, ref) for image, ref in served(plan).items() if signature(image) is None]
    assert unsigned == [], f"public tags on unsigned images: {unsigned[:5]}"
    if code == 0:
        assert present == refs
        code, _, verr = verify(cfg, upstream(reg), keys.env())
        assert code == 0, verr[-2000:]
    else:
        assert present == [], "a failed signed release moves no tag"
    injected = proxy.counts()
    assert sum(injected.values()) >= 3, injected
    retried = sum("transient failure" in ln and "signing" in ln for ln in err.splitlines())
    measured(
        f"signing through a flaky registry: exit {code}, {sum(injected.values())} faults {injected}, {retried} retries"
    )


def test_the_htpasswd_tls_registry_takes_signatures(auth_registry: AuthRegistry, keys: Keys, tmp_path: Path) -> None:
    reg = auth_registry
    cfg = tmp_path / "platforms.yaml"
    shutil.copy(keys.folder / "cosign.key", tmp_path / "cosign.key")
    shutil.copy(keys.pub, tmp_path / "cosign.pub")
    cfg.write_text(
        f"registry: {reg.host}/signed-{uuid.uuid4().hex[:8]}\n"
        "platforms: [linux/amd64, linux/arm/v7]\n"
        "sign: {cosign: {key: cosign.key}}\n"
        f"images:\n  bb:\n    context: {local_context(tmp_path, ROOT / 'samples' / 'offline' / 'busybox-base')}\n"
        '    args: {BUSYBOX_VERSION: "1.35"}\n'
    )
    env = {**keys.env(), USER_ENV: reg.user, PASSWORD_ENV: reg.password}
    built = multibake("build", "--push", "--json", "--progress", "plain", "-c", str(cfg), env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert sum(len(c["signatures"]) for c in json.loads(built.stdout)["cells"]) == 3
    checked = multibake("verify", "--json", "-c", str(cfg), env=env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    states = {s["state"] for t in json.loads(checked.stdout)["tags"] for s in t["signatures"]}
    assert states == {"signed"}
    for proc in (built, checked):
        assert reg.password not in proc.stdout + proc.stderr and PASSWORD not in proc.stdout + proc.stderr


def _cosign_writes(method: str, path: str, agent: str) -> bool:
    """cosign writing a signature: its PUT of a manifest (the sha256-<hex>.sig tag)."""
    return method == "PUT" and "/manifests/" in path and agent.startswith("cosign/")


def test_a_release_killed_while_it_signs_moves_no_tag_and_a_rerun_ends_signed(
    stack: str, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in keys.env().items():
        monkeypatch.setenv(name, value)
    cfg = signed_project(tmp_path, keys)
    reg = namespace(PROXY, "sign-kill")
    plan = plan_of(cfg, reg)
    with FaultProxy(hold=_cosign_writes, hold_at=2) as proxy:
        killed = Release(cfg, reg)
        deadline = time.monotonic() + 600
        while not proxy.held.wait(0.2):
            assert killed.proc.poll() is None and time.monotonic() < deadline, killed.stderr()[-3000:]
        killed.signal_group(signal.SIGKILL)  # the CI job cancelled in the middle of signing
        assert killed.finish(timeout=60) == -signal.SIGKILL
        proxy.hold = None
        proxy.unhold.set()
        assert [ref for ref in public_refs(plan) if registry.get(ref) is not None] == [], "no tag moved"
        rerun = Release(cfg, reg)
        assert rerun.finish() == 0, rerun.stderr()[-3000:]
    unsigned = [image for image in served(plan) if signature(image) is None]
    assert unsigned == [] and all(registry.get(ref) is not None for ref in public_refs(plan))
