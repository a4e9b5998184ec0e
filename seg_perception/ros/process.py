"""camera_seg as a process: signals, the spin loop, the exit codes (0, 1 cannot start, 2 a
worker kept failing), shared by camera_seg_node and camera_seg_lifecycle_node."""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional

import rclpy
from rclpy.executors import ExternalShutdownException

from ..core.parameters import NODE_NAME
from .dds_profile import apply_default_profile
from .executor import make_executor

# a worker thread kept failing (core/runtime): exit non-zero, so that respawn starts a fresh process
EXIT_WORKER_FAILED = 2


class StopSignals:
    """SIGINT and SIGTERM ask the node to stop; more of them while it stops change nothing.

    rclpy's own handlers are off (rclpy.init with SignalHandlerOptions.NO): under ros2 launch in
    a terminal, Ctrl-C reaches the node twice (from the terminal and from launch), and a
    KeyboardInterrupt raised by the second one inside the shutdown aborted the process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.received is None:
            self.received = signum


def run_node(node_class, args=None) -> None:
    """Start ``node_class``, spin it until a signal, a fatal worker failure or (a managed node)
    the shutdown transition, then end the process."""
    from rclpy.signals import SignalHandlerOptions

    applied = apply_default_profile()  # before rclpy.init(): Fast DDS reads it at participant creation
    stop = StopSignals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    code = 0
    try:
        node = node_class()
        if applied:
            node.get_logger().info(f"Fast DDS profile: {applied} (set FASTRTPS_DEFAULT_PROFILES_FILE to use your own)")
        executor, what = make_executor(node.cfg.runtime.executor)
        node.get_logger().info(f"executor: {what}")
        executor.add_node(node)
        # short waits: a signal's Python handler runs between them
        while stop.received is None and node.fatal_error is None and not node.finished:
            executor.spin_once(timeout_sec=0.1)
        if node.fatal_error is not None:
            code = EXIT_WORKER_FAILED
    except ExternalShutdownException:
        pass
    except Exception as exc:  # invalid parameters at start: say why and exit non-zero
        rclpy.logging.get_logger(NODE_NAME).fatal(f"camera_seg cannot start: {exc}")
        code = 1
    finally:
        if node is not None and executor is not None:
            executor.remove_node(node)  # the executor lets go of the node's entities first
            executor.shutdown()
        if node is not None:
            if not node.shutdown(timeout=2.0):
                node.get_logger().warning("a worker thread did not stop within 2 s (a model still "
                                          "loading or a long inference); exiting without it")
            node.destroy_node()
        rclpy.try_shutdown()  # also flushes and closes ROS logging
    # Everything is shut down: end the process here. Interpreter finalization would put the
    # default signal handlers back (a Ctrl-C then kills the process by signal), and a worker
    # still inside native code (a model loading) can abort it ('terminate called ...').
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
