"""Helpers every seg-perception tool shares: a progress line, the node's configuration from a
params file and -p name:=value overrides (core/config.py, as the node reads them), sizes (WxH),
and latency percentiles."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Dict, Optional, Sequence, TextIO, Tuple

import numpy as np


def parse_size(text: str, order: str = "WxH") -> Tuple[int, int]:
    """'1920x1080' -> (1920, 1080): the two positive numbers in the order named (WxH for camera
    frames, HxW for model inputs); ValueError saying what was expected."""
    try:
        a, b = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        names = {"W": "WIDTH", "H": "HEIGHT"}
        raise ValueError(f"size {text!r} is not {'x'.join(names[c] for c in order.split('x'))}") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return a, b


def size_argument(order: str = "WxH"):
    """``parse_size`` as an argparse type."""
    def parse(text: str) -> Tuple[int, int]:
        try:
            return parse_size(text, order)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def percentiles_ms(seconds: Sequence[float]) -> Dict[str, float]:
    """median / p90 / p99 / mean in ms of durations in seconds (numpy's linear interpolation)."""
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


# ----------------------------------------------------------------------------- progress

class Progress:
    """One progress line on stderr: done/total, rate and ETA. On a terminal the line is
    rewritten in place (at most 10 times a second); elsewhere (logs, CI) a line every 10 %."""

    def __init__(self, total: int, unit: str = "frames", label: str = "", stream: Optional[TextIO] = None,
                 enabled: bool = True) -> None:
        self.total = max(0, int(total))
        self.unit = unit
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.done = 0
        self._last_draw = 0.0
        self._last_decile = -1

    def line(self, done: int, now: Optional[float] = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self.start)
        rate = done / elapsed
        width = 24
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        eta = (self.total - done) / rate if rate > 0 and self.total else float("nan")
        eta_text = "--" if math.isnan(eta) else _duration(eta)
        label = f"{self.label} " if self.label else ""
        return (f"{label}[{bar}] {done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  "
                f"ETA {eta_text}  elapsed {_duration(elapsed)}")

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1 or done == self.total:
                self._last_draw = now
                self.stream.write("\r" + self.line(done, now) + "\x1b[K")
                self.stream.flush()
        else:
            decile = int(10 * done / self.total) if self.total else 10
            if decile != self._last_decile and decile < 10:
                self._last_decile = decile
                self.stream.write(self.line(done, now) + "\n")
                self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + self.line(self.done) + ("\x1b[K\n" if self.tty else "\n"))
            self.stream.flush()

    def abort(self) -> None:
        if self.enabled and self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d} min" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d} h"


# ----------------------------------------------------------------------------- parameters

class ParameterError(ValueError):
    """A parameter the node would refuse: the command says why and exits 2 (cli.main)."""


def node_config(params_file: Optional[str] = None, overrides: Sequence[str] = ()):
    """The node's configuration as the node would take it: defaults, the params file, then the
    ``-p name:=value`` overrides (core/config.NodeConfig.load, the one parser); ParameterError
    with the reason for a bad one."""
    from ...core.config import ConfigError, NodeConfig

    try:
        return NodeConfig.load(params_file, list(overrides or ()))
    except ConfigError as exc:
        raise ParameterError(str(exc)) from None


def checked_overrides(items: Sequence[str], params_file: Optional[str] = None) -> list:
    """``items`` ('name:=value') unchanged once they are valid with ``params_file``, as the node
    will check them: a tool that starts the node refuses a bad -p here, with the reason,
    instead of leaving it to the node's log."""
    node_config(params_file, items)
    return list(items)
