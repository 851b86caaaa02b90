"""Pause the cyclic garbage collector while a pure stage builds many small objects.

Loading, planning and rendering a large matrix allocate hundreds of thousands of tuples, dicts and
strings that stay alive, and none of them forms a cycle; every automatic collection would walk all
of them again, which took half the planning time at 10,000 cells. When a stage returns, what it
made is moved out of the collector's sight (``gc.freeze``) and collection resumes; reference counting
still frees everything as usual.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def paused(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` runs with automatic collection off (restored afterwards, also when it raises)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            # what the stage made lives on without cycles: keep later collections from walking it again
            gc.freeze()
            if was:
                gc.enable()

    return wrapper
