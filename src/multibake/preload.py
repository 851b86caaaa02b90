"""Import, on one background thread, what a later step needs, while the main thread waits on a subprocess.

A release's start-up is mostly imports, and the libraries that only later steps use are heavy:
python-on-whales (which runs bake) takes a fifth of a second, the registry's HTTP stack and tenacity
(which promote and verify use) a tenth. Python runs one thread at a time, so importing them in the
background while the main thread still imports or plans gains nothing; they are queued when the main
thread is about to wait (on the builder's answers, then on bake), and imported in the order queued.
A module the main thread asks for meanwhile is simply waited for (Python's import lock), never
imported twice.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import threading

_queue: queue.SimpleQueue[str] = queue.SimpleQueue()
_worker: list[threading.Thread] = []
_lock = threading.Lock()


def later(*modules: str) -> None:
    """Queue ``modules`` for import on the background thread (started at the first call)."""
    for name in modules:
        _queue.put(name)
    with _lock:
        if not _worker:
            _worker.append(threading.Thread(target=_import_queued, name="multibake-preload", daemon=True))
            _worker[0].start()


def _import_queued() -> None:
    while True:
        name = _queue.get()
        # a module that fails to import is left out of sys.modules: the main thread's own import of it
        # fails again where it is used, with the error said there (never a thread's traceback here)
        with contextlib.suppress(Exception):
            importlib.import_module(name)
