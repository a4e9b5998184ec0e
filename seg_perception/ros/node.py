"""The camera_seg node: thin glue between ROS 2 topics and the core pipeline. This file holds
the node's phases (parameters, configure/activate/deactivate/cleanup, inputs, model, logs);
ros/frame_path.py the worker threads a frame travels through; ros/process.py the process.

Threads, each handing the newest item to the next through a one-slot mailbox (a waiting item
that a newer one replaces is dropped and counted, so there is never a backlog of stale frames):
  executor     subscription callbacks (they only keep the newest frame), timers, diagnostics
  prepare      decode and resize the newest frame to the model's input just before the network
               is free (while it runs the previous one), so it never waits for preprocessing
  inference    loads the model, then runs the network on the newest prepared frame (several
               cameras on a CPU: several inference threads on the one model, inference_workers)
  outputs      builds and publishes the outputs of the newest inferred frame (at a lower CPU
               priority, output_niceness, so on few cores it fills the network's gaps, where
               the network leaves a core: core/threads.output_niceness)
"""

from __future__ import annotations

import threading
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
from ..core.faults import worker_fault_from_env
from ..core.labels import MASK_GROUPS
from ..core.latest import BusyClocks, LatestPerKey, LatestSlot
from ..core.parameters import POSE_PARAMETERS, camera_view, check_update
from ..core.pipeline import (IMAGE_OUTPUTS, GRID_OUTPUT, SegmentationPipeline, batch_limit, batch_note,
                             build_camera_pipelines, runs_asked)
from ..core.surround import SurroundGrid
from ..core.threads import opencv_threads, output_niceness, runs_at_once
from . import diagnostics as diag
from .camera import Camera
from .executor import executor_problem
from .frame_path import FramePath
from .map_output import MapOutput
from .node_status import node_statuses
from .parameters import declare_node_parameters, plain_value
from ..core.parameters import NODE_NAME
from .process import run_node


class CameraSegBase(FramePath, Node):
    """The node's parts in lifecycle phases: declared (parameters, diagnostics), configured
    (cameras, publishers, workers, the model), active (input subscriptions). The plain node
    (CameraSegNode) runs all of them at once; the managed one (ros/lifecycle_node.py) on
    lifecycle transitions."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare_node_parameters(self)
        problem = executor_problem(self.p["executor"])
        if problem:  # refused before any thread starts
            raise ValueError(problem)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.multi = bool(self.p["cameras"])
        self.configured = self.active = False
        self.lifecycle_state = ""  # a managed node's state ("" for the plain node)
        self.finished = False  # a managed node was shut down: main() ends the process
        self.configure_error = ""  # why a managed node's last configure failed
        self.stats = diag.NodeStats()  # the node's (and the single camera's) counters and problems
        self.cameras: Dict[str, Camera] = {}
        self.surround: Optional[SurroundGrid] = None
        self.map: Optional[MapOutput] = None  # ~/drivable_map (map.enabled)
        self.pipeline: Optional[SegmentationPipeline] = None  # the first camera's (model, info)
        self.model_path = self.p["model"] or resources.DEFAULT_MODEL
        self.label_path = self.p["label_file"] or "the packaged label file of the model's classes"
        self.fatal_error: Optional[str] = None  # set when the node must exit (main() returns non-zero)
        self._last_log: Dict[str, float] = {}
        self._idle = False
        self._tf_pose = None
        self._threads: List[threading.Thread] = []
        # made by _configure, declared here so that no phase meets a member that is not there
        self._frame_arrived = threading.Event()  # any camera's slot got a frame
        self.pubs: Dict[str, Any] = {}  # the single camera's publishers
        self.surround_pub: Optional[Any] = None  # ~/drivable_grid of several cameras
        self.backend_text, self.backend_reason = "not loaded", ""
        self.empty_masks = "n/a: no model loaded"
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # timers on the steady clock: diagnostics and the QoS check go on when /clock stops
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.p["input_qos.reliability"] == "auto":
            self.create_timer(1.0, self._guarded(self._subscribe_inputs), clock=steady)
        self.create_timer(self.p["diagnostics_period"], self._guarded(self._publish_diagnostics), clock=steady)

    def _make_publisher(self, msg_type, topic: str, qos):
        return self.create_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub) -> None:
        self.destroy_publisher(pub)

    # ---------------------------------------------------------------- lifecycle phases
    def _configure(self, load_now: bool) -> Optional[str]:
        """Cameras, publishers, input topics and workers; the model loaded now (``load_now``:
        the error text when it cannot) or by the inference thread."""
        names = list(self.p["cameras"]) or [""]
        self.stats = diag.NodeStats()
        self.cameras = {n: Camera(n, self.stats if n == "" else diag.NodeStats()) for n in names}
        self._frame_arrived = threading.Event()  # any camera's slot got a frame
        self.backend_text, self.backend_reason = "not loaded", ""
        self.empty_masks = "n/a: no model loaded"
        self._create_workers()  # first: from here on _cleanup can undo whatever follows
        self.configured = True
        self._create_publishers()
        if self.p["map.enabled"]:
            self.map = MapOutput(self, self.p, self._make_publisher, self._log)
        self._create_inputs()
        if load_now:
            self._load_model()
            if self.pipeline is None:
                pr = self.stats.problem("model")
                return pr.message if pr else "model not loaded"
        for thread in self._threads:
            thread.start()
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
        if self.surround is not None:
            self.get_logger().info(f"surround grid of {len(self.cameras)} cameras on "
                                   f"{self.get_fully_qualified_name()}/{GRID_OUTPUT}")

    def _deactivate(self) -> None:
        """No input, no output; the model stays loaded."""
        self.active = False
        for cam in self.cameras.values():
            cam.unsubscribe(self)
            cam.slot.get(timeout=0)  # no stale frame published (or mapped) after the next activate
        if self.map is not None:
            self.map.unsubscribe()

    def _cleanup(self) -> bool:
        """Workers stopped, the model released, publishers gone; False when a worker did not stop."""
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
        self.cameras, self.surround, self.pipeline, self._threads, self.map = {}, None, None, [], None
        self.configured = False
        return True

    def _create_publishers(self) -> None:
        """Every output reliable, depth 1 (RViz subscribes reliable by default; the newest wins)."""
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        for cam in self.cameras.values():
            cam.pubs = {name: self._make_publisher(Image, f"~/{cam.ns}{name}", out_qos) for name in IMAGE_OUTPUTS}
            if self.p["grid.enabled"]:
                cam.pubs[GRID_OUTPUT] = self._make_publisher(OccupancyGrid, f"~/{cam.ns}{GRID_OUTPUT}", out_qos)
        self.pubs = self.cameras[next(iter(self.cameras))].pubs  # the single camera's
        self.surround, self.surround_pub = None, None
        if self.multi and self.p["grid.enabled"]:  # every camera's grid fused
            self.surround = SurroundGrid(list(self.cameras), self.p["grid.max_spread"])
            self.surround_pub = self._make_publisher(OccupancyGrid, f"~/{GRID_OUTPUT}", out_qos)

    def _create_inputs(self) -> None:
        """Each camera's topics (image_transport's naming) and the TF pose source."""
        for cam in self.cameras.values():
            cam.resolve_topics(self, camera_view(self.p, cam.name))
        first = self.cameras[next(iter(self.cameras))]
        self.image_topic, self.info_topic = first.image_topic, first.info_topic  # the single camera's
        if self._tf_pose is None and self.p["grid.enabled"] and self.p["camera_pose.source"] == "tf":
            from .tf_pose import TfPose

            self._tf_pose = TfPose(self, self.p["grid.frame_id"])
            if self._tf_pose.error:
                self.get_logger().error(self._tf_pose.error)

    def _create_workers(self) -> None:
        """newest camera frame -> prepare -> newest prepared frame -> inference -> newest
        inferred frame -> outputs, each hand-over a one-slot mailbox."""
        self.slot = self.cameras[next(iter(self.cameras))].slot  # the single camera's
        # a batch: [(camera, prepared frame, receive time)], one frame per camera; a dropped
        # batch gives its input buffers back
        self.ready_slot = LatestSlot(on_drop=self._drop_batch)
        self.out_slot = LatestPerKey()  # each camera's newest result: one camera never drops another's
        self.batch_limit = 1  # frames per network run (core/pipeline.batch_limit), set at load
        # network runs at once: as many inference threads as the parameters ask for are made
        # here; those beyond what the backend allows (set at load) end once it has loaded
        self._workers_asked = runs_asked(self.p)
        self.inference_workers = 1
        self.output_niceness = 0  # of the output thread (core/threads.output_niceness), set at load
        self.network_runs = self.network_frames = 0  # batches run, frames in them
        self._count_lock = threading.Lock()  # for those two: several inference threads count
        self._model_done = threading.Event()  # the model loaded, or failed to
        self._network = BusyClocks(1)  # when the network will want its next frame (set at load)
        self._busy_mark = (time.monotonic(), 0.0)  # (when, network busy seconds) at the last diagnostics
        self._prepare_s: Optional[float] = None  # smoothed seconds to prepare one batch
        self.stats.report("model", diag.WARN, f"loading model {self.model_path}")
        self._worker_restarts = 0
        self._worker_fault = worker_fault_from_env()  # tests only: None unless the env var is set
        workers = [("inference", self._work)] + [
            (f"inference_{i + 1}", lambda i=i: self._work(i)) for i in range(1, self._workers_asked)]
        self._threads = [threading.Thread(target=self._supervised(name, fn), name=f"camera_seg_{name}",
                                          daemon=True)
                         for name, fn in workers + [("prepare", self._prepare_frames),
                                                    ("outputs", self._publish_outputs)]]

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
            cam.subscribe(self, self.p["input_qos.reliability"], self.p["input_qos.depth"],
                          lambda msg, c=cam: self._on_image(c, msg), lambda msg, c=cam: self._on_camera_info(c, msg))

    # ---------------------------------------------------------------- parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {prm.name: plain_value(prm.value) for prm in params}
        reason, merged = check_update(self.p, changes)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self.p = merged
        self._apply_runtime_parameters(merged, any(n.endswith(POSE_PARAMETERS) for n in changes))
        return SetParametersResult(successful=True)

    def _apply_runtime_parameters(self, p: Dict[str, object], pose_changed: bool) -> None:
        for cam in self.cameras.values():  # before the model loaded: the worker applies self.p then
            if cam.pipeline is not None:
                cam.pipeline.apply_parameters(camera_view(p, cam.name), pose_changed)
        if self.surround is not None:
            self.surround.max_spread_s = float(p["grid.max_spread"])
        if self.map is not None:
            self.map.apply_parameters(p)

    # ---------------------------------------------------------------- model
    def _load(self) -> None:
        t0 = time.monotonic()
        pipelines = build_camera_pipelines(self.p, {c.name: c.info_topic for c in self.cameras.values()},
                                           progress=self._engine_progress)
        for pl in pipelines.values():
            if pl.grid is not None:
                pl.grid.pose_source = self._tf_pose  # None: the pose of the parameters
        pipeline = pipelines[next(iter(pipelines))]
        segmenter = pipeline.segmenter
        backend = segmenter.backend
        workers, warning = runs_at_once(self._workers_asked, self.p["inference_workers"] > 0,
                                        backend.concurrent_runs, backend.device)
        if warning:
            self.get_logger().warning(warning)
        cv_threads = opencv_threads(backend.device, self.p["num_threads"], workers)
        cv2.setNumThreads(cv_threads)
        self.output_niceness = output_niceness(self.p["output_niceness"], backend.device,
                                               self.p["num_threads"], workers)
        if self.output_niceness != self.p["output_niceness"]:
            self.get_logger().info(
                f"output thread at niceness 0, not output_niceness {self.p['output_niceness']}: the "
                f"network's threads ({workers} run{'s' if workers > 1 else ''} at once) take every "
                "core, there are no gaps for the outputs to fill")
        self.backend_text = backend.describe()
        self.backend_reason = backend.selection_reason
        self.batch_limit = batch_limit(self.p, segmenter, workers)
        self.inference_workers, self._network = workers, BusyClocks(workers)
        if self.multi:
            self.get_logger().info(
                f"{len(self.cameras)} cameras on one network, up to {self.batch_limit} "
                f"frame{'s' if self.batch_limit > 1 else ''} per run, "
                f"{workers} run{'s' if workers > 1 else ''} at once"
                + batch_note(self.p, segmenter, workers))
        info = segmenter.info
        self.label_path = pipeline.label_path
        empty = [g for g in MASK_GROUPS if not pipeline.groups.groups[g]]
        self.empty_masks = (f"{', '.join(empty)} (the label file names no class for the group)"
                            if empty else "none")
        if empty:
            self.get_logger().warning(f"always empty masks: {self.empty_masks} in {self.label_path} "
                                      "(Cityscapes' 19 train ids, for one, have no parking class)")
        grouped = {n for names in pipeline.groups.groups.values() for n in names}
        ungrouped = [n for n in info.class_names if n not in grouped]
        self.get_logger().info(
            f"model {self.model_path}: {info.architecture or 'model'} {info.num_classes} classes, input "
            f"{info.input_width}x{info.input_height} ({info.fit}); backend {self.backend_text} "
            f"({self.backend_reason}); labels {self.label_path}"
            + (f" (in no group, so in no mask and unknown to the grid: {', '.join(ungrouped)})" if ungrouped else "")
            + f"; OpenCV threads {cv_threads}; "
            f"loaded in {time.monotonic() - t0:.1f} s")
        for name, pl in pipelines.items():
            self.cameras[name].pipeline = pl
        self.pipeline = pipeline  # last: the other threads use it once it is set

    def _engine_progress(self, text: str) -> None:
        self._log("engine", "info", f"TensorRT engine: {text}")
        self.stats.report("model", diag.WARN, f"building TensorRT engine: {text}")

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, cam: Camera, msg) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        if cam.retiring and key == cam.last_image_key:
            return  # the same frame through the old and the new subscription while they overlap
        cam.last_image_key = key
        cam.stats.on_received()
        now = time.monotonic()
        if not cam.slot.occupied:
            cam.waiting_since = now
        if cam.slot.put((msg, now)):
            cam.stats.on_dropped()
        self._frame_arrived.set()

    def _on_camera_info(self, cam: Camera, msg: CameraInfo) -> None:
        cam.latest_info = (msg, time.monotonic())  # the worker applies it when the model has loaded
        pipeline = cam.pipeline
        if pipeline is not None and pipeline.grid is not None:
            pipeline.grid.set_camera_info(*cam.latest_info)  # never raises: a bad one is the grid's error

    # ---------------------------------------------------------------- model (the worker loads it)
    def _load_model(self) -> None:
        try:
            self._load()
            self.stats.clear("model")
            # what changed while the model loaded (an engine build can take minutes)
            self._apply_runtime_parameters(self.p, pose_changed=True)
            for cam in self.cameras.values():
                if cam.latest_info is not None and cam.pipeline.grid is not None:
                    cam.pipeline.grid.set_camera_info(*cam.latest_info)
        except Exception as exc:  # missing/corrupt model, bad label file: keep running, report
            self.stats.report("model", diag.ERROR, f"model not loaded: {exc}")
            self.get_logger().error(f"model not loaded, the node will publish nothing: {exc}")
        finally:
            self._model_done.set()

    # ---------------------------------------------------------------- diagnostics and logs
    def _frame_error(self, cam: Camera, log_kind: str, text: str) -> None:
        """A frame that produced nothing: diagnostics ERROR and a throttled error log line."""
        cam.stats.report("frame", diag.ERROR, text)
        self._log(f"{log_kind}:{cam.name}", "error", cam.label(text))

    def _log(self, kind: str, level: str, text: str) -> None:
        """At most one line per kind per log_throttle_sec. One call site per severity: rclpy
        refuses a call site whose severity changes between calls (ValueError)."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) < self.p["log_throttle_sec"]:
            return
        self._last_log[kind] = now
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
        """Stop the workers; True when all of them ended within timeout (in total)."""
        if not self.configured:
            return True
        for slot in [c.slot for c in self.cameras.values()] + [self.ready_slot, self.out_slot]:
            slot.close()
        self._frame_arrived.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(timeout=max(0.0, end - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        if self.pipeline is not None and stopped:
            self.pipeline.release()  # never under a thread still inferring
        return stopped


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
