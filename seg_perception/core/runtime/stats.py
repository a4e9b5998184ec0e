"""What the frame runtime counts, per camera and for the network, and the snapshot the node's
diagnostics (or a tool's summary) read: rates, drops, failures, latency, per-stage times, the
current problems. Thread-safe; levels are OK / WARN / ERROR strings (ROS maps them)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

OK, WARN, ERROR = "ok", "warn", "error"
_ORDER = {OK: 0, WARN: 1, ERROR: 2}


def worst(levels: List[str]) -> str:
    return max(levels, key=lambda lv: _ORDER.get(lv, 3)) if levels else OK


def percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


@dataclasses.dataclass
class Problem:
    """The latest problem of one kind (e.g. 'frame', 'model', 'grid', 'worker')."""
    level: str
    message: str
    when: float
    resolved: bool = False  # reported once more after it is resolved, so no error goes unseen


@dataclasses.dataclass(frozen=True)
class Window:
    """What happened since the last window was taken (a diagnostics period)."""
    input_rate: float
    processed_rate: float
    latencies: Tuple[float, ...]
    problems: Dict[str, Problem]

    @property
    def latency_p50(self) -> Optional[float]:
        return percentile(list(self.latencies), 50)

    @property
    def latency_max(self) -> Optional[float]:
        return max(self.latencies) if self.latencies else None


class Stats:
    """Counters the runtime's threads and the input callbacks update."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.failed = 0
        self.dropped = 0
        self._window_start = clock()
        self._win_received = 0
        self._win_processed = 0
        self._latencies: List[float] = []
        self._problems: Dict[str, Problem] = {}
        self.last_error = ""
        self.stage_ms: Dict[str, float] = {}  # median per stage over the last window with frames
        self._win_stages: Dict[str, List[float]] = {}

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
            self._win_received += 1

    def on_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def on_processed(self, latency_s: float, stages: Dict[str, float]) -> None:
        with self._lock:
            self.processed += 1
            self._win_processed += 1
            self._latencies.append(latency_s)
            for k, v in stages.items():
                self._win_stages.setdefault(k, []).append(v)

    def report(self, kind: str, level: str, message: str) -> None:
        with self._lock:
            self._problems[kind] = Problem(level, message, self._clock())
            if level == ERROR:
                self.failed += 1 if kind == "frame" else 0
                self.last_error = message

    def clear(self, kind: str) -> None:
        with self._lock:
            pr = self._problems.get(kind)
            if pr is not None:
                pr.resolved = True

    def problem(self, kind: str) -> Optional[Problem]:
        with self._lock:
            pr = self._problems.get(kind)
            return None if pr is None or pr.resolved else pr

    def window(self) -> Window:
        """Rates and latencies since the last call, and the problems still current (a resolved
        one is in this window once more, then gone)."""
        with self._lock:
            now = self._clock()
            dt = max(now - self._window_start, 1e-6)
            rates = (self._win_received / dt, self._win_processed / dt)
            lat = tuple(self._latencies)
            self._latencies = []
            if self._win_stages:
                self.stage_ms = {k: 1e3 * percentile(v, 50) for k, v in self._win_stages.items()}
                self._win_stages = {}
            self._window_start, self._win_received, self._win_processed = now, 0, 0
            problems = dict(self._problems)
            for kind, pr in problems.items():
                if pr.resolved:
                    del self._problems[kind]
            return Window(rates[0], rates[1], lat, problems)


class Throttle:
    """At most one log line per kind of event every ``period`` s (log_throttle_sec)."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = float(period)
        self._clock = clock
        self._last: Dict[str, float] = {}

    def due(self, kind: str) -> bool:
        now = self._clock()
        if now - self._last.get(kind, -1e18) < self.period:
            return False
        self._last[kind] = now
        return True
