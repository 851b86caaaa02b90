"""How long one try of a registry request may wait for its answer: briefly while its registry answers quickly.

A registry (or a proxy before it) that drops a request without closing the connection leaves the
client waiting for its whole timeout (``retry.timeout``, 60 s by default) before the request can be
tried again. Publishing runs in rounds (read every tag, write the indexes, then the per-platform tags,
read everything back), so one such stall held up a whole round: at 20 % faults a release of three
cells spent most of half a minute waiting on a few stalled requests, while the registry answered
every other request in milliseconds.

So a try waits at most ``FACTOR`` times the slowest answer its host gave recently (at least
``FLOOR`` seconds), each later try of the same request twice as long as the one before, and never
longer than the client's own timeout. A registry that is slow across the board raises the bar with
its own answers; a host that has not answered yet gets the full timeout.
"""

from __future__ import annotations

import math
import threading
from collections import deque

FLOOR = 1.0  # seconds: the least a try waits, however fast its registry answered before
FACTOR = 10.0  # times the slowest recent answer
KEPT = 64  # recent answers remembered per host


class Patience:
    """The recent answer times of each host, shared by the threads of one release's registry client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}

    def answered(self, host: str, seconds: float) -> None:
        with self._lock:
            self._recent.setdefault(host, deque(maxlen=KEPT)).append(seconds)

    def timeout(self, host: str, attempt: int) -> float | None:
        """Seconds try ``attempt`` (1, 2, …) of a request to ``host`` may wait; None: the client's own timeout.

        Rounded up to a power of two, so a thread keeps a handful of clients, not one per value.
        """
        with self._lock:
            recent = self._recent.get(host)
            slowest = max(recent) if recent else None
        if slowest is None:
            return None
        wait = max(FLOOR, FACTOR * slowest) * 2 ** min(attempt - 1, 20)
        return float(2 ** math.ceil(math.log2(wait)))
