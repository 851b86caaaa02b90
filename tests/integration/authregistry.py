"""A second local registry that asks for a password and speaks TLS only, as a private registry does.

Debian's ``docker-registry`` (distribution 2.8) with ``auth: htpasswd`` (a bcrypt entry made here) and
``http.tls`` with a server certificate signed by a CA made here. The CA is trusted the way docker
trusts a private registry's CA: ``/etc/docker/certs.d/<host:port>/ca.crt`` (dockerd, BuildKit in
dockerd and multibake's own registry client read it there), removed again at teardown.

The address is not on the loopback interface: dockerd counts 127.0.0.0/8 among its insecure
registries, and for those it (and BuildKit in dockerd) skips certificate verification and falls
back to plain HTTP, so a registry on 127.0.0.1 would not show that the CA is really checked. The
docker bridge's gateway (172.17.0.1 by default) is an address of this machine every dockerd has;
``start`` refuses an address dockerd would treat as insecure, so the TLS tests cannot silently turn
into tests of nothing.

Other tests use it through the session fixture ``auth_registry`` (conftest.py): ``host``, ``user``,
``password`` and ``ca``; ``registry.get``/``tags`` read it with those, ``docker_config`` and ``login``
give a test docker's login state without touching the user's.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CERTS_D = Path("/etc/docker/certs.d")
_OWNER = "multibake-test.owner"  # docker reads only *.crt, *.cert and *.key files here
PORT = 5443


@dataclass(frozen=True)
class AuthRegistry:
    """What a test needs to reach the registry: where, who, and the CA that signed its certificate."""

    host: str  # address:port, as image references and docker's certs.d name it
    user: str
    password: str = field(repr=False)
    ca: Path  # the CA certificate (PEM), also installed as /etc/docker/certs.d/<host>/ca.crt
    log: Path  # the registry's own log (who it authenticated, and who it refused)


def address() -> str:
    """An IPv4 address of this machine that dockerd does not count as an insecure registry's.

    The default bridge's gateway, as dockerd reports it; else the first global address of the host.
    """
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    found = [a for a in out if "." in a]
    if not found:
        lines = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False
        )
        found = [ln.split()[3].split("/")[0] for ln in lines.stdout.splitlines() if len(ln.split()) > 3]
    if not found:
        raise RuntimeError("no IPv4 address besides loopback: cannot run a registry dockerd verifies")
    return found[0]


def insecure_for_dockerd(ip: str, host: str) -> bool:
    """Whether dockerd would skip TLS verification for ``host`` (listed, or in an insecure CIDR)."""
    doc = json.loads(
        subprocess.run(
            ["docker", "info", "-f", "{{json .RegistryConfig}}"], capture_output=True, text=True, check=True
        ).stdout
    )
    index = (doc.get("IndexConfigs") or {}).get(host)
    if index is not None:
        return not index.get("Secure", True)
    return any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in doc.get("InsecureRegistryCIDRs") or [])


def make_certificates(folder: Path, ip: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for ``ip`` signed by it: (ca.crt, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "multibake test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry as distribution reads it: bcrypt only."""
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


def _free_port(ip: str) -> int:
    """PORT when it is free on ``ip``, else any free port."""
    for port in (PORT, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError(f"no free port on {ip}")


def _config(folder: Path, host: str) -> Path:
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'storage'}\n  delete:\n    enabled: true\n"
        f"auth:\n  htpasswd:\n    realm: multibake-test\n    path: {folder / 'htpasswd'}\n"
        f"http:\n  addr: {host}\n  tls:\n    certificate: {folder / 'server.crt'}\n    key: {folder / 'server.key'}\n"
    )
    return config


def answers(host: str, ca: Path) -> int | None:
    """The status of ``GET /v2/`` without credentials over TLS verified with ``ca`` (401: it is up)."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(f"https://{host}/v2/", timeout=5, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


@contextlib.contextmanager
def trusted(host: str, ca: Path) -> Iterator[Path]:
    """Install ``ca`` as docker's CA for ``host``; removed (and the folders made for it) on exit."""
    made_root = not CERTS_D.exists()
    folder = CERTS_D / host
    if folder.exists() and not (folder / _OWNER).exists():
        raise RuntimeError(f"{folder} exists already: refusing to replace a CA this test did not install")
    shutil.rmtree(folder, ignore_errors=True)  # left by a test run that was killed
    folder.mkdir(parents=True)
    try:
        (folder / _OWNER).write_text("installed by multibake's integration tests; removed when they end\n")
        shutil.copy(ca, folder / "ca.crt")
        yield folder / "ca.crt"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made_root:
            with contextlib.suppress(OSError):
                CERTS_D.rmdir()


@contextlib.contextmanager
def start(folder: Path, user: str = "multibake-ci") -> Iterator[AuthRegistry]:
    """Run the registry until the block ends; everything it made is removed then."""
    ip = address()
    host = f"{ip}:{_free_port(ip)}"
    if insecure_for_dockerd(ip, host):
        raise RuntimeError(f"dockerd treats {host} as an insecure registry: it would not verify the TLS certificate")
    password = secrets.token_urlsafe(18)
    ca, _, _ = make_certificates(folder, ip)
    (folder / "htpasswd").write_text(htpasswd_line(user, password))
    log = folder / "registry.log"
    with log.open("wb") as out, trusted(host, ca):
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(_config(folder, host))],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while answers(host, ca) != 401:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the TLS registry did not start on {host}:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield AuthRegistry(host=host, user=user, password=password, ca=ca, log=log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(folder / "storage", ignore_errors=True)


def user_docker_dir() -> Path:
    import os

    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def docker_config(folder: Path, config: dict[str, object] | None = None, *, builders: bool = True) -> Path:
    """A DOCKER_CONFIG for one test: its own config.json, the user's buildx builders and cli plugins.

    buildx keeps its builder definitions under DOCKER_CONFIG/buildx and docker finds plugins under
    DOCKER_CONFIG/cli-plugins: without the links the stack's builders would vanish for the test.
    ``builders=False`` gives the test a buildx state of its own (builders it creates stay in it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    user = user_docker_dir()
    (user / "buildx").mkdir(parents=True, exist_ok=True)
    for name in ("buildx", "cli-plugins", "contexts") if builders else ("cli-plugins", "contexts"):
        if (user / name).exists():
            (folder / name).symlink_to(user / name)
    (folder / "config.json").write_text(json.dumps(config or {}))
    return folder


def login(docker_dir: Path, reg: AuthRegistry) -> None:
    """``docker login`` into ``docker_dir`` (dockerd checks the password and the certificate)."""
    import os

    subprocess.run(
        ["docker", "login", reg.host, "--username", reg.user, "--password-stdin"],
        input=reg.password + "\n",
        env={**os.environ, "DOCKER_CONFIG": str(docker_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
