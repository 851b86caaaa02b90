"""Registries of the tests' own for ``multibake gc``: deletes enabled, or not.

Debian's ``docker-registry`` (distribution 2.8) on a free port of 127.0.0.1, its storage in the test's
temporary folder, with ``storage.delete.enabled`` as asked. dockerd counts 127.0.0.0/8 among its
insecure registries, so the docker driver pushes to it over plain HTTP like to 127.0.0.1:5000; the
shared registry is never deleted from. Stopped, and its storage removed, when the block ends.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # 127.0.0.1:PORT
    config: Path  # its configuration file (what `docker-registry garbage-collect` reads)
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def config_text(storage: Path, host: str, *, deletes: bool) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: {str(deletes).lower()}\n"
        f"http:\n  addr: {host}\n"
    )


@contextlib.contextmanager
def start(folder: Path, *, deletes: bool = True) -> Iterator[LocalRegistry]:
    """Run a registry until the block ends; its process and storage are gone afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{_free_port()}"
    config = folder / "config.yml"
    config.write_text(config_text(folder / "storage", host, deletes=deletes))
    log = folder / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 30
            while not _up(host):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the registry did not start on {host}:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield LocalRegistry(host=host, config=config, log=log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(folder / "storage", ignore_errors=True)
