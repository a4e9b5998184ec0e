"""A node in a context of its own, spun on a background thread: the camera side of the demo and
the benchmarks. close() stops the spin thread before the context goes, so the process never
exits with a thread still inside rclpy (which aborts the interpreter)."""

from __future__ import annotations

import threading
from typing import Optional

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor


class Participant:
    def __init__(self, name: str, domain_id: Optional[int] = None) -> None:
        self.context = Context()
        # args=[]: not this process's command line (a tool's own "-p name:=value" would be read
        # as a remap rule of this participant)
        rclpy.init(args=[], context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under it
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> "Participant":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
