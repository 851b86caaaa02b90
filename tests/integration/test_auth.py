"""Pushing to and verifying a registry that wants a password and speaks TLS (authregistry.py).

Each way of giving credentials is used for a whole ``multibake build --push`` (BuildKit's push,
multibake's publish and verify) and a ``multibake verify``: docker's login state, a credential
helper, and $MULTIBAKE_REGISTRY_USER/PASSWORD. What the registry holds is read back over TLS with
the test's CA and credentials; the registry's own log says whose requests it authorized.
A Bearer-token registry (faultproxy.py in token mode) covers the token flow of multibake's client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multibake.registry.auth import PASSWORD_ENV, USER_ENV
from tests.helpers import local_context, run_cli, unavailable
from tests.integration import registry
from tests.integration.authregistry import CERTS_D, AuthRegistry, docker_config, login, make_certificates, trusted
from tests.integration.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX_BASE = ROOT / "samples" / "offline" / "busybox-base"
ALL = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
TWO = ["linux/amd64", "linux/arm64"]
HELPER = """#!/bin/sh
# a credential helper for one registry; says who asked (the parent's command name) in its log
read -r server
echo "$1 $server $(cat /proc/$PPID/comm)" >> {log}
if [ "$1" = get ] && [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"%s","Secret":"%s"}}' "$server" "{user}" "{password}"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
"""


def write_release(tmp_path: Path, host: str, platforms: list[str]) -> Path:
    """The busybox base alone, in a namespace of its own under ``host``."""
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {host}/auth-{uuid.uuid4().hex[:8]}\n"
        f"platforms: [{', '.join(platforms)}]\n"
        "images:\n"
        "  bb:\n"
        f"    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    matrix: {busybox: ["1.35"]}\n'
        '    args: {BUSYBOX_VERSION: "{busybox}"}\n'
    )
    return cfg


def environ(docker_dir: Path, **extra: str) -> dict[str, str]:
    """The test's environment with its own DOCKER_CONFIG, and no credentials but ``extra``'s."""
    env = {k: v for k, v in os.environ.items() if k not in (USER_ENV, PASSWORD_ENV, "MULTIBAKE_REGISTRY")}
    return {**env, "DOCKER_CONFIG": str(docker_dir), **extra}


def multibake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, environ=env, timeout=1200)


def push(cfg: Path, env: dict[str, str], *more: str) -> subprocess.CompletedProcess[str]:
    return multibake("build", "--push", "--json", "--progress", "plain", "-c", str(cfg), *more, env=env)


def plan_of(cfg: Path) -> dict[str, Any]:
    proc = multibake("plan", "--json", "-c", str(cfg), env=environ(Path(tempfile.gettempdir())))
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def assert_published(cfg: Path, platforms: list[str]) -> None:
    """Every planned tag is in the registry: the index of exactly ``platforms``, per-platform images of it."""
    for cell in plan_of(cfg)["cells"]:
        index = registry.get(cell["tags"][0])
        assert index is not None and index.is_index, cell["tags"][0]
        assert sorted(index.platforms()) == sorted(platforms)
        for platform, refs in cell["platform_tags"].items():
            for ref in refs:
                single = registry.get(ref)
                assert single is not None and single.digest == index.platforms()[platform], ref


def authorized_agents(reg: AuthRegistry, cfg: Path) -> set[str]:
    """The clients (``buildkit``, ``multibake``'s registry client, ...) whose requests for ``cfg``'s repositories
    the registry authorized."""
    namespace = plan_of(cfg)["registry"].split("/", 1)[1]
    agents = set()
    for line in reg.log.read_text().splitlines():
        if 'msg="authorized request"' in line and f"vars.name={namespace}/" in line:
            agent = line.split("http.request.useragent=", 1)[1]
            agents.add(agent.strip('"').split("/", 1)[0])
    return agents


def assert_secret_nowhere(secret: str, tmp_path: Path, *procs: subprocess.CompletedProcess[str]) -> None:
    """Not in any output, nor in any file multibake wrote (bake files, metadata, shard results)."""
    for proc in procs:
        assert secret not in proc.stdout and secret not in proc.stderr
    written = [p for p in (tmp_path / ".multibake").rglob("*") if p.is_file()]
    assert written, "multibake wrote its work files under .multibake"
    for path in written:
        assert secret not in path.read_text(errors="replace"), path


def private_configs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("multibake-docker-config-*")}


def builders(docker_dir: Path) -> str:
    out = subprocess.run(
        ["docker", "buildx", "ls", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        check=True,
        env=environ(docker_dir),
    )
    return out.stdout


def test_docker_login_state_pushes_three_platforms_and_verifies(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    docker_dir = docker_config(tmp_path / "docker")
    login(docker_dir, auth_registry)
    cfg = write_release(tmp_path, auth_registry.host, ALL)
    env = environ(docker_dir)
    built = push(cfg, env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert_published(cfg, ALL)
    checked = multibake("verify", "--json", "-c", str(cfg), env=env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert json.loads(checked.stdout)["ok"] is True
    # BuildKit pushed with the login; multibake's own client published and verified with it
    assert {"buildkit", "multibake"} <= authorized_agents(auth_registry, cfg)
    assert_secret_nowhere(auth_registry.password, tmp_path, built, checked)


def test_credential_helper(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "helper.log"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-mbtest"
    reg = auth_registry
    helper.write_text(HELPER.format(log=log, host=reg.host, user=reg.user, password=reg.password))
    helper.chmod(0o755)
    docker_dir = docker_config(tmp_path / "docker", {"credHelpers": {reg.host: "mbtest"}})
    cfg = write_release(tmp_path, reg.host, TWO)
    env = environ(docker_dir, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    built = push(cfg, env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert_published(cfg, TWO)
    checked = multibake("verify", "-c", str(cfg), env=env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    asked = {tuple(line.split()) for line in log.read_text().splitlines()}
    # buildx asked the helper for BuildKit's push, multibake's client for publish and verify
    assert ("get", reg.host, "docker-buildx") in asked
    assert any(who.startswith("python") for verb, host, who in asked if (verb, host) == ("get", reg.host))
    assert {"buildkit", "multibake"} <= authorized_agents(reg, cfg)
    assert_secret_nowhere(reg.password, tmp_path, built, checked)


def test_environment_credentials_log_docker_in_privately(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    reg = auth_registry
    # no credentials at all, and a keychain that must not be written to (there is no such helper:
    # docker would fail storing into it, as it would write into a real one)
    users: dict[str, object] = {"credsStore": "mb-absent-keychain"}
    docker_dir = docker_config(tmp_path / "docker", users)
    cfg = write_release(tmp_path, reg.host, TWO)
    before, builders_before = private_configs(), builders(docker_dir)
    env = environ(docker_dir, **{USER_ENV: reg.user, PASSWORD_ENV: reg.password})
    built = multibake("--debug", "build", "--push", "--progress", "plain", "-c", str(cfg), env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert_published(cfg, TWO)
    assert f"login --username {reg.user} --password-stdin {reg.host}" in built.stderr  # --debug shows the argv
    assert f"docker logged in to {reg.host} as {reg.user}" in built.stderr
    checked = multibake("verify", "-c", str(cfg), env=env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert {"buildkit", "multibake"} <= authorized_agents(reg, cfg)
    assert_secret_nowhere(reg.password, tmp_path, built, checked)
    # the private DOCKER_CONFIG is gone, the user's is untouched and keeps its builders
    assert private_configs() == before
    assert json.loads((docker_dir / "config.json").read_text()) == users
    assert builders(docker_dir) == builders_before
    # and without the credentials the registry refuses multibake: exit 1 naming it, no retries
    refused = multibake("verify", "-c", str(cfg), env=environ(docker_config(tmp_path / "anonymous")))
    assert refused.returncode == 1
    assert f"{reg.host}/" in refused.stdout + refused.stderr and "401 unauthorized" in refused.stdout
    assert "transient failure" not in refused.stderr


@pytest.mark.parametrize("given", ["environment", "stale-docker-login"])
def test_a_wrong_password_fails_at_once(auth_registry: AuthRegistry, tmp_path: Path, given: str) -> None:
    reg = auth_registry
    wrong = f"wrong-{uuid.uuid4().hex}"
    if given == "environment":
        docker_dir = docker_config(tmp_path / "docker")
        env = environ(docker_dir, **{USER_ENV: reg.user, PASSWORD_ENV: wrong})
    else:  # what `docker login` left before the password was changed
        stale = base64.b64encode(f"{reg.user}:{wrong}".encode()).decode()
        docker_dir = docker_config(tmp_path / "docker", {"auths": {reg.host: {"auth": stale}}})
        env = environ(docker_dir)
    cfg = write_release(tmp_path, reg.host, ["linux/amd64"])
    started = time.monotonic()
    built = push(cfg, env)
    took = time.monotonic() - started
    assert built.returncode == 1, built.stderr[-3000:]
    said = built.stdout + built.stderr
    assert reg.host in said and ("401" in said or "unauthorized" in said.lower())
    assert "transient failure" not in built.stderr, "a refused password is not retried"
    assert took < 120, f"took {took:.0f}s"
    if given == "environment":
        assert "docker login" in built.stderr and "as multibake-ci" in built.stderr
        assert not (tmp_path / ".multibake" / "build" / "all" / "metadata.json").exists(), "nothing was built"
    checked = multibake("verify", "-c", str(cfg), env=env)
    assert checked.returncode == 1 and "401 unauthorized" in checked.stdout and reg.host in checked.stdout
    assert "transient failure" not in checked.stderr
    assert_secret_nowhere(wrong, tmp_path, built, checked)
    assert registry.get(plan_of(cfg)["cells"][0]["tags"][0]) is None, "no public tag was written"


@contextlib.contextmanager
def ca_removed(host: str) -> Iterator[None]:
    """docker's CA for ``host`` taken away for the block (put back after it)."""
    ca = CERTS_D / host / "ca.crt"
    aside = ca.with_name("ca.crt.aside")
    shutil.move(ca, aside)
    try:
        yield
    finally:
        shutil.move(aside, ca)


def test_tls_is_verified_by_dockerd_buildkit_and_multibake(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    """Without the CA in /etc/docker/certs.d every client refuses the registry's certificate: none of
    them skips verification for this address (dockerd would for 127.0.0.0/8, see authregistry.py)."""
    reg = auth_registry
    docker_dir = docker_config(tmp_path / "docker")
    login(docker_dir, reg)  # while the CA is trusted
    cfg = write_release(tmp_path, reg.host, ["linux/amd64"])
    env = environ(docker_dir)
    with ca_removed(reg.host):
        refused_login = subprocess.run(
            ["docker", "login", reg.host, "--username", reg.user, "--password-stdin"],
            input=reg.password + "\n",
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        built = push(cfg, env)  # BuildKit in dockerd pushes
        checked = multibake("verify", "-c", str(cfg), env=env)  # multibake's client reads
    assert refused_login.returncode != 0 and "x509" in refused_login.stderr  # dockerd
    assert built.returncode == 1 and "x509: certificate signed by unknown authority" in built.stderr
    assert checked.returncode == 1 and "TLS certificate is not trusted" in checked.stdout
    assert "transient failure" not in checked.stderr + built.stderr, "a certificate refused is not retried"
    # with the CA back, the same login state pushes
    again = push(cfg, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_published(cfg, ["linux/amd64"])


def _buildkitd() -> Path | None:
    """The standalone buildkitd the buildkit stack built (scripts/setup-stack.sh), or one on PATH."""
    cache = Path(os.environ.get("MULTIBAKE_CACHE", "/var/cache/multibake"))
    found = sorted(cache.glob("buildkit-*/bin/buildkitd"))
    on_path = shutil.which("buildkitd")
    return found[-1] if found else Path(on_path) if on_path else None


@contextlib.contextmanager
def standalone_buildkit(buildkitd: Path, env: dict[str, str], ca: Path | None, host: str) -> Iterator[str]:
    """A buildkitd of its own (its config trusting ``ca`` for ``host``, or nothing), as a remote builder
    in ``env``'s DOCKER_CONFIG; yields the builder's name. Stopped and removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="mb-bk-"))  # short: a unix socket path has ~100 characters
    config = "[worker.oci]\n  enabled = true\n[worker.containerd]\n  enabled = false\n"
    if ca is not None:
        config += f'[registry."{host}"]\n  ca = ["{ca}"]\n'
    (folder / "buildkitd.toml").write_text(config)
    name, sock = f"mb-auth-{folder.name[-6:].lower()}", f"unix://{folder}/buildkitd.sock"
    argv = [str(buildkitd), "--config", str(folder / "buildkitd.toml"), "--root", str(folder / "root"), "--addr", sock]
    with (folder / "buildkitd.log").open("wb") as log:
        daemon = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        create = ["docker", "buildx", "create", "--name", name, "--driver", "remote", sock]
        subprocess.run(create, env=env, capture_output=True, text=True, check=True)
        inspect = ["docker", "buildx", "inspect", "--bootstrap", name]
        deadline = time.monotonic() + 60
        while subprocess.run(inspect, env=env, capture_output=True, check=False).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (folder / "buildkitd.log").read_text()
            time.sleep(0.5)
        yield name
    finally:
        subprocess.run(["docker", "buildx", "rm", name], env=env, capture_output=True, check=False)
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_buildkit_outside_dockerd_trusts_the_ca_only_from_its_own_config(
    auth_registry: AuthRegistry, tmp_path: Path
) -> None:
    """A BuildKit daemon of its own (remote driver; docker-container is the same daemon in a container)
    does not read /etc/docker/certs.d: it refuses the certificate until its buildkitd.toml names the CA.
    It takes the credentials from buildx (the docker login state), and pushes by digest."""
    buildkitd = _buildkitd()
    if buildkitd is None:
        message = "no standalone buildkitd (scripts/setup-stack.sh --stack buildkit builds one)"
        unavailable(message)
    reg = auth_registry
    docker_dir = docker_config(tmp_path / "docker", builders=False)  # the test's builders stay its own
    login(docker_dir, reg)
    env = environ(docker_dir)
    cfg = write_release(tmp_path, reg.host, ["linux/amd64"])
    with standalone_buildkit(buildkitd, env, None, reg.host) as builder:
        refused = push(cfg, env, "--builder", builder)
    assert refused.returncode == 1 and "x509: certificate signed by unknown authority" in refused.stderr
    with standalone_buildkit(buildkitd, env, reg.ca, reg.host) as builder:
        built = push(cfg, env, "--builder", builder)
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads(built.stdout)["route"] == "push-by-digest"
    assert_published(cfg, ["linux/amd64"])
    assert {"buildkit", "multibake"} <= authorized_agents(reg, cfg)


def test_token_auth_of_the_registry_client(stack: str, tmp_path: Path) -> None:
    """A registry that wants Bearer tokens (faultproxy.py's token mode over TLS, in front of
    127.0.0.1:5000, its CA in certs.d): multibake's verify gets a token for its credentials from the
    realm and reads with it."""
    user, password = "token-user", uuid.uuid4().hex
    docker_dir = docker_config(tmp_path / "docker")
    cfg = write_release(tmp_path, "127.0.0.1:5000", ["linux/amd64"])
    built = push(cfg, environ(docker_dir))  # straight into the plain registry
    assert built.returncode == 0, built.stderr[-3000:]
    namespace = plan_of(cfg)["registry"].split("/", 1)[1]
    (tmp_path / "tls").mkdir()
    ca, cert, key = make_certificates(tmp_path / "tls", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    # any free port: only multibake's client talks to it (dockerd and BuildKit are not involved)
    proxy = FaultProxy(token=(user, password), tls=context, port=0)
    front = f"127.0.0.1:{proxy.port}"
    fronted = ("-c", str(cfg), "--registry", f"{front}/{namespace}")
    with trusted(front, ca), proxy:
        tokens = proxy.tokens
        assert tokens is not None
        good = multibake("verify", *fronted, env=environ(docker_dir, **{USER_ENV: user, PASSWORD_ENV: password}))
        assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
        assert tokens.grants >= 1 and tokens.bearer_ok >= 1
        assert f"repository:{namespace}/bb:pull,push" in tokens.scopes
        grants = tokens.grants
        anonymous = multibake("verify", *fronted, env=environ(docker_dir))
        wrong = multibake("verify", *fronted, env=environ(docker_dir, **{USER_ENV: user, PASSWORD_ENV: "nope"}))
        assert tokens.grants == grants, "no token without the right credentials"
        assert tokens.refusals >= 1
    for refused in (anonymous, wrong):
        assert refused.returncode == 1
        assert f"{front}/" in refused.stdout and "401 unauthorized" in refused.stdout
        assert "transient failure" not in refused.stderr
    assert password not in good.stdout + good.stderr
