"""`multibake update` against a real registry: the test pushes the tags itself, then runs the CLI.

Tags are tiny manifests (an empty OCI index each) written over the registry's HTTP API: no docker
needed, but run it under the stack's lock like every integration test. The registry is a fixture
(``tag_registry``): its host, scheme, credentials, CA and the environment the CLI runs with are
parameters, so the same tests run against the plain registry on 127.0.0.1:5000 and against a
registry with htpasswd auth and TLS (add an entry to ``REGISTRIES`` whose factory returns a
``TagRegistry`` with ``credentials``, ``scheme="https"``, ``cafile`` and ``env={"DOCKER_CONFIG": …}``;
multibake finds the CA as docker does, in /etc/docker/certs.d/<host>/ca.crt or the system store,
which ``SSL_CERT_FILE`` in ``env`` can name). ``auth`` is the htpasswd + TLS registry of the
``auth_registry`` fixture: TLS on a host that is not localhost or 127.x, as multibake's client sends a
password only over TLS ("Auth requires HTTPS").
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import run_cli, unavailable

ROOT = Path(__file__).resolve().parents[2]
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_INDEX = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}).encode()


@dataclass(frozen=True)
class TagRegistry:
    """A registry the test writes tags to and the CLI reads them from."""

    host: str  # host[:port] as platforms.yaml names it
    scheme: str = "http"
    credentials: tuple[str, str] | None = None  # (user, password) for the test's own writes
    cafile: str | None = None  # the CA the test's writes trust (https)
    env: Mapping[str, str] = field(default_factory=dict)  # for the CLI: DOCKER_CONFIG with the same login

    def _open(self, request: urllib.request.Request) -> bytes:
        if self.credentials:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=self.cafile) if self.scheme == "https" else None
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            body: bytes = response.read()
        return body

    def push_tags(self, repository: str, *tags: str) -> None:
        """Give ``repository`` (a path on this registry) these tags."""
        for tag in tags:
            url = f"{self.scheme}://{self.host}/v2/{repository}/manifests/{tag}"
            self._open(urllib.request.Request(url, data=EMPTY_INDEX, method="PUT", headers={"Content-Type": INDEX}))

    def tags(self, repository: str) -> list[str]:
        doc = json.loads(self._open(urllib.request.Request(f"{self.scheme}://{self.host}/v2/{repository}/tags/list")))
        return sorted(doc.get("tags") or [])

    def answers(self) -> str | None:
        """None when the registry answers its API, else why not."""
        try:
            self._open(urllib.request.Request(f"{self.scheme}://{self.host}/v2/"))
        except (OSError, urllib.error.URLError) as exc:
            return f"{self.host} does not answer: {exc}"
        return None


def _local(request: pytest.FixtureRequest) -> TagRegistry:
    del request
    return TagRegistry(host="127.0.0.1:5000")


def _with_auth(request: pytest.FixtureRequest) -> TagRegistry:
    """The htpasswd + TLS registry (``auth_registry``), the CLI logged in through a docker config of its own."""
    reg = request.getfixturevalue("auth_registry")
    home = request.getfixturevalue("tmp_path") / "docker-home"
    home.mkdir()
    token = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
    (home / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    return TagRegistry(
        host=reg.host,
        scheme="https",
        credentials=(reg.user, reg.password),
        cafile=str(reg.ca),
        env={"DOCKER_CONFIG": str(home)},
    )


# name → how to make the registry (an auth variant takes its own fixture through request.getfixturevalue)
REGISTRIES: dict[str, Callable[[pytest.FixtureRequest], TagRegistry]] = {"local": _local, "auth": _with_auth}


@pytest.fixture(params=sorted(REGISTRIES))
def tag_registry(request: pytest.FixtureRequest) -> TagRegistry:
    reg = REGISTRIES[request.param](request)
    problem = reg.answers()
    if problem is not None:
        message = f"the registry is not running: {problem} (run scripts/setup-stack.sh)"
        unavailable(message)
    return reg


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float


def multibake(reg: TagRegistry | None, *args: str, env: Mapping[str, str] | None = None) -> Run:
    started = time.monotonic()
    proc = run_cli(*args, env={**(reg.env if reg else {}), **(env or {})}, timeout=300)
    run = Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    assert "Traceback" not in run.err, run.err
    if reg is not None and reg.credentials:
        assert reg.credentials[1] not in run.out + run.err  # a secret is never printed
    return run


CONFIG = """\
# Base images, one cell per Alpine and s6 version.
registry: {host}/{ns}   # where images would go
platforms: [linux/amd64, linux/arm64]
update:
  alpine: {{source: {host}/{ns}/alpine, match: '^3\\.\\d+$'}}   # every 3.x line
  s6: {{source: {host}/{ns}/s6, match: '^v(?P<version>\\d+(\\.\\d+)+)$', keep: 2}}
images:
  base:
    context: .
    matrix:
      alpine: ["3.9", "3.10"]   # quoted: 3.10 must stay 3.10
      s6:
        - '3.1.6.2'     # the older line
        - '3.2.0.2'
        # the newest line last
      variant: [slim, full]
    tags:
      - "{{alpine}}-{{s6}}-{{variant}}"
"""


def write(tmp_path: Path, reg: TagRegistry) -> tuple[Path, str, str]:
    """A config whose rules read repositories of a namespace of its own; (path, namespace, text)."""
    ns = f"upd-{uuid.uuid4().hex[:8]}"
    text = CONFIG.format(host=reg.host, ns=ns)
    path = tmp_path / "platforms.yaml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")  # so that `multibake validate` checks the matrix
    return path, ns, text


def test_update_proposes_writes_in_place_and_then_finds_nothing(tmp_path: Path, tag_registry: TagRegistry) -> None:
    reg = tag_registry
    path, ns, text = write(tmp_path, reg)
    reg.push_tags(f"{ns}/alpine", "3.8", "3.9", "3.10", "3.11", "3.12.0-rc1", "3.12-beta", "latest", "edge")
    reg.push_tags(f"{ns}/s6", "v3.1.6.2", "v3.2.0.2", "v3.2.10.0", "v3.2.9.0", "latest")
    assert reg.tags(f"{ns}/alpine")[:3] == ["3.10", "3.11", "3.12-beta"]  # the registry holds what was pushed

    proposed = multibake(reg, "update", "-c", str(path))
    assert proposed.code == 1, proposed.err
    assert proposed.out.splitlines() == [
        f"{path}:11:15: images.base.matrix.alpine: 3.9, 3.10 → 3.10, 3.11  ({reg.host}/{ns}/alpine)",
        f"{path}:13:9: images.base.matrix.s6: 3.1.6.2, 3.2.0.2 → 3.2.9.0, 3.2.10.0  ({reg.host}/{ns}/s6)",
        "2 axes to update: `multibake update --write` applies the change",
    ]
    assert path.read_text(encoding="utf-8") == text  # without --write the file is left alone

    written = multibake(reg, "update", "-c", str(path), "--write")
    assert written.code == 1, written.err
    assert written.out.splitlines()[-1] == f"wrote {path}: 2 axes updated"
    expected = (
        text.replace('alpine: ["3.9", "3.10"]   # quoted', 'alpine: ["3.10", "3.11"]  # quoted')
        .replace("- '3.1.6.2'     # the older line", "- '3.2.9.0'     # the older line")
        .replace("        - '3.2.0.2'\n", "        - '3.2.10.0'\n")
    )
    assert path.read_text(encoding="utf-8") == expected  # comments, order, quotes, layout: only the values moved

    again = multibake(reg, "update", "-c", str(path))
    assert again.code == 0, again.err
    assert again.out.splitlines() == [
        f"{path}:11:15: images.base.matrix.alpine: up to date (3.10, 3.11)",
        f"{path}:13:9: images.base.matrix.s6: up to date (3.2.9.0, 3.2.10.0)",
        "every axis is up to date",
    ]
    assert multibake(reg, "validate", "-c", str(path)).code == 0


def test_update_json_reports_every_axis_and_the_tags_that_left(tmp_path: Path, tag_registry: TagRegistry) -> None:
    reg = tag_registry
    path, ns, _ = write(tmp_path, reg)
    reg.push_tags(f"{ns}/alpine", "3.10", "3.11")  # 3.9 is gone from the registry
    reg.push_tags(f"{ns}/s6", "v3.1.6.2", "v3.2.0.2")
    run = multibake(reg, "update", "-c", str(path), "--json")
    assert run.code == 1, run.err
    doc = json.loads(run.out)
    assert set(doc) == {"schema", "file", "changed", "written", "axes", "warnings"}
    assert (doc["schema"], doc["file"], doc["changed"], doc["written"]) == (
        "multibake.update/v1",
        str(path),
        True,
        False,
    )
    assert doc["axes"] == [
        {
            "family": "base",
            "axis": "alpine",
            "source": f"{reg.host}/{ns}/alpine",
            "line": 11,
            "changed": True,
            "old": ["3.9", "3.10"],
            "new": ["3.10", "3.11"],
            "added": ["3.11"],
            "removed": ["3.9"],
            "missing": ["3.9"],
            "problem": None,
        },
        {
            "family": "base",
            "axis": "s6",
            "source": f"{reg.host}/{ns}/s6",
            "line": 13,
            "changed": False,
            "old": ["3.1.6.2", "3.2.0.2"],
            "new": ["3.1.6.2", "3.2.0.2"],
            "added": [],
            "removed": [],
            "missing": [],
            "problem": None,
        },
    ]
    assert doc["warnings"] == []


def test_excludes_naming_a_leaving_value_are_warned_about(tmp_path: Path, tag_registry: TagRegistry) -> None:
    reg = tag_registry
    path, ns, text = write(tmp_path, reg)
    path.write_text(text.replace("    tags:\n", '    exclude:\n      - {alpine: "3.9", variant: full}\n    tags:\n'))
    reg.push_tags(f"{ns}/alpine", "3.10", "3.11")
    reg.push_tags(f"{ns}/s6", "v3.1.6.2", "v3.2.0.2")
    run = multibake(reg, "update", "-c", str(path), "--write")
    assert run.code == 1, run.err
    assert run.err.splitlines() == [
        f"multibake: warning: {path}:18:18: images.base.exclude[0].alpine: names alpine '3.9', which the update "
        "removes from the matrix: the exclude would match fewer cells (none at all is an error); edit or remove it"
    ]
    assert '- {alpine: "3.9", variant: full}' in path.read_text()  # warned about, never edited
    invalid = multibake(reg, "validate", "-c", str(path))
    assert invalid.code == 2 and "exclude matches no cell of the matrix" in invalid.err


def test_a_repository_the_registry_does_not_have_is_one_line_and_exit_1(
    tmp_path: Path, tag_registry: TagRegistry
) -> None:
    reg = tag_registry
    path, ns, _ = write(tmp_path, reg)
    reg.push_tags(f"{ns}/s6", "v3.2.0.2")  # nothing pushed to alpine
    run = multibake(reg, "update", "-c", str(path))
    assert run.code == 1 and run.out == ""
    assert run.err.splitlines() == [
        f"multibake: error: listing the tags of {reg.host}/{ns}/alpine: HTTP 404 NAME_UNKNOWN: "
        "repository name not known to registry"
    ]


def test_wrong_credentials_are_one_line_without_the_secret(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    reg = _with_auth(request)  # the registry that takes credentials
    assert reg.credentials is not None
    path, ns, _ = write(tmp_path, reg)
    reg.push_tags(f"{ns}/alpine", "3.10")
    reg.push_tags(f"{ns}/s6", "v3.2.0.2")
    wrong = "not-the-password-4711"
    folder = tmp_path / "docker"
    folder.mkdir()
    token = base64.b64encode(f"{reg.credentials[0]}:{wrong}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    run = multibake(reg, "update", "-c", str(path), env={"DOCKER_CONFIG": str(folder)})
    assert run.code == 1
    assert run.err.splitlines()[-1].startswith(f"multibake: error: listing the tags of {reg.host}/{ns}/")
    assert "401" in run.err and wrong not in run.out + run.err


def test_an_unreachable_registry_fails_in_seconds_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "platforms.yaml"
    path.write_text(CONFIG.format(host="127.0.0.1:9", ns="nobody"))  # the discard port: connections are refused
    run = multibake(None, "update", "-c", str(path))
    assert run.code == 1 and run.out == ""
    assert run.err.splitlines()[-1].startswith("multibake: error: listing the tags of 127.0.0.1:9/nobody/")
    assert "cannot connect" in run.err
    assert run.seconds < 60, run.seconds


def test_the_shipped_rules_end_clearly_where_docker_hub_is_unreachable(tmp_path: Path) -> None:
    shipped = tmp_path / "platforms.yaml"
    shipped.write_text((ROOT / "platforms.yaml").read_text(encoding="utf-8"))  # a copy: never written to
    run = multibake(None, "update", "-c", str(shipped))
    assert run.code in (0, 1), run.err
    assert run.seconds < 120, run.seconds  # bounded timeouts and attempts, whatever the network does
    if run.out:  # Docker Hub answered: a proposal, one line per axis with a rule, and a summary
        assert len(run.out.splitlines()) >= 4 and "images.alpine-s6-overlay.matrix.alpine" in run.out
    else:
        assert run.code == 1
        assert run.err.splitlines()[-1].startswith("multibake: error: listing the tags of docker.io/library/")
