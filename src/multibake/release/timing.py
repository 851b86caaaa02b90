"""How long each step of a release took, so that a user sees where the time went without a profiler."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from multibake.kinds import Step


class Stopwatch:
    """Laps of a release's steps, measured from ``start`` (the command's start, else now).

    The one mutable helper of the pipeline: each ``lap`` gives the time since the previous one to a step.
    """

    __slots__ = ("_clock", "_laps", "_mark")

    def __init__(self, start: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mark = clock() if start is None else start
        self._laps: dict[Step, float] = {}

    def lap(self, step: Step) -> None:
        now = self._clock()
        self._laps[step] = self._laps.get(step, 0.0) + now - self._mark
        self._mark = now

    def steps(self, startup: float = 0.0) -> Mapping[Step, float]:
        """Every step measured, in pipeline order, ``startup`` (the process before the command) first."""
        laps = {Step.START: startup, **self._laps} if startup else self._laps
        return {step: round(laps[step], 3) for step in Step if step in laps}


def own_seconds(steps: Mapping[Step, float]) -> float:
    """What multibake added to bake: every step but the bake runs."""
    return round(sum(s for step, s in steps.items() if step is not Step.BAKE), 3)


def summary(steps: Mapping[Step, float]) -> str:
    """``start 0.21s · plan 0.04s · … · bake 12.3s · promote 0.08s · verify 0.05s``: where the time went."""
    return " · ".join(f"{step} {s:.2f}s" if s < 1 else f"{step} {s:.1f}s" for step, s in steps.items())
