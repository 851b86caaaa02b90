"""A real browser for the tests: Debian's headless Chromium, driven over the DevTools protocol.

No browser download and no Node.js: ``chromium`` is Debian's package (scripts/setup-stack.sh
--browser installs it), started with its DevTools endpoint on a port of 127.0.0.1 that it picks
itself (``--remote-debugging-port=0``, read back from ``DevToolsActivePort``), and spoken to over one
WebSocket (websocket-client). Background networking (updates, safe browsing, metrics) is off: the page
under test is a local file and must need nothing else, which ``requests_made`` lets a test check.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websocket

FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)


def executable() -> str | None:
    """Debian's chromium (or $PATH's), None when there is none."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One tab: navigate, evaluate JavaScript in the page, take screenshots."""

    def __init__(self, url: str, timeout: float) -> None:
        self._ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self._next = 0
        self.requests_made: list[str] = []  # every URL the page asked for, the page itself included
        self.call("Page.enable")
        self.call("Network.enable")

    def close(self) -> None:
        self._ws.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive first are noted or dropped)."""
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = self._event()
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def _event(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self._ws.recv())
        if message.get("method") == "Network.requestWillBeSent":
            self.requests_made.append(str(message["params"]["request"]["url"]))
        return message

    def open(self, url: str, *, width: int = 1400, height: int = 900, timeout: float = 30.0) -> None:
        """Load ``url`` in a ``width`` by ``height`` viewport and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._event().get("method") == "Page.loadEventFired":
                return
        raise TimeoutError(f"{url} did not load within {timeout:.0f} s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression[:80]}: {got['exceptionDetails'].get('text')}")
        return got["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG (beyond the viewport)."""
        got = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(got["data"]))
        return path


@contextlib.contextmanager
def chromium(timeout: float = 30.0) -> Iterator[Page]:
    """A headless Chromium with one page; the process and its profile are removed at the end."""
    binary = executable()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (scripts/setup-stack.sh --browser installs Debian's)")
    profile = Path(tempfile.mkdtemp(prefix="multibake-chromium-"))
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    page: Page | None = None
    try:
        port = _port(profile / "DevToolsActivePort", proc, timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as resp:
            targets = json.loads(resp.read())
        tab = next(t for t in targets if t.get("type") == "page")
        page = Page(str(tab["webSocketDebuggerUrl"]), timeout)
        yield page
    finally:
        if page is not None:
            page.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _port(active: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The DevTools port Chromium chose, once it has written it down."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before its DevTools endpoint was up")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(active.read_text(encoding="utf-8").splitlines()[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium wrote no {active.name} within {timeout:.0f} s")
