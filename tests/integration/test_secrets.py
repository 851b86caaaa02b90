"""Build secrets reach the RUN step that mounts them, and nothing else: no layer, history, label or log.
A signing key and its password are in no output, file or signature either.

The image is pushed to the registry on 127.0.0.1:5000, then every blob it references (config and
layers, decompressed) is read back and searched for the secret, with the bake file, the metadata
file and everything multibake printed.
"""

from __future__ import annotations

import gzip
import json
import urllib.request
import uuid
from pathlib import Path

from tests.helpers import local_context, run_cli
from tests.integration import registry
from tests.integration.test_publish import BUSYBOX_BASE, push
from tests.integration.test_signing import PASSWORD, make_keys, signed_project


def _blob(host: str, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"http://{host}/v2/{repo}/blobs/{digest}", timeout=60) as resp:
        data: bytes = resp.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _image_bytes(ref: str) -> list[bytes]:
    """The config and every layer (decompressed) of each platform image of the index at ``ref``."""
    index = registry.get(ref)
    assert index is not None and index.is_index, ref
    host, repo, _ = registry.split(ref)
    out = []
    for digest in index.platforms().values():
        req = urllib.request.Request(
            f"http://{host}/v2/{repo}/manifests/{digest}", headers={"Accept": ", ".join(registry.MANIFEST_TYPES)}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            manifest = json.loads(resp.read())
        out.append(_blob(host, repo, manifest["config"]["digest"]))
        out += [_blob(host, repo, layer["digest"]) for layer in manifest["layers"]]
    return out


def test_a_secret_reaches_its_run_step_and_nothing_else(stack: None, tmp_path: Path) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    app = tmp_path / "app"
    app.mkdir()
    # the RUN step proves it read the secret (it fails otherwise) and leaves only a hash behind
    (app / "Dockerfile").write_text(
        "FROM base\n"
        "RUN --mount=type=secret,id=token,required=true "
        "test -s /run/secrets/token && sha256sum /run/secrets/token | cut -c1-8 > /token-seen\n"
    )
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: 127.0.0.1:5000/secret-{uuid.uuid4().hex[:8]}\n"
        "platforms: [linux/amd64, linux/arm64]\n"
        f"images:\n  bb:\n    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    args: {BUSYBOX_VERSION: "1.35"}\n'
        "  app:\n    context: app\n    base: bb\n"
        "    secrets: {token: {env: MB_TEST_TOKEN}}\n"
    )
    code, report, err = push(cfg, env={"MB_TEST_TOKEN": secret})
    assert code == 0, err[-3000:]
    app_cell = next(c for c in report["cells"] if c["family"] == "app")
    assert app_cell["status"] == "published"

    printed = json.dumps(report) + err
    assert secret not in printed, "the secret was printed"
    written = [p for p in (tmp_path / ".multibake").rglob("*") if p.is_file()]
    assert any(p.name == "docker-bake.hcl" for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), f"the secret was written to {path.name}"
    blobs = _image_bytes(app_cell["tags"][0])
    assert len(blobs) >= 4, "configs and layers of both platforms"
    assert all(secret.encode() not in blob for blob in blobs), "the secret is in a layer, the history or a label"
    assert any(b"token-seen" in blob for blob in blobs), "the RUN step that read the secret ran"


def test_the_signing_key_and_its_password_are_in_no_log_file_or_message(
    stack: None, cosign_bin: str, tmp_path: Path
) -> None:
    """A signed release with --debug, the key given as env://: neither the key nor its password is printed or
    written (bake file, metadata, journal, JSON, signatures), nor in the message of a release the password fails."""
    keys = make_keys(cosign_bin, tmp_path / "keys")
    pem = (keys.folder / "cosign.key").read_text()
    body = "".join(ln for ln in pem.splitlines() if "-----" not in ln)  # the key's encrypted bytes
    cfg = signed_project(tmp_path, keys)
    cfg.write_text(cfg.read_text().replace("key: cosign.key", "key: env://MB_TEST_COSIGN_KEY\n    pub: cosign.pub"))
    (cfg.parent / "cosign.key").unlink()
    reg = f"127.0.0.1:5000/secret-sign-{uuid.uuid4().hex[:8]}"
    env = {**keys.env(), "MB_TEST_COSIGN_KEY": pem}
    argv = ("--progress", "plain", "-c", str(cfg), "--registry", reg)
    built = run_cli("--debug", "build", "--push", "--json", *argv, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert any(c["signatures"] for c in json.loads(built.stdout)["cells"])
    checked = run_cli("--debug", "verify", "--json", "-c", str(cfg), "--registry", reg, env=env)
    assert checked.returncode == 0, checked.stderr[-2000:]
    fresh = ("--progress", "plain", "-c", str(cfg), "--registry", f"{reg}-refused")  # new images: signing is tried
    refused = run_cli("--debug", "build", "--push", *fresh, env={**env, "COSIGN_PASSWORD": PASSWORD + "-wrong"})
    assert refused.returncode == 1
    for proc in (built, checked, refused):
        for secret in (PASSWORD, body[:40], body[-40:]):
            assert secret not in proc.stdout and secret not in proc.stderr, "printed"
    written = [p for p in (cfg.parent / ".multibake").rglob("*") if p.is_file()]
    assert any(p.name == "docker-bake.hcl" for p in written) and any(p.name == "last.json" for p in written)
    for path in written:
        text = path.read_text(errors="replace")
        assert PASSWORD not in text and body[:40] not in text, f"written to {path.name}"
    doc = json.loads(built.stdout)
    for cell in doc["cells"]:
        for signed in cell["signatures"]:
            sig = registry.get(signed["signature"])
            assert sig is not None and PASSWORD not in json.dumps(sig.doc) and body[:40] not in json.dumps(sig.doc)
