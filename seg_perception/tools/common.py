"""Helpers every seg-perception tool shares: a progress line, -p name:=value overrides read and
validated as the node reads them, sizes (WxH), and latency percentiles."""

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

def parse_param_overrides(items: Sequence[str]) -> Dict[str, object]:
    """['name:=value', ...] with values read as YAML like ``ros2 run ... -p`` reads them."""
    import yaml

    out: Dict[str, object] = {}
    for item in items or ():
        name, sep, text = item.partition(":=")
        if not sep or not name.strip():
            raise ValueError(f"parameter {item!r} must look like name:=value, e.g. grid.enabled:=false")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"cannot read the value of {item!r}: {exc}") from exc
        out[name.strip()] = value
    return out


ROS_PARAMETERS = ("use_sim_time",)  # every ROS 2 node's own


class ParameterError(ValueError):
    """A -p override the node would refuse: the command says why and exits 2 (cli.main)."""


def checked_overrides(items: Sequence[str]) -> list:
    """``items`` ('name:=value') unchanged once each is known and valid, as the node will check
    it: a tool that starts the node refuses a bad -p here, with the reason, instead of leaving
    it to the node's log. Each camera's own (C.image, C.camera_pose.xyz, ...) is checked as its
    node-wide twin."""
    from ..core.parameters import PER_CAMERA, SPEC_BY_NAME, check

    try:
        overrides = parse_param_overrides(items)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    for name, value in overrides.items():
        per_camera = "." in name and name.split(".", 1)[1] in PER_CAMERA
        if name not in SPEC_BY_NAME and name not in ROS_PARAMETERS and not per_camera:
            raise ParameterError(f"unknown parameter {name!r}; known: {', '.join(sorted(SPEC_BY_NAME))}")
        reason = check(name, value)
        if reason:
            raise ParameterError(f"invalid parameter: {reason}")
    return list(items)


def node_parameters(params_file: Optional[str], overrides: Dict[str, object]) -> Dict[str, object]:
    """The node's parameters: defaults, then the params file, then -p overrides; validated."""
    from ..core.parameters import SPEC_BY_NAME, check_all, default_parameters, load_parameters_file

    values = load_parameters_file(params_file) if params_file else default_parameters()
    for name, value in overrides.items():
        spec = SPEC_BY_NAME.get(name)
        if spec is None:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(sorted(SPEC_BY_NAME))}")
        values[name] = _coerce(name, value, spec.default)
    reason = check_all(values)
    if reason:
        raise ValueError(f"invalid parameter: {reason}")
    return values


def _coerce(name: str, value: object, default: object) -> object:
    bad = ValueError(f"parameter {name} expects a {type(default).__name__}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in value):
            raise bad
        return [float(v) for v in value]
    return "" if value is None else str(value)
