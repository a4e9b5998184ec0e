"""Whether the grid may trust the camera model: the age of the newest CameraInfo, on a clock the
caller chooses (the node's monotonic clock, or a bag's recorded time), and what the grid's
status says when it is missing or stale. One object, so the node and process-bag agree."""

from __future__ import annotations

import time
from typing import Callable, Optional, Tuple

OK, WARN, ERROR = "ok", "warn", "error"


class CameraInfoWatch:
    """``timeout_s`` <= 0: a CameraInfo never goes stale. Times are seconds on ``clock``, or
    passed explicitly (``t``) where the caller has its own (recorded) time."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.last: Optional[float] = None

    def received(self, t: Optional[float] = None) -> None:
        self.last = self.clock() if t is None else float(t)

    def age(self, t: Optional[float] = None) -> Optional[float]:
        if self.last is None:
            return None
        return (self.clock() if t is None else float(t)) - self.last

    def fresh(self, t: Optional[float] = None) -> bool:
        age = self.age(t)
        return age is not None and (self.timeout_s <= 0 or age <= self.timeout_s)

    def grid_allowed(self, t: Optional[float] = None) -> bool:
        """The grid is computed from a fresh CameraInfo, and tried before the first one arrives
        (it then fails with the reason, which grid_status turns into 'never received')."""
        return self.last is None or self.fresh(t)

    def grid_status(self, grid_error: Optional[str], topic: str, t: Optional[float] = None
                    ) -> Tuple[str, str]:
        """(OK | WARN | ERROR, text) for the grid's diagnostics after a frame: a missing or stale
        CameraInfo is a WARN naming its topic and age, any other grid error an ERROR."""
        if grid_error is None:
            return OK, ""
        age = self.age(t)
        if age is None or not self.fresh(t):
            when = "never received" if age is None else f"last one {age:.1f} s ago"
            return WARN, f"no grid: CameraInfo on {topic} {when}"
        return ERROR, f"no grid: {grid_error}"
