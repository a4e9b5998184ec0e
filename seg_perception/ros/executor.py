"""The rclpy executor that runs the node's callbacks (the ``executor`` parameter).

events: rclpy's EventsExecutor (rclpy.experimental, Jazzy 7.1.4 and newer), a C++ loop that costs
a fraction of the CPU per callback of SingleThreadedExecutor's Python wait-set loop (figures:
docs/measurements.md). single_threaded: SingleThreadedExecutor, on every distro (Humble has no
EventsExecutor)."""

from __future__ import annotations

import importlib
from typing import Tuple

EVENTS_MODULE = "rclpy.experimental.events_executor"


def events_executor_class():
    """rclpy's EventsExecutor, or the reason this rclpy has none."""
    try:
        return importlib.import_module(EVENTS_MODULE).EventsExecutor, ""
    except Exception as exc:  # ImportError on Humble; anything else: a broken install
        return None, f"this rclpy has no usable {EVENTS_MODULE} ({exc!r}; Jazzy 7.1.4 and newer have it)"


def executor_problem(choice: str) -> str:
    """Why ``choice`` cannot run here ("" when it can): checked at start, before any thread."""
    if choice != "events":
        return ""
    cls, why = events_executor_class()
    return "" if cls is not None else f"executor 'events': {why}; set executor to auto or single_threaded"


def make_executor(choice: str) -> Tuple[object, str]:
    """(the executor ``choice`` asks for, what runs and why): auto takes events where this
    rclpy has it, else single_threaded. Raises ValueError with the fix when events is asked
    for and missing."""
    from rclpy.executors import SingleThreadedExecutor

    if choice in ("auto", "events"):
        cls, why = events_executor_class()
        if cls is not None:
            return cls(), "events"
        if choice == "events":
            raise ValueError(executor_problem(choice))
        return SingleThreadedExecutor(), f"single_threaded ({why})"
    return SingleThreadedExecutor(), "single_threaded"
