"""The unit-test guard itself: docker is refused, git and python still run."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from tests.unit.conftest import DockerCalledError, is_docker


@pytest.mark.parametrize(
    "cmd",
    [
        ["docker", "buildx", "version"],
        ("/usr/bin/docker", "info"),
        "docker buildx bake --print",
        "env DOCKER_HOST=x docker ps",
        b"/usr/local/bin/docker",
        ["/usr/local/lib/docker/cli-plugins/docker-buildx", "inspect"],
    ],
)
def test_is_docker(cmd: object) -> None:
    assert is_docker(cmd)


@pytest.mark.parametrize("cmd", [["git", "status"], ["python3", "-c", "1"], "dockerd-rootless-setup x", ["ls"], []])
def test_is_not_docker(cmd: object) -> None:
    assert not is_docker(cmd)


def test_subprocess_run_docker_refused() -> None:
    with pytest.raises(DockerCalledError):
        subprocess.run(["docker", "version"], check=False)


def test_popen_and_check_output_refused() -> None:
    with pytest.raises(DockerCalledError):
        subprocess.Popen(["/usr/bin/docker", "info"])
    with pytest.raises(DockerCalledError):
        subprocess.check_output("docker info", shell=True)
    with pytest.raises(DockerCalledError):
        subprocess.run(["anything"], executable="/usr/bin/docker", check=False)


def test_os_system_and_exec_refused() -> None:
    with pytest.raises(DockerCalledError):
        os.system("docker info")
    with pytest.raises(DockerCalledError):
        os.execvp("docker", ["docker", "info"])


def test_python_on_whales_refused() -> None:
    importlib.import_module("python_on_whales")
    from python_on_whales import DockerClient

    with pytest.raises(DockerCalledError):
        DockerClient().version()


def test_git_and_python_still_run() -> None:
    out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("git version")
    out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True)
    assert out.stdout == "42\n"
