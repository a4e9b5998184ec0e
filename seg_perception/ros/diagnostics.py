"""Diagnostics for the node: rates, drops, latency and the last error, as diagnostic_msgs."""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Problem:
    """The latest problem of one kind (e.g. 'image', 'model', 'grid'), with its level."""

    __slots__ = ("level", "message", "when", "resolved")

    def __init__(self, level: bytes, message: str, when: float) -> None:
        self.level, self.message, self.when = level, message, when
        self.resolved = False  # reported once more after it is resolved, so no error goes unseen


class NodeStats:
    """Thread-safe counters the worker and callbacks update and the diagnostics timer reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.failed = 0
        self.dropped = 0
        self._window_start = time.monotonic()
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

    def report(self, kind: str, level: bytes, message: str) -> None:
        with self._lock:
            self._problems[kind] = Problem(level, message, time.monotonic())
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

    def window(self) -> Tuple[float, float, List[float], Dict[str, Problem]]:
        """(input rate, processed rate, latencies) since the last call; problems still current."""
        with self._lock:
            now = time.monotonic()
            dt = max(now - self._window_start, 1e-6)
            rates = (self._win_received / dt, self._win_processed / dt)
            lat = self._latencies
            self._latencies = []
            if self._win_stages:
                self.stage_ms = {k: 1e3 * percentile(v, 50) for k, v in self._win_stages.items()}
                self._win_stages = {}
            self._window_start, self._win_received, self._win_processed = now, 0, 0
            problems = dict(self._problems)
            for kind, pr in problems.items():
                if pr.resolved:
                    del self._problems[kind]
            return rates[0], rates[1], lat, problems


def make_status(name: str, hardware_id: str, level: bytes, message: str,
                values: Dict[str, object]) -> DiagnosticStatus:
    st = DiagnosticStatus()
    st.name, st.hardware_id, st.level, st.message = name, hardware_id, level, message
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return st


def make_array(stamp, statuses: List[DiagnosticStatus]) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = statuses
    return arr


def worst(levels: List[bytes]) -> bytes:
    order = {OK: 0, WARN: 1, ERROR: 2}
    return max(levels, key=lambda lv: order.get(lv, 3)) if levels else OK


def percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]
