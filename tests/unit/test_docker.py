"""The docker door without docker: what buildx prints, where the daemon and the plugin are, bake output streamed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from multibake import docker as door
from multibake.docker import Docker, DockerFailure
from multibake.dockerfacts import parse_inspect

MULTINODE = """Name:          multibake-multinode
Driver:        remote
Last Activity: 2026-12-06 21:33:05 +0000 UTC

Nodes:
Name:             amd64
Endpoint:         unix:///run/multibake/buildkitd-amd64.sock
Status:           running
BuildKit version: v0.34.2
Platforms:        linux/amd64*, linux/amd64/v2, linux/arm64, linux/arm/v7
Labels:
 org.mobyproject.buildkit.worker.executor:         oci
GC Policy rule#0:
 All:            false

Name:             arm
Endpoint:         unix:///run/multibake/buildkitd-arm.sock
Status:           running
BuildKit version: v0.34.2
Platforms:        linux/arm64*, linux/arm/v7*, linux/amd64
"""


def test_buildx_inspect_text_gives_the_builder_and_each_node() -> None:
    facts = parse_inspect(MULTINODE)
    assert (facts.name, facts.driver) == ("multibake-multinode", "remote")
    assert [n.name for n in facts.nodes] == ["amd64", "arm"]
    assert facts.nodes[0].endpoint == "unix:///run/multibake/buildkitd-amd64.sock"
    assert facts.nodes[0].platforms == ("linux/amd64*", "linux/amd64/v2", "linux/arm64", "linux/arm/v7")
    assert facts.nodes[1].platforms == ("linux/arm64*", "linux/arm/v7*", "linux/amd64")
    assert all(n.status == "running" for n in facts.nodes)


def test_a_builder_without_nodes_has_none() -> None:
    facts = parse_inspect("Name: x\nDriver: docker-container\n\nNodes:\n")
    assert (facts.name, facts.driver, facts.nodes) == ("x", "docker-container", ())


@pytest.mark.parametrize(
    ("env", "context", "socket"),
    [
        ({}, None, "/var/run/docker.sock"),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, None, "/run/user/1000/docker.sock"),
        ({"DOCKER_HOST": "tcp://10.0.0.2:2376"}, None, None),
        ({"DOCKER_CONTEXT": "remote"}, None, None),
        ({}, "remote", None),
        ({}, "default", "/var/run/docker.sock"),
    ],
)
def test_the_daemon_is_asked_over_its_socket_only_where_docker_would_use_it(
    env: dict[str, str], context: str | None, socket: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    if context is not None:
        (tmp_path / "config.json").write_text(f'{{"currentContext": "{context}"}}')
    assert door._socket() == socket


def test_the_buildx_plugin_is_found_in_the_config_folder_first(tmp_path: Path) -> None:
    plugin = tmp_path / "cli-plugins" / "docker-buildx"
    plugin.parent.mkdir()
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    assert door.buildx_plugin(tmp_path) == plugin
    assert Docker(config=tmp_path)._buildx() == [str(plugin)]


class Scripted(Docker):
    """A docker whose command is a python script: what it prints and how it exits."""

    @property
    def docker_cmd(self) -> list[str]:
        return [sys.executable, "-c"]


def test_a_bake_run_is_streamed_line_by_line_and_a_failure_keeps_its_output() -> None:
    script = "import sys; print('#1 one', flush=True); print('#2 ERROR: boom', file=sys.stderr); sys.exit(3)"
    run = door.streaming(Scripted())
    seen: list[str] = []
    with pytest.raises(DockerFailure) as failed:
        seen.extend(run(["docker", script]))
    # python-on-whales reads stdout and stderr on threads of their own: each in order, not with each other
    assert sorted(line.strip() for line in seen) == ["#1 one", "#2 ERROR: boom"]
    assert failed.value.return_code == 3 and "boom" in failed.value.stderr


def test_a_private_config_reaches_docker_and_the_plugin(tmp_path: Path) -> None:
    docker = door.with_config(door.client(), tmp_path)
    assert door.command(docker, ["docker", "login"]) == ["docker", "--config", str(tmp_path), "login"]
    assert docker.env()["DOCKER_CONFIG"] == str(tmp_path)
