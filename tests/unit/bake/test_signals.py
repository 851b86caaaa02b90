"""SIGTERM unwinds like Ctrl-C, and the processes multibake started are interrupted too (no docker)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from multibake.bake.invocation import _children, interrupt_children


def test_interrupt_children_reaches_children_and_grandchildren() -> None:
    # a shell (the child) running sleep in the foreground (the grandchild), as docker runs its buildx plugin
    child = subprocess.Popen(["sh", "-c", "sleep 60; sleep 60"])
    time.sleep(0.3)
    grandchildren = _children(child.pid)
    assert len(grandchildren) == 1
    interrupt_children()
    assert child.wait(timeout=10) == -signal.SIGINT


def test_sigterm_ends_the_cli_with_143_and_a_line_not_a_traceback() -> None:
    script = (
        "import time, typer\n"
        "from multibake.cli import app as cli\n"
        "@cli.app.command('sleepy')\n"
        "def sleepy() -> None:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "cli.main()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "sleepy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143
    assert err.strip() == "multibake: terminated"
