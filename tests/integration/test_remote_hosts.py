"""BuildKit nodes as real remote hosts: TCP with mutual TLS, the registry at its network address, node loss.

The hosts are network namespaces this test module makes (testhosts.py, scripts/buildkit-net.sh):
node ``amd64`` (what its BuildKit finds: amd64 natively, arm under QEMU) and node ``arm`` (linux/arm64
and linux/arm/v7 only, standing in for a native arm host). Each listens on tcp://10.214.0.x:1234 with
mutual TLS; the registry they push to is 10.214.0.1:5443 (TLS, the test CA), not 127.0.0.1.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import registry, testhosts
from tests.integration.test_build import UNAME
from tests.integration.test_publish import SHORT, multibake, plan_of, push, write_release
from tests.integration.test_real_tier import docker
from tests.integration.testhosts import Hosts

NODE_OF = {"linux/amd64": "amd64", "linux/arm64": "arm", "linux/arm/v7": "arm"}


@pytest.fixture(scope="module")
def hosts(stack: str) -> Iterator[Hosts]:
    reason = testhosts.missing()
    if reason:
        testhosts.skip_or_fail(reason)
    with testhosts.running() as made:
        registry.allow(made.registry, ca=made.ca)
        try:
            yield made
        finally:
            registry.forget(made.registry)


@pytest.fixture
def builder_name() -> Iterator[str]:
    name = f"mb-net-{uuid.uuid4().hex[:6]}"
    yield name
    for made in (name, f"{name}-without-arm"):  # the second: on_node_loss emulate made it
        subprocess.run(["docker", "buildx", "rm", made], capture_output=True, check=False)


def _release(
    tmp_path: Path, hosts: Hosts, name: str, *, arm: dict[str, str] | None = None, extra: str = "", run: str = ""
) -> Path:
    namespace = f"{hosts.registry}/net-{uuid.uuid4().hex[:8]}"
    cfg = write_release(tmp_path, registry_ns=namespace, app_run=run or "uname -m > /arch")
    text = cfg.read_text() + extra
    text += f"builder:\n  name: {name}\n  timeout: 30\n  nodes:\n"
    text += hosts.node_yaml("amd64").replace("platforms: [linux/amd64]", "platforms: [linux/amd64]")
    text += hosts.node_yaml("arm", **(arm or {}))
    cfg.write_text(text)
    return cfg


def _staging_tags(plan: dict[str, Any]) -> list[str]:
    repos = {registry.split(c["tags"][0])[:2] for c in plan["cells"]}
    return [t for host, repo in repos for t in registry.tags(host, repo) if t.startswith("multibake-staging-")]


def test_a_two_host_mtls_release_is_complete_verified_and_built_where_declared(
    hosts: Hosts, tmp_path: Path, builder_name: str
) -> None:
    cfg = _release(tmp_path, hosts, builder_name)
    code, report, err = push(cfg, env=hosts.env)
    assert code == 0, err[-3000:]
    assert report["route"] == "push-by-digest"
    arm = hosts.nodes["arm"].endpoint
    assert f"node arm ({arm}): BuildKit v" in err and "linux/arm64, linux/arm/v7 native" in err
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        index = registry.get(cell["tags"][0])
        assert index is not None and index.is_index
        assert sorted(index.platforms()) == sorted(cell["platforms"])
    for cell in (c for c in plan["cells"] if c["family"] == "app"):
        for platform in cell["platforms"]:
            assert report["nodes"].get(f"{cell['target']}--{SHORT[platform]}") == NODE_OF[platform], report["nodes"]
            (ref,) = cell["platform_tags"][platform]
            ran = docker("run", "--rm", "--platform", platform, ref, "cat", "/arch", timeout=300)
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == UNAME[platform], (ref, ran.stdout)
    assert _staging_tags(plan) == []
    verify = multibake("verify", "--json", "-c", str(cfg), env=hosts.env)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True, verify.stdout[-2000:]


def _certificate(folder: Path, hosts: Hosts, *, signer: str, expired: bool = False) -> tuple[Path, Path]:
    """A client certificate and key: signed by the test CA (``signer='test'``) or by a CA of its own."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    if signer == "test":
        ca_key: Any = serialization.load_pem_private_key((hosts.ca.parent / "ca.key").read_bytes(), None)
        issuer = x509.load_pem_x509_certificate(hosts.ca.read_bytes()).subject
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = (now - datetime.timedelta(days=2), now - datetime.timedelta(days=1)) if expired else (now, now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(hours=1))
        .not_valid_after(end + datetime.timedelta(hours=0 if expired else 24))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / f"{signer}-{expired}.crt", folder / f"{signer}-{expired}.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def _other_ca(folder: Path) -> Path:
    cert, _ = _certificate(folder, None, signer="other")  # type: ignore[arg-type]
    return cert  # a certificate that did not sign the node's: as a CA, it verifies nothing of the node's


@pytest.mark.parametrize("case", ["wrong client certificate", "wrong CA", "expired client certificate"])
def test_a_refused_certificate_is_exit_2_naming_the_node_before_anything_builds(
    hosts: Hosts, tmp_path: Path, builder_name: str, case: str
) -> None:
    if case == "wrong client certificate":
        cert, key = _certificate(tmp_path, hosts, signer="other")
        arm, words = {"cert": str(cert), "key": str(key)}, ("refused the client certificate",)
    elif case == "expired client certificate":
        cert, key = _certificate(tmp_path, hosts, signer="test", expired=True)
        arm, words = {"cert": str(cert), "key": str(key)}, ("expired",)
    else:
        arm, words = {"cacert": str(_other_ca(tmp_path))}, ("not signed by cacert",)
    cfg = _release(tmp_path, hosts, builder_name, arm=arm)
    started = time.monotonic()
    proc = multibake("build", "--push", "-c", str(cfg), env=hosts.env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("multibake: error:")]
    assert len(errors) == 1, proc.stderr
    assert "node arm" in errors[0] and hosts.nodes["arm"].endpoint in errors[0], errors
    assert all(w in errors[0] for w in words), errors
    assert "Traceback" not in proc.stderr and "PRIVATE KEY" not in proc.stderr
    assert time.monotonic() - started < 25, "refused by multibake's own handshake, not after buildx's timeout"
    assert all(registry.get(c["tags"][0]) is None for c in plan_of(cfg)["cells"]), "nothing was pushed"


AMD64_ONLY = """  solo:
    context: solo
    platforms: [linux/amd64]
    matrix: {v: ["1", "2"]}
    args: {V: "{v}"}
"""


def _slow_release(tmp_path: Path, hosts: Hosts, name: str) -> Path:
    """The release, whose app RUN steps take a while, and a family of amd64-only cells."""
    solo = tmp_path / "solo"
    solo.mkdir(exist_ok=True)
    (solo / "Dockerfile").write_text("FROM scratch\nARG V\nLABEL v=$V\n")
    return _slow_app(_release(tmp_path, hosts, name, extra=AMD64_ONLY))


def _slow_app(cfg: Path) -> Path:
    """``cfg``, its app's RUN step made to last long enough for a node to be killed during it."""
    app = cfg.parent / "app" / "Dockerfile"
    app.write_text(app.read_text().replace('RUN echo "$VERSION"', 'RUN sleep 20 && echo "$VERSION"'))
    return cfg


def _kill_when_arm_runs(proc: subprocess.Popen[str], hosts: Hosts) -> list[str]:
    """Read the build's stderr; when an arm RUN step starts, kill the arm node; all lines read."""
    lines: list[str] = []
    killed = False
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if not killed and "RUN" in line and ("arm64" in line or "armv7" in line) and "sleep" in line:
            hosts.stop("arm")
            killed = True
    proc.wait(timeout=600)
    assert killed, "the arm node was never seen building:\n" + "".join(lines[-40:])
    return lines


def test_a_node_killed_mid_build_is_named_keep_going_publishes_the_rest_and_a_rerun_completes(
    hosts: Hosts, tmp_path: Path, builder_name: str
) -> None:
    cfg = _slow_release(tmp_path, hosts, builder_name)
    code, _, err = _build_killing_arm(cfg, hosts, "--keep-going")
    assert code == 1, err[-3000:]
    endpoint = hosts.nodes["arm"].endpoint
    named = [line for line in err.splitlines() if f"node arm ({endpoint})" in line and "stopped answering" in line]
    assert named, err[-3000:]
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        held = registry.get(cell["tags"][0])
        if cell["family"] == "solo":
            assert held is not None, f"{cell['target']}: an amd64-only cell publishes with --keep-going"
        elif cell["family"] == "app":
            assert held is None, f"{cell['target']}: no public tag moves for a cell of the lost node"
    code, report, err = push(cfg, "--skip-existing", env=hosts.env)
    assert code == 0, err[-3000:]
    assert all(f"solo-{v} is up to date" in err or "up to date" in err for v in ("1", "2")), err[-2000:]
    rebuilt = {c["target"] for c in report["cells"] if c.get("status") != "up-to-date"}
    assert not any(t.startswith("solo") for t in rebuilt), rebuilt
    verify = multibake("--debug", "verify", "--json", "-c", str(cfg), env=hosts.env)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-3000:]


def _build_killing_arm(cfg: Path, hosts: Hosts, *args: str) -> tuple[int, str, str]:
    """``build --push`` on ``cfg``; the arm node is killed as soon as it runs an app RUN step."""

    argv = [
        sys.executable,
        "-m",
        "multibake",
        "build",
        "--push",
        "--json",
        "--progress",
        "plain",
        "-c",
        str(cfg),
        *args,
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **hosts.env},
        cwd=cfg.parent,
    )
    try:
        err = "".join(_kill_when_arm_runs(proc, hosts))
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        hosts.start("arm")
    return proc.returncode, out, err


def test_with_on_node_loss_emulate_a_node_killed_mid_build_leaves_its_platforms_to_the_other(
    hosts: Hosts, tmp_path: Path, builder_name: str
) -> None:
    cfg = _slow_app(_release(tmp_path, hosts, builder_name))
    code, out, err = _build_killing_arm(cfg, hosts, "--on-node-loss", "emulate")
    assert code == 0, err[-3000:]
    assert f"node arm ({hosts.nodes['arm'].endpoint}) does not answer" in err, err[-3000:]
    assert "built on node amd64 under emulation" in err
    report = json.loads(out)
    app_cell = next(c for c in report["cells"] if c["family"] == "app")
    assert report["placement"][app_cell["target"]]["linux/arm64"]["node"] == "amd64"
    assert report["placement"][app_cell["target"]]["linux/arm64"]["emulated"] is True
    plan = plan_of(cfg)
    for cell in plan["cells"]:
        index = registry.get(cell["tags"][0])
        assert index is not None and sorted(index.platforms()) == sorted(cell["platforms"]), cell["target"]
    verify = multibake("--debug", "verify", "--json", "-c", str(cfg), env=hosts.env)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-3000:]


def test_a_node_down_before_the_build_is_emulated_elsewhere_and_imports_the_first_nodes_cache(
    hosts: Hosts, tmp_path: Path, builder_name: str, measured: Any
) -> None:
    # RUN steps of their own: no node has them in its local cache from an earlier test
    unique = f"uname -m > /arch && echo {uuid.uuid4().hex} > /id"
    cfg = _release(tmp_path, hosts, builder_name, extra="cache: {type: registry}\n", run=unique)
    code, first, err = push(cfg, env=hosts.env)
    assert code == 0, err[-3000:]
    hosts.stop("arm")
    try:
        code, again, err = push(cfg, "--on-node-loss", "emulate", env=hosts.env)
    finally:
        hosts.start("arm")
    assert code == 0, err[-3000:]
    assert "linux/arm64, linux/arm/v7 built on node amd64 under emulation" in err
    before, after = first["executed_run_steps"], again["executed_run_steps"]
    measured(f"cache across nodes: RUN steps executed {before} on nodes amd64+arm, {after} when amd64 rebuilt all")
    assert after < before, "the arm cells rebuilt on amd64 import the arm node's registry cache"
