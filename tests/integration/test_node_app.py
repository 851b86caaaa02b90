"""The offline node-app sample: one Node.js service in a Debian-slim-like and a distroless-like runtime.

Built by `multibake build --push` from samples/node-app/platforms.yaml (Debian rootfs base → builder
with Debian's nodejs, npm from the npm registry and `npm ci` → two runtimes) for linux/amd64,
linux/arm64 and linux/arm/v7, the foreign ones under QEMU. Every assertion reads the registry or a
running container:
- every variant answers an HTTP request on each platform (a second container in the server's network
  namespace makes the request with the image's own node, so no port is published on the host);
- the distroless-like variant holds node, shared libraries, the app and /etc/passwd, and no shell;
- per variant and platform, the compressed size and layer count read from the registry are printed
  (the README's variant table) and are ordered: distroless-like < slim-like.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli
from tests.integration import registry
from tests.integration.test_build import build_json, namespace, plan_json
from tests.integration.test_real_tier import docker

ROOT = Path(__file__).resolve().parents[2]
NODE_APP = ROOT / "samples" / "node-app" / "platforms.yaml"
ROOTFS = ROOT / "samples" / "debian" / "debian-base"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
NODE_ARCH = {"linux/amd64": "x64", "linux/arm64": "arm64", "linux/arm/v7": "arm"}
VARIANTS = ("slim", "distroless")
PORT = 8080
SHELLS = {"sh", "bash", "dash", "ash", "busybox"}

# Run in the server's network namespace: GET / until the server answers (node starts slowly under
# QEMU), then print the status and the body. No template literals: this text goes through no shell.
CLIENT = """
const deadline = Date.now() + 120000;
const url = "http://127.0.0.1:PORT/";
(async () => {
  for (;;) {
    try {
      const res = await fetch(url);
      console.log(JSON.stringify({ status: res.status, body: await res.text() }));
      return;
    } catch (err) {
      if (Date.now() > deadline) {
        console.error(String(err && err.cause ? err.cause : err));
        process.exit(1);
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
})();
""".replace("PORT", str(PORT))


@pytest.fixture(scope="module")
def node_app_release(stack: None, sbom_generator: str) -> dict[str, Any]:
    missing = [a for a in ("amd64", "arm64", "armv7") if not (ROOTFS / f"rootfs-trixie-{a}.tar").exists()]
    if missing:
        pytest.fail(f"no trixie rootfs for {missing}: run scripts/prepare-sample.sh real")
    reg = namespace("node-app")
    t0 = time.monotonic()
    # with an SBOM per platform image (the scanner image of scripts/sbom-scanner.sh)
    attest = f"sbom=generator={sbom_generator}"
    code, report, err = build_json("-c", str(NODE_APP), "--registry", reg, "--push", "--attest", attest)
    print(f"\nnode-app sample: built in {time.monotonic() - t0:.1f} s")
    assert code == 0, err[-5000:]
    plan = plan_json("-c", str(NODE_APP), "--registry", reg)
    variants = {c["axes"]["runtime"]: c for c in plan["cells"] if c["family"] == "node-app"}
    assert sorted(variants) == sorted(VARIANTS)
    return {"report": report, "plan": plan, "variants": variants}


def _get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=120) as resp:
        body: bytes = resp.read()
    return body


def _platform_manifest(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
    """(host, repository, manifest) of ``platform``'s image in the index ``ref`` points at."""
    held = registry.get(ref)
    assert held is not None and held.is_index, ref
    digest = held.platforms()[platform]
    host, repo, _ = registry.split(ref)
    doc = json.loads(_get(f"http://{host}/v2/{repo}/manifests/{digest}", ", ".join(registry.MANIFEST_TYPES)))
    manifest: dict[str, Any] = doc
    return host, repo, manifest


def _layer_members(ref: str, platform: str) -> list[tarfile.TarInfo]:
    """Every entry of every layer of ``platform``'s image (layers are gzip tarballs, BuildKit's default)."""
    host, repo, manifest = _platform_manifest(ref, platform)
    members: list[tarfile.TarInfo] = []
    for layer in manifest["layers"]:
        blob = _get(f"http://{host}/v2/{repo}/blobs/{layer['digest']}")
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members.extend(tar.getmembers())
    return members


def test_every_tag_is_an_index_of_the_three_platforms(node_app_release: dict[str, Any]) -> None:
    for cell in node_app_release["plan"]["cells"]:
        for ref in cell["tags"]:
            held = registry.get(ref)
            assert held is not None and held.is_index, ref
            assert sorted(held.platforms()) == sorted(PLATFORMS), ref


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_answers_http_on_every_platform(
    node_app_release: dict[str, Any], variant: str, platform: str
) -> None:
    ref = node_app_release["variants"][variant]["tags"][0]
    started = docker("run", "-d", "--pull", "always", "--platform", platform, ref)
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        # the image's own node (its ENTRYPOINT) as the client, in the server's network namespace
        client = docker(
            "run", "--rm", "--platform", platform, "--network", f"container:{cid}", ref, "-e", CLIENT, timeout=300
        )
        logs = docker("logs", cid)
        assert client.returncode == 0, f"{client.stderr}\nserver log:\n{logs.stdout}{logs.stderr}"
        answer = json.loads(client.stdout.strip().splitlines()[-1])
        assert answer["status"] == 200, answer
        body = json.loads(answer["body"])
        assert body["service"] == "node-app"
        assert body["variant"] == variant
        assert body["arch"] == NODE_ARCH[platform], (variant, platform, body)
        assert "node-app listening on :8080" in logs.stdout
        assert docker("stop", cid, timeout=120).returncode == 0
        assert docker("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "0"
    finally:
        docker("rm", "-f", cid)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_service_runs_as_a_non_root_user(node_app_release: dict[str, Any], variant: str) -> None:
    ref = node_app_release["variants"][variant]["tags"][0]
    out = docker("run", "--rm", "--pull", "always", "--platform", "linux/amd64", ref, "-p", "process.getuid()")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "65532"


def test_distroless_like_has_no_shell(node_app_release: dict[str, Any]) -> None:
    ref = node_app_release["variants"]["distroless"]["tags"][0]
    run = docker(
        "run", "--rm", "--pull", "always", "--platform", "linux/amd64", "--entrypoint", "/bin/sh", ref, "-c", "true"
    )
    assert run.returncode != 0, run.stdout
    assert "no such file or directory" in run.stderr.lower(), run.stderr
    slim = node_app_release["variants"]["slim"]["tags"][0]
    has_sh = docker(
        "run", "--rm", "--pull", "always", "--platform", "linux/amd64", "--entrypoint", "/bin/sh", slim, "-c", "true"
    )
    assert has_sh.returncode == 0, has_sh.stderr


@pytest.mark.parametrize("platform", PLATFORMS)
def test_distroless_like_holds_node_its_libraries_the_app_and_passwd_only(
    node_app_release: dict[str, Any], platform: str
) -> None:
    ref = node_app_release["variants"]["distroless"]["tags"][0]
    members = _layer_members(ref, platform)
    names = {m.name.removeprefix("./").rstrip("/") for m in members} - {"", "."}
    shells = sorted(n for n in names if n.rsplit("/", 1)[-1] in SHELLS)
    assert not shells, shells
    assert "usr/bin/node" in names
    assert {"etc/passwd", "etc/group", "app/server.js", "app/node_modules/ms/index.js"} <= names
    files = [m.name.removeprefix("./") for m in members if m.isfile()]
    # usr/share/nodejs: the builtins Debian's node loads from files instead of carrying them
    kept = ("app/", "etc/passwd", "etc/group", "usr/bin/node", "usr/lib", "usr/share/nodejs/")
    outside = [n for n in files if not n.startswith(kept)]
    assert not outside, outside
    builtins = [n for n in files if n.startswith("usr/share/nodejs/")]
    assert all(n.endswith(".js") for n in builtins), builtins
    libs = [n for n in files if n.startswith("usr/lib")]
    assert libs and all(".so" in n.rsplit("/", 1)[-1] for n in libs), libs
    assert [n for n in files if n.startswith("usr/bin/")] == ["usr/bin/node"]


def test_sizes_and_layers_per_variant_and_platform_are_ordered(node_app_release: dict[str, Any]) -> None:
    rows: dict[tuple[str, str], tuple[int, int]] = {}
    for variant in VARIANTS:
        ref = node_app_release["variants"][variant]["tags"][0]
        for platform in PLATFORMS:
            _, _, manifest = _platform_manifest(ref, platform)
            layers = manifest["layers"]
            rows[(variant, platform)] = (sum(int(layer["size"]) for layer in layers), len(layers))
    print("\nvariant     platform       compressed size    layers")
    for (variant, platform), (size, count) in sorted(rows.items()):
        print(f"{variant:<11} {platform:<14} {size / 1e6:9.1f} MB {count:>9}")
    for platform in PLATFORMS:
        d_size, d_layers = rows[("distroless", platform)]
        s_size, s_layers = rows[("slim", platform)]
        assert d_size < s_size, (platform, rows)
        assert d_layers < s_layers, (platform, rows)


def _packages(ref: str, platform: str) -> set[tuple[str, str]]:
    """(purl type, name) of every package the SBOM of ``ref``'s ``platform`` image lists, as multibake sbom shows it."""
    proc = run_cli("sbom", ref, "--platform", platform)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    return {(r[1], r[2]) for r in rows if len(r) == 4 and r[0] == platform}


def test_the_arm_v7_sbom_lists_the_npm_dependencies_and_the_debian_packages(node_app_release: dict[str, Any]) -> None:
    slim = _packages(node_app_release["variants"]["slim"]["tags"][0], "linux/arm/v7")
    assert ("npm", "ms") in slim  # the app's one dependency, from node_modules
    assert ("npm", "node-app") in slim
    debs = {name for kind, name in slim if kind == "deb"}
    assert {"libc6", "base-files", "dpkg"} <= debs, sorted(debs)[:40]


def test_the_distroless_like_sbom_lists_what_it_carries(node_app_release: dict[str, Any]) -> None:
    carried = _packages(node_app_release["variants"]["distroless"]["tags"][0], "linux/arm/v7")
    slim = _packages(node_app_release["variants"]["slim"]["tags"][0], "linux/arm/v7")
    assert ("npm", "ms") in carried and ("npm", "node-app") in carried
    # no dpkg database is copied into it: the Debian packages listed are those whose libraries it
    # carries, named by the package notes in their ELF files (measured: gcc-14 for libgcc_s, libzstd)
    debs = {name for kind, name in carried if kind == "deb"}
    assert "gcc-14" in debs and "dpkg" not in debs and "base-files" not in debs
    assert len(carried) * 5 < len(slim), (sorted(carried), len(slim))
