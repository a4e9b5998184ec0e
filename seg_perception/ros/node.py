"""The camera_seg node: thin glue between ROS 2 and the frame runtime. The node keeps the
subscriptions, the publishers, the parameters and the diagnostics; what happens to a frame
between its callback and its messages is core/runtime's (threads, slots, batching, supervision)
and core/finish's (grid, surround grid, map). ros/process.py runs it as a process; the managed
variant is ros/lifecycle_node.py. The threads: docs/architecture.md.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ..core import resources
from ..core.camera_info_watch import OK as GRID_OK
from ..core.config import ConfigError, NodeConfig
from ..core.finish import Finisher, apply_config
from ..core.labels import MASK_GROUPS
from ..core.outputs import GRID_OUTPUT, IMAGE_OUTPUTS
from ..core.parameters import NODE_NAME, spec_of
from ..core.pipeline import build_camera_pipelines
from ..core.runtime.plan import plan_runs, runs_asked
from ..core.runtime.runtime import FrameRuntime
from ..core.runtime.stats import ERROR, WARN, Throttle
from . import diagnostics as diag
from .camera import Camera
from .conversions import frame_from_msg
from .executor import executor_problem
from .map_output import MapOutput
from .node_status import node_statuses
from .outputs import surround_grid_msg
from .parameters import declare_node_parameters, plain_value
from .process import run_node


class CameraSegBase(Node):
    """The node's parts in lifecycle phases: declared (parameters, diagnostics), configured
    (cameras, publishers, the frame runtime, the model), active (input subscriptions). The plain
    node (CameraSegNode) runs all of them at once; the managed one (ros/lifecycle_node.py) on
    lifecycle transitions."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.cfg: NodeConfig = declare_node_parameters(self)
        problem = executor_problem(self.cfg.runtime.executor)
        if problem:  # refused before any thread starts
            raise ValueError(problem)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.configured = self.active = False
        self.lifecycle_state = ""  # a managed node's state ("" for the plain node)
        self.finished = False  # a managed node was shut down: main() ends the process
        self.configure_error = ""  # why a managed node's last configure failed
        self.cameras: Dict[str, Camera] = {}
        self.runtime: Optional[FrameRuntime] = None
        self.finisher: Optional[Finisher] = None
        self.map: Optional[MapOutput] = None  # ~/drivable_map (map.enabled)
        self.surround_pub: Optional[Any] = None  # ~/drivable_grid of several cameras
        self.model_path = self.cfg.model.path or resources.DEFAULT_MODEL
        self.label_path = self.cfg.model.label_file or "the packaged label file of the model's classes"
        self.backend_text, self.backend_reason = "not loaded", ""
        self.empty_masks = "n/a: no model loaded"
        self.fatal_error: Optional[str] = None  # set when the node must exit (main() returns non-zero)
        self._throttle = Throttle(self.cfg.runtime.log_throttle_sec)
        self.tf = None         # ros/tf_pose.NodeTf: the TF buffer, when a setting reads TF
        self._pose_source = None  # core/pose_source.CameraPoseSource (camera_pose.source auto / tf)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # timers on the steady clock: diagnostics and the QoS check go on when /clock stops
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.cfg.runtime.input_reliability == "auto":
            self.create_timer(1.0, self._guarded(self._subscribe_inputs), clock=steady)
        self.create_timer(self.cfg.runtime.diagnostics_period, self._guarded(self._publish_diagnostics),
                          clock=steady)

    @property
    def multi(self) -> bool:
        return self.cfg.multi

    def _needs_tf(self) -> bool:
        """A TF buffer for the camera pose (auto or tf, with the grid on) or the map's pose."""
        return ((self.cfg.grid.enabled and self.cfg.camera("").pose.source != "parameters")
                or (self.cfg.map.enabled and self.cfg.map.pose_source == "tf"))

    def _make_publisher(self, msg_type, topic: str, qos):
        return self.create_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub) -> None:
        self.destroy_publisher(pub)

    # ---------------------------------------------------------------- lifecycle phases
    def _configure(self, load_now: bool) -> Optional[str]:
        """Cameras, publishers, input topics and the frame runtime; the model loaded now
        (``load_now``: the error text when it cannot) or by the runtime's first inference thread."""
        names = [c.name for c in self.cfg.cameras]
        self.cameras = {n: Camera(n) for n in names}
        self.backend_text, self.backend_reason = "not loaded", ""
        self.empty_masks = "n/a: no model loaded"
        self.runtime = FrameRuntime(names, runs_asked(self.cfg), decode=self._decode, wanted=self._wanted,
                                    deliver=self._deliver, log=self._log)
        self.runtime.on_fatal = self._fail
        self.runtime.stats.report("model", WARN, f"loading model {self.model_path}")
        self.configured = True  # from here on _cleanup can undo whatever follows
        self._create_publishers()
        if self._needs_tf() and self.tf is None:
            from .tf_pose import NodeTf

            self.tf = NodeTf(self)
        if self.cfg.map.enabled:
            self.map = MapOutput(self, self.cfg, self._make_publisher, self._log, self.tf)
        self._create_inputs()
        self.finisher = Finisher(names, self.cfg.grid, self.map.feed if self.map else None,
                                 self.map.pose_at if self.map else None)
        if not load_now:
            self.runtime.start(load=self._load)
            return None
        try:
            loaded = self._load()
        except Exception as exc:
            return f"model not loaded: {exc}"
        self.runtime.start(loaded=loaded)
        return None

    def _activate(self) -> None:
        self.active = True
        self._subscribe_inputs()
        if self.map is not None:
            self.map.subscribe()
        for cam in self.cameras.values():
            self.get_logger().info(
                f"subscribing {cam.image_topic} ({cam.transport}) and {cam.info_topic}; publishing "
                f"under {self.get_fully_qualified_name()}/{cam.ns}")
        if self.surround_pub is not None:
            self.get_logger().info(f"surround grid of {len(self.cameras)} cameras on "
                                   f"{self.get_fully_qualified_name()}/{GRID_OUTPUT}")

    def _deactivate(self) -> None:
        """No input, no output; the model stays loaded."""
        self.active = False
        for cam in self.cameras.values():
            cam.unsubscribe(self)
            if self.runtime is not None:
                self.runtime.discard_waiting(cam.name)  # no stale frame published after the next activate
        if self.map is not None:
            self.map.unsubscribe()

    def _cleanup(self) -> bool:
        """The runtime stopped, the model released, publishers gone; False when a worker did not stop."""
        if not self.configured:
            return True
        if not self.shutdown(timeout=5.0):
            self.get_logger().error("cleanup: a worker thread did not stop within 5 s")
            return False
        for cam in self.cameras.values():
            cam.unsubscribe(self)
            for pub in cam.pubs.values():
                self._drop_publisher(pub)
        if self.surround_pub is not None:
            self._drop_publisher(self.surround_pub)
            self.surround_pub = None
        if self.map is not None:
            self.map.destroy(self._drop_publisher)
        if self.tf is not None:
            self.tf.close()
        self.tf = self._pose_source = None
        self.cameras, self.runtime, self.finisher, self.map = {}, None, None, None
        self.configured = False
        return True

    def _create_publishers(self) -> None:
        """Every output reliable, depth 1 (RViz subscribes reliable by default; the newest wins)."""
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        for cam in self.cameras.values():
            cam.pubs = {name: self._make_publisher(Image, f"~/{cam.ns}{name}", out_qos) for name in IMAGE_OUTPUTS}
            if self.cfg.grid.enabled:
                cam.pubs[GRID_OUTPUT] = self._make_publisher(OccupancyGrid, f"~/{cam.ns}{GRID_OUTPUT}", out_qos)
        self.surround_pub = None
        if self.multi and self.cfg.grid.enabled:  # every camera's grid fused
            self.surround_pub = self._make_publisher(OccupancyGrid, f"~/{GRID_OUTPUT}", out_qos)

    def _create_inputs(self) -> None:
        """Each camera's topics (image_transport's naming) and the TF pose source."""
        for cam in self.cameras.values():
            cam.resolve_topics(self, self.cfg.camera(cam.name))
            self.runtime.lanes[cam.name].source = cam.image_topic  # named in bad-image errors
        source = self.cfg.camera("").pose.source
        if self.cfg.grid.enabled and source != "parameters":
            self._pose_source = self.tf.camera_pose_source(source, self.cfg.grid.frame_id)
            if self.tf.error:
                log = self.get_logger().error if source == "tf" else self.get_logger().warning
                log(f"camera_pose.source {source}: {self.tf.error}"
                    + ("" if source == "tf" else "; the grid takes camera_pose.xyz/rpy"))

    def _guarded(self, fn):
        """A timer or subscription callback that reports its errors instead of ending rclpy.spin
        (and the node)."""
        def call(*args) -> None:
            try:
                fn(*args)
            except Exception as exc:
                self._log("timer", "error", f"{fn.__name__} failed: {exc!r}")
        return call

    # ---------------------------------------------------------------- inputs
    def _subscribe_inputs(self) -> None:
        """(Re)create the input subscriptions with the reliability the parameter asks for
        (ros/camera.py: Camera.subscribe); none while inactive."""
        if not self.active:
            return
        for cam in self.cameras.values():
            cam.subscribe(self, self.cfg.runtime.input_reliability, self.cfg.runtime.input_depth,
                          lambda msg, c=cam: self._on_image(c, msg), lambda msg, c=cam: self._on_camera_info(c, msg))

    def _on_image(self, cam: Camera, msg) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        if cam.retiring and key == cam.last_image_key:
            return  # the same frame through the old and the new subscription while they overlap
        cam.last_image_key = key
        self.runtime.offer(cam.name, msg)

    def _on_camera_info(self, cam: Camera, msg: CameraInfo) -> None:
        cam.latest_info = (msg, time.monotonic())  # applied once the model has loaded
        pipeline = self.runtime.lanes[cam.name].pipeline
        if pipeline is not None and pipeline.grid is not None:
            pipeline.grid.set_camera_info(*cam.latest_info)  # never raises: a bad one is the grid's error

    # ---------------------------------------------------------------- parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        # the table's parameters; rclpy's own (use_sim_time) and the managed node's are not ours
        changes = {prm.name: plain_value(prm.value) for prm in params if spec_of(prm.name) is not None}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            cfg = self.cfg.changed(changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.cfg = cfg
        self._apply(cfg)
        return SetParametersResult(successful=True)

    def _apply(self, cfg: NodeConfig) -> None:
        """Every component from its part of the configuration (core/finish.apply_config; before
        the model loaded, the load applies the configuration of then)."""
        pipelines = dict(self.runtime.pipelines) if self.runtime is not None else {}
        apply_config(cfg, pipelines, self.finisher, self._throttle)

    # ---------------------------------------------------------------- model
    def _load(self):
        """The model and every camera's pipeline on it, and how it is run (core/runtime/plan.py);
        raises with the reason when it cannot load."""
        t0 = time.monotonic()
        try:
            pipelines = build_camera_pipelines(self.cfg, {c.name: c.info_topic for c in self.cameras.values()},
                                               progress=self._engine_progress, runs=runs_asked(self.cfg))
        except Exception as exc:
            self.runtime.stats.report("model", ERROR, f"model not loaded: {exc}")
            raise
        first = next(iter(pipelines.values()))
        segmenter = first.segmenter
        plan = plan_runs(self.cfg, segmenter, runs_asked(self.cfg))
        for warning in plan.warnings:
            self.get_logger().warning(warning)
        cv2.setNumThreads(plan.opencv_threads)
        for note in plan.notes:
            self.get_logger().info(note)
        backend = segmenter.backend
        self.backend_text, self.backend_reason = backend.describe(), backend.selection_reason
        self.label_path = first.label_path
        empty = [g for g in MASK_GROUPS if not first.groups.groups[g]]
        self.empty_masks = (f"{', '.join(empty)} (the label file names no class for the group)"
                            if empty else "none")
        if empty:
            self.get_logger().warning(f"always empty masks: {self.empty_masks} in {self.label_path} "
                                      "(Cityscapes' 19 train ids, for one, have no parking class)")
        info = segmenter.info
        grouped = {n for names in first.groups.groups.values() for n in names}
        ungrouped = [n for n in info.class_names if n not in grouped]
        self.get_logger().info(
            f"model {self.model_path}: {info.architecture or 'model'} {info.num_classes} classes, input "
            f"{info.input_width}x{info.input_height} ({info.fit}); backend {self.backend_text} "
            f"({self.backend_reason}); labels {self.label_path}"
            + (f" (in no group, so in no mask and unknown to the grid: {', '.join(ungrouped)})" if ungrouped else "")
            + f"; OpenCV threads {plan.opencv_threads}; loaded in {time.monotonic() - t0:.1f} s")
        for name, pl in pipelines.items():
            if pl.grid is not None:
                pl.grid.pose_source = self._pose_source  # None: the pose of the parameters
                latest = self.cameras[name].latest_info
                if latest is not None:  # what arrived while the model loaded
                    pl.grid.set_camera_info(*latest)
        apply_config(self.cfg, pipelines)  # what changed while the model loaded (an engine build takes minutes)
        return pipelines, plan

    def _engine_progress(self, text: str) -> None:
        self._log("engine", "info", f"TensorRT engine: {text}")
        self.runtime.stats.report("model", WARN, f"building TensorRT engine: {text}")

    # ---------------------------------------------------------------- the runtime's callbacks
    def _decode(self, camera: str, msg, timer):
        return frame_from_msg(msg, timer)

    def _wanted(self, camera: str) -> List[str]:
        """The outputs somebody subscribes to (the grid also for the surround grid and the map)."""
        cam = self.cameras[camera]
        wanted = [name for name, pub in cam.pubs.items() if pub.get_subscription_count() > 0]
        if GRID_OUTPUT not in wanted and self.cfg.grid.enabled and (
                (self.surround_pub is not None and self.surround_pub.get_subscription_count() > 0)
                or (self.map is not None and self.map.pub.get_subscription_count() > 0)):
            wanted.append(GRID_OUTPUT)
        return wanted

    def _deliver(self, camera: str, result, wanted: List[str], t_received: float) -> None:
        """The output stage (the runtime's output thread): the after-inference step, then each
        wanted message published as soon as it is built."""
        cam = self.cameras[camera]
        outcome = self.finisher.finish(camera, result, wanted)
        cam.messages.build(outcome, wanted, publish=lambda name, msg: cam.pubs[name].publish(msg)
                           if cam.pubs[name].get_subscription_count() > 0 else None)
        lane = self.runtime.lanes[camera]
        if outcome.grid is not None:
            if outcome.grid.state == GRID_OK:
                lane.stats.clear("grid")
            else:
                lane.stats.report("grid", WARN if outcome.grid.state == "warn" else ERROR, outcome.grid.status)
                self._log(f"grid:{camera}", outcome.grid.state, lane.label(outcome.grid.status))
        if outcome.surround is not None and self.surround_pub.get_subscription_count() > 0:
            self.surround_pub.publish(surround_grid_msg(outcome))
        if self.map is not None:
            self.map.on_outcome(outcome.map)

    def _fail(self, text: str, trace: str) -> None:
        """The runtime gave up (a worker kept failing): diagnostics now, then main() exits with
        EXIT_WORKER_FAILED so that respawn starts a fresh process."""
        from .process import EXIT_WORKER_FAILED

        try:
            self._publish_diagnostics()
        except Exception:
            pass  # exiting anyway; the log says why
        self.get_logger().fatal(f"{text}; exiting with code {EXIT_WORKER_FAILED}\n{trace}")
        self.fatal_error = text

    # ---------------------------------------------------------------- diagnostics and logs
    def _log(self, kind: str, level: str, text: str) -> None:
        """At most one line per kind per log_throttle_sec. One call site per severity: rclpy
        refuses a call site whose severity changes between calls (ValueError)."""
        if not self._throttle.due(kind):
            return
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warn":
            logger.warning(text)
        else:
            logger.info(text)

    def _publish_diagnostics(self) -> None:
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), node_statuses(self)))

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Stop the runtime's threads; True when all of them ended within timeout (in total)."""
        if not self.configured or self.runtime is None:
            return True
        return self.runtime.close(timeout)


class CameraSegNode(CameraSegBase):
    """The plain node: configured and active from the start (the model loads on the inference
    thread while the node already answers, with diagnostics saying so)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._configure(load_now=False)
        self._activate()


def main(args=None) -> None:
    """The camera_seg_node process; ends it with exit code 0, 1 (cannot start) or 2 (a worker
    thread kept failing)."""
    run_node(CameraSegNode, args)


if __name__ == "__main__":
    main()
