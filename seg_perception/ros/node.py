"""The camera_seg node: thin glue between ROS 2 topics and the core pipeline.

Threads, each handing the newest item to the next through a one-slot mailbox (a waiting item
that a newer one replaces is dropped and counted, so there is never a backlog of stale frames):
  executor     subscription callbacks (they only keep the newest frame), timers, diagnostics
  prepare      decode and resize the newest frame to the model's input just before the network
               is free (while it runs the previous one), so it never waits for preprocessing
  inference    loads the model, then runs the network on the newest prepared frame
  outputs      builds and publishes the outputs of the newest inferred frame (at a lower CPU
               priority, output_niceness, so on few cores it fills the network's gaps)
"""

from __future__ import annotations

import os
import sys
import signal
import threading
import time
import traceback
from typing import Dict, List, Optional

import cv2
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core import resources
from ..core.camera_info_watch import OK, WARN
from ..core.faults import worker_fault_from_env
from ..core.image import ImageError
from ..core.labels import MASK_GROUPS
from ..core.latest import BusyClock, LatestSlot, newest_when_needed, smooth
from ..core.parameters import SPEC_BY_NAME, SPECS, Spec, camera_parameters, camera_view, check, check_all
from ..core.pipeline import GRID_OUTPUT, IMAGE_OUTPUTS, SegmentationPipeline, StageTimer, build_camera_pipelines
from ..core.surround import SurroundGrid, fair_order
from ..core.threads import opencv_threads
from . import diagnostics as diag
from .conversions import copy_header, frame_from_msg, occupancy_grid_msg
from .dds_profile import apply_default_profile
from .outputs import OutputMessages
from .parameters import descriptor

NODE_NAME = "camera_seg"
# A worker thread that fails (a bug: per-frame errors are handled inside it) is restarted; one
# that fails more than MAX_WORKER_RESTARTS times within RESTART_WINDOW_S ends the node with
# EXIT_WORKER_FAILED, so that a launch file's respawn starts a fresh process.
MAX_WORKER_RESTARTS = 3
RESTART_WINDOW_S = 60.0
WORKER_RESTART_DELAY_S = 0.5
EXIT_WORKER_FAILED = 2
RETIRE_S = 2.0  # s a replaced input subscription overlaps the new one (discovery and matching)


class _Camera:
    """One camera: its topics, input subscriptions, newest-frame slot, publishers, pipeline (its
    own grid and pose on the shared network) and counters. The single-camera node has one, named
    "" (topics image / camera_info, outputs under ~/); with `cameras`, one per name."""

    def __init__(self, name: str, stats: diag.NodeStats) -> None:
        self.name = name
        self.ns = f"{name}/" if name else ""          # its outputs: ~/<ns><output>
        self.stats = stats
        self.slot = LatestSlot()
        self.waiting_since = 0.0                     # receive time of the frame in the slot
        self.last_served: Optional[float] = None     # when the network last took its frame
        self.pipeline: Optional[SegmentationPipeline] = None
        # the output thread publishes each message before it builds the next: buffers are reused
        self.messages = OutputMessages(reuse_buffers=True)
        self.pubs: Dict[str, object] = {}
        self.latest_info = None  # (CameraInfo, monotonic receive time), applied once the model loaded
        self.image_topic = self.info_topic = ""
        self.image_type = Image
        self.transport = "raw"
        self.subs: Dict[str, object] = {}
        self.sub_reliability: Dict[str, str] = {}
        self.retiring: List[tuple] = []  # (replaced subscription, since): destroyed after RETIRE_S
        self.told_waiting = False
        self.last_image_key = None  # (stamp, frame_id) of the last frame, to drop a duplicate
        self.idle = False

    def label(self, text: str) -> str:
        """'text' for the single camera, 'C: text' for camera C (log lines, status texts)."""
        return f"{self.name}: {text}" if self.name else text


class CameraSegNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = diag.NodeStats()  # the node's (and the single camera's) counters and problems
        names = list(self.p["cameras"]) or [""]
        self.cameras: Dict[str, _Camera] = {
            n: _Camera(n, self.stats if n == "" else diag.NodeStats()) for n in names}
        self.multi = names != [""]
        self.pipeline: Optional[SegmentationPipeline] = None  # the first camera's (model, info)
        self._frame_arrived = threading.Event()  # any camera's slot got a frame
        self.backend_text = "not loaded"
        self.backend_reason = ""
        self.empty_masks = "n/a: no model loaded"
        self.model_path = self.p["model"] or resources.DEFAULT_MODEL
        self.label_path = self.p["label_file"] or "the packaged label file of the model's classes"
        self._last_log: Dict[str, float] = {}
        self._idle = False

        self._create_publishers()
        self._create_inputs()
        self._start_workers()
        # timers on the steady clock: diagnostics and the QoS check go on when /clock stops
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.p["input_qos.reliability"] == "auto":
            self.create_timer(1.0, self._guarded(self._subscribe_inputs), clock=steady)
        self.create_timer(self.p["diagnostics_period"], self._guarded(self._publish_diagnostics), clock=steady)
        for cam in self.cameras.values():
            self.get_logger().info(
                f"subscribing {cam.image_topic} ({cam.transport}) and {cam.info_topic}; publishing "
                f"under {self.get_fully_qualified_name()}/{cam.ns}")
        if self.multi and self.p["grid.enabled"]:
            self.get_logger().info(f"surround grid of {len(self.cameras)} cameras on "
                                   f"{self.get_fully_qualified_name()}/{GRID_OUTPUT}")

    def _create_publishers(self) -> None:
        """Every output reliable, depth 1 (RViz subscribes reliable by default; the newest wins)."""
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        for cam in self.cameras.values():
            cam.pubs = {name: self.create_publisher(Image, f"~/{cam.ns}{name}", out_qos) for name in IMAGE_OUTPUTS}
            if self.p["grid.enabled"]:
                cam.pubs[GRID_OUTPUT] = self.create_publisher(OccupancyGrid, f"~/{cam.ns}{GRID_OUTPUT}", out_qos)
        self.pubs = self.cameras[next(iter(self.cameras))].pubs  # the single camera's
        self.surround = None
        if self.multi and self.p["grid.enabled"]:  # every camera's grid fused
            self.surround = SurroundGrid(list(self.cameras), self.p["grid.max_spread"])
            self.surround_pub = self.create_publisher(OccupancyGrid, f"~/{GRID_OUTPUT}", out_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _create_inputs(self) -> None:
        """Each camera's topics (image_transport's naming), the TF pose source, and the input
        subscriptions where their publishers are already known."""
        for cam in self.cameras.values():
            view = camera_view(self.p, cam.name)
            cam.transport = view["image_transport"]
            image = _resolve(self, view["image"] if cam.name else "image")
            if cam.transport == "compressed":
                # as image_transport does: remapping 'image' moves the compressed topic with it
                cam.image_topic, cam.image_type = image + "/compressed", CompressedImage
            else:
                cam.image_topic, cam.image_type = image, Image
            cam.info_topic = (_resolve(self, view["camera_info"]) if cam.name else camera_info_topic(self))
        first = self.cameras[next(iter(self.cameras))]
        self.image_topic, self.info_topic = first.image_topic, first.info_topic  # the single camera's
        self._tf_pose = None
        if self.p["grid.enabled"] and self.p["camera_pose.source"] == "tf":
            from .tf_pose import TfPose

            self._tf_pose = TfPose(self, self.p["grid.frame_id"])
            if self._tf_pose.error:
                self.get_logger().error(self._tf_pose.error)
        self._subscribe_inputs()

    def _start_workers(self) -> None:
        """newest camera frame -> prepare -> newest prepared frame -> inference -> newest
        inferred frame -> outputs, each hand-over a one-slot mailbox."""
        self.slot = self.cameras[next(iter(self.cameras))].slot  # the single camera's
        self.ready_slot = LatestSlot(on_drop=lambda item: item[1].release())  # its input buffer
        self.out_slot = LatestSlot()
        self._model_done = threading.Event()  # the model loaded, or failed to
        self._network = BusyClock()  # when the network will want its next frame
        self._busy_mark = (time.monotonic(), 0.0)  # (when, network busy seconds) at the last diagnostics
        self._prepare_s: Optional[float] = None  # smoothed seconds per prepare
        self.stats.report("model", diag.WARN, f"loading model {self.model_path}")
        self.fatal_error: Optional[str] = None  # set when the node must exit (main() returns non-zero)
        self._worker_restarts = 0
        self._worker_fault = worker_fault_from_env()  # tests only: None unless the env var is set
        self._threads = [threading.Thread(target=self._supervised(name, fn), name=f"camera_seg_{name}",
                                          daemon=True)
                         for name, fn in (("inference", self._work), ("prepare", self._prepare_frames),
                                          ("outputs", self._publish_outputs))]
        for thread in self._threads:
            thread.start()

    def _supervised(self, name: str, fn):
        """A worker thread's target: fn run again when it fails (diagnostics ERROR with the
        exception, the traceback in the log); failing too often, the node exits non-zero."""
        def run() -> None:
            failures: List[float] = []
            while True:
                try:
                    fn()
                    return  # its mailbox closed: the node is shutting down
                except Exception as exc:
                    if self.slot.closed:
                        return
                    now = time.monotonic()
                    failures = [t for t in failures if now - t < RESTART_WINDOW_S] + [now]
                    text = f"{name} thread failed: {exc!r}"
                    if len(failures) > MAX_WORKER_RESTARTS:
                        self._fail(f"{text}, {len(failures)} times in {RESTART_WINDOW_S:.0f} s", traceback.format_exc())
                        return
                    self._worker_restarts += 1
                    self.stats.report("worker", diag.ERROR, f"{text}; restarted it")
                    self.get_logger().error(f"{text}; restarting it\n{traceback.format_exc()}")
                    time.sleep(WORKER_RESTART_DELAY_S)
        return run

    def _fail(self, text: str, trace: str) -> None:
        """End the node: diagnostics ERROR now, then main() exits with EXIT_WORKER_FAILED."""
        self.stats.report("worker", diag.ERROR, f"{text}; exiting (respawn restarts the node)")
        try:
            self._publish_diagnostics()
        except Exception:
            pass  # exiting anyway; the log says why
        self.get_logger().fatal(f"{text}; exiting with code {EXIT_WORKER_FAILED}\n{trace}")
        self.fatal_error = text

    def _guarded(self, fn):
        """A timer callback that reports its errors instead of ending rclpy.spin (and the node)."""
        def call() -> None:
            try:
                fn()
            except Exception as exc:
                self._log("timer", "error", f"{fn.__name__} failed: {exc!r}")
        return call

    # ---------------------------------------------------------------- inputs
    def _subscribe_inputs(self) -> None:
        """(Re)create the input subscriptions with the reliability the parameter asks for.

        auto: reliable when every publisher of the topic offers reliable, else best-effort; with
        no publisher yet there is nothing to match, so the subscription waits for one (made
        best-effort now and reliable a second later, the swap lost frames in flight). A later
        change (another camera joins) makes the new subscription first and retires the old one
        only after RETIRE_S, so no frame falls between them.
        Measured here: a reliable publisher's 1920x1080 frames reach a reliable reader intact,
        but a best-effort reader loses most of them (the loss is on the sending side, which the
        node's profile cannot change); best-effort is the only choice that matches a best-effort
        camera. Depth stays 1 either way: the newest frame wins, never a backlog."""
        for cam in self.cameras.values():
            self._subscribe_camera(cam)

    def _subscribe_camera(self, cam: _Camera) -> None:
        now = time.monotonic()
        for old, since in list(cam.retiring):
            if now - since >= RETIRE_S:
                self.destroy_subscription(old)
                cam.retiring.remove((old, since))
        wanted = self.p["input_qos.reliability"]
        for key, topic, msg_type, cb in (
                ("image", cam.image_topic, cam.image_type, lambda msg, c=cam: self._on_image(c, msg)),
                ("camera_info", cam.info_topic, CameraInfo, lambda msg, c=cam: self._on_camera_info(c, msg))):
            rel = wanted
            if wanted == "auto":
                pubs = self.get_publishers_info_by_topic(topic)
                if not pubs:  # nothing to match yet, or the camera is away: keep what matched it
                    if key == "image" and key not in cam.subs and not cam.told_waiting:
                        cam.told_waiting = True
                        self.get_logger().info(f"{topic}: no publisher yet; subscribing once one appears, "
                                               "with its reliability (input_qos.reliability auto)")
                    continue
                rel = ("reliable" if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                         for p in pubs) else "best_effort")
            if cam.sub_reliability.get(key) == rel:
                continue
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p["input_qos.depth"],
                             reliability=(ReliabilityPolicy.RELIABLE if rel == "reliable"
                                          else ReliabilityPolicy.BEST_EFFORT),
                             durability=DurabilityPolicy.VOLATILE)
            old = cam.subs.get(key)
            cam.subs[key] = self.create_subscription(msg_type, topic, cb, qos)  # the new one first
            if old is not None:
                cam.retiring.append((old, now))
            cam.sub_reliability[key] = rel
            if wanted == "auto" and key == "image":
                self.get_logger().info(f"{topic}: subscribing {rel.replace('_', '-')} to match its publishers")

    # ---------------------------------------------------------------- parameters
    def _declare_parameters(self) -> Dict[str, object]:
        from rclpy.exceptions import ParameterUninitializedException
        from rclpy.parameter import Parameter

        values = {}
        for spec in SPECS:
            if spec.name == "cameras":  # a string array whose default is empty: declared by type
                self.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor(spec))
                try:
                    values[spec.name] = [str(c) for c in self.get_parameter(spec.name).value]
                except ParameterUninitializedException:  # not given (an empty list in YAML too)
                    values[spec.name] = []
                continue
            values[spec.name] = self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        for name in values["cameras"]:  # each camera's own, defaults from the node-wide ones
            for key, default in camera_parameters(name, values).items():
                base = SPEC_BY_NAME.get(key.split(".", 1)[1])  # image, camera_info: none
                spec = Spec(key, default, f"camera {name}: its {key.split('.', 1)[1]}",
                            read_only=not key.endswith(("xyz", "rpy")),
                            choices=base.choices if base else None, length=base.length if base else None)
                values[key] = self.declare_parameter(key, default, descriptor(spec)).value
        for k, v in list(values.items()):
            if k == "cameras":
                continue
            if isinstance(v, (list, tuple)) or type(v).__name__ == "array":
                values[k] = [float(x) for x in v]
        reason = check_all(values)
        if reason:
            raise ValueError(f"invalid parameter: {reason}")
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {}
        for prm in params:
            value = prm.value
            if prm.name == "cameras":
                return SetParametersResult(successful=False, reason="cameras is read-only")
            if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
                value = [float(x) for x in value]
            reason = check(prm.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[prm.name] = value
        merged = dict(self.p)
        merged.update(changes)
        reason = check_all(merged)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        pose_changed = any(n.endswith(("camera_pose.xyz", "camera_pose.rpy")) for n in changes)
        if pose_changed and merged["camera_pose.source"] == "tf":
            return SetParametersResult(successful=False, reason="camera_pose.xyz/rpy are not used: "
                                       "camera_pose.source is tf (the pose comes from TF)")
        # everything is valid: apply all of it
        self.p = merged
        self._apply_runtime_parameters(merged, pose_changed)
        return SetParametersResult(successful=True)

    def _apply_runtime_parameters(self, p: Dict[str, object], pose_changed: bool) -> None:
        for cam in self.cameras.values():  # before the model loaded: the worker applies self.p then
            if cam.pipeline is not None:
                cam.pipeline.apply_parameters(camera_view(p, cam.name), pose_changed)
        if self.surround is not None:
            self.surround.max_spread_s = float(p["grid.max_spread"])

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
        cv_threads = opencv_threads(segmenter.backend.device, self.p["num_threads"])
        cv2.setNumThreads(cv_threads)
        self.backend_text = segmenter.backend.describe()
        self.backend_reason = segmenter.backend.selection_reason
        info = segmenter.info
        self.label_path = pipeline.label_path
        empty = [g for g in MASK_GROUPS if not pipeline.groups.groups[g]]
        self.empty_masks = (f"{', '.join(empty)} (the label file names no class for the group)"
                            if empty else "none")
        if empty:
            self.get_logger().warning(f"always empty masks: {self.empty_masks} in {self.label_path} "
                                      "(Cityscapes' 19 train ids, for one, have no parking class)")
        self.get_logger().info(
            f"model {self.model_path}: {info.architecture or 'model'} {info.num_classes} classes, input "
            f"{info.input_width}x{info.input_height} ({info.fit}); backend {self.backend_text} "
            f"({self.backend_reason}); labels {self.label_path}; OpenCV threads {cv_threads}; "
            f"loaded in {time.monotonic() - t0:.1f} s")
        for name, pl in pipelines.items():
            self.cameras[name].pipeline = pl
        self.pipeline = pipeline  # last: the other threads use it once it is set

    def _engine_progress(self, text: str) -> None:
        self._log("engine", "info", f"TensorRT engine: {text}")
        self.stats.report("model", diag.WARN, f"building TensorRT engine: {text}")

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, cam: _Camera, msg) -> None:
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

    def _on_camera_info(self, cam: _Camera, msg: CameraInfo) -> None:
        cam.latest_info = (msg, time.monotonic())  # the worker applies it when the model has loaded
        pipeline = cam.pipeline
        if pipeline is not None and pipeline.grid is not None:
            pipeline.grid.set_camera_info(*cam.latest_info)  # never raises: a bad one is the grid's error

    # ---------------------------------------------------------------- worker
    def _work(self) -> None:
        """Inference thread: load the model, then run the network on the newest prepared frame."""
        if not self._model_done.is_set():  # a restarted thread goes straight to the frames
            self._load_model()
        while not self.ready_slot.closed:
            ok, item = self.ready_slot.get(timeout=0.2)
            if ok:
                self._check_fault("inference")
                self._infer(*item)

    def _check_fault(self, thread_name: str) -> None:
        if self._worker_fault is not None:
            self._worker_fault(thread_name)

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

    def _prepare_frames(self) -> None:
        """Prepare thread: decode and fit the newest camera frame to the model's input."""
        while not self._model_done.wait(0.2):
            if self.slot.closed:
                return
        while not self.slot.closed:
            cam, item = self._next_frame(timeout=0.2)
            if cam is None:
                continue
            self._check_fault("prepare")
            if self.pipeline is None:
                pr = self.stats.problem("model")
                self._log("model", "error", "dropping frames: " + (pr.message if pr else "no model loaded"))
                continue
            item = newest_when_needed(item, cam.slot, self.ready_slot, self._network, self._prepare_s or 0.0,
                                      cam.stats.on_dropped)
            if item is None:
                return
            try:
                self._prepare(cam, *item)
            except Exception as exc:  # never let the worker die; report and go on
                self._frame_error(cam, "frame", f"processing failed: {exc!r}")

    def _next_frame(self, timeout: float):
        """(camera, its newest frame) of the camera whose turn it is, or (None, None) after
        ``timeout``. Turns: the camera served longest ago first (core/surround.fair_order), so
        under overload every camera gets an equal share of the network."""
        end = time.monotonic() + timeout
        while not self.slot.closed:
            self._frame_arrived.clear()
            waiting = {c.name: c.waiting_since for c in self.cameras.values() if c.slot.occupied}
            if waiting:
                served = {c.name: c.last_served for c in self.cameras.values() if c.last_served is not None}
                for name in fair_order(waiting, served):
                    cam = self.cameras[name]
                    ok, item = cam.slot.get(timeout=0)
                    if ok:
                        cam.last_served = time.monotonic()
                        return cam, item
            left = end - time.monotonic()
            if left <= 0:
                break
            self._frame_arrived.wait(min(left, 0.05))
        return None, None

    def _wanted(self, cam: _Camera) -> List[str]:
        wanted = [name for name, pub in cam.pubs.items() if pub.get_subscription_count() > 0]
        if self.surround is not None and GRID_OUTPUT not in wanted and \
                self.surround_pub.get_subscription_count() > 0:
            wanted.append(GRID_OUTPUT)  # the surround grid needs this camera's
        return wanted

    def _prepare(self, cam: _Camera, msg, t_received: float) -> None:
        cam.idle = not self._wanted(cam)
        self._idle = all(c.idle for c in self.cameras.values())
        if cam.idle:  # nobody listens: no work at all, and no old problem reported as current
            cam.stats.clear("frame")
            cam.stats.clear("grid")
            return
        t0 = time.monotonic()
        try:
            timer = StageTimer()
            # a buffer of its own: the next frame is prepared while the network runs this one
            prepared = cam.pipeline.prepare(frame_from_msg(msg, timer), timer, pooled=True)
        except ImageError as exc:
            self._frame_error(cam, "frame", f"bad image on {cam.image_topic}: {exc}")
            return
        self._prepare_s = smooth(self._prepare_s, time.monotonic() - t0, 0.2)
        if self.ready_slot.put((cam, prepared, t_received)):
            self.stats.on_dropped()

    def _infer(self, cam: _Camera, prepared, t_received: float) -> None:
        self._network.start()
        try:
            result = cam.pipeline.run(prepared)
        except Exception as exc:
            self._frame_error(cam, "inference", f"inference failed: {exc}")
            return
        finally:
            self._network.stop()
        # hand over to the output thread; the network goes on with the next frame meanwhile
        if self.out_slot.put((cam, result, t_received)):
            self.stats.on_dropped()

    def _publish_outputs(self) -> None:
        """Output thread: build the outputs of the newest inferred frame and publish them."""
        if self.p["output_niceness"] > 0 and sys.platform.startswith("linux"):
            try:  # this thread only (Linux thread id); raising niceness needs no privilege
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               os.getpriority(os.PRIO_PROCESS, 0) + self.p["output_niceness"])
            except OSError as exc:
                self.get_logger().warn(f"output_niceness not applied: {exc}")
        while not self.out_slot.closed:
            ok, item = self.out_slot.get(timeout=0.2)
            if not ok:
                continue
            self._check_fault("outputs")
            try:
                self._finish(*item)
            except Exception as exc:  # never let the worker die; report and go on
                self._frame_error(item[0], "outputs", f"building outputs failed: {exc!r}")

    def _finish(self, cam: _Camera, result, t_received: float) -> None:
        wanted = self._wanted(cam)
        cam.messages.build(result, wanted, publish=lambda name, msg: cam.pubs[name].publish(msg)
                           if cam.pubs[name].get_subscription_count() > 0 else None)
        cam.stats.clear("frame")
        self.stats.clear("worker")  # a frame went all the way through: restarted workers work
        if GRID_OUTPUT in wanted and cam.pipeline.grid is not None:
            grid = result.grid()  # computed above: its status
            if grid.state == OK:
                cam.stats.clear("grid")
            else:
                cam.stats.report("grid", diag.WARN if grid.state == WARN else diag.ERROR, grid.status)
                self._log(f"grid:{cam.name}", grid.state, cam.label(grid.status))
            if self.surround is not None and grid.cells is not None:
                self._publish_surround(cam, result, grid.cells)
        cam.stats.on_processed(time.monotonic() - t_received, result.timer.times)
        if cam.stats is not self.stats:  # the network's figures over all cameras
            self.stats.on_processed(time.monotonic() - t_received, result.timer.times)

    def _publish_surround(self, cam: _Camera, result, cells) -> None:
        """Every camera's latest grid fused into ~/drivable_grid, stamped with the newest."""
        header = result.frame.header
        self.surround.update(cam.name, cells, header.stamp.sec + header.stamp.nanosec * 1e-9)
        if self.surround_pub.get_subscription_count() == 0:
            return
        fused, _, _ = self.surround.fused()
        spec = cam.pipeline.grid.spec
        self.surround_pub.publish(occupancy_grid_msg(fused, spec.resolution, (spec.x_min, spec.y_min),
                                                     copy_header(header, cam.pipeline.grid.frame_id)))

    # ---------------------------------------------------------------- diagnostics and logs
    def _frame_error(self, cam: _Camera, log_kind: str, text: str) -> None:
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
        name = self.get_fully_qualified_name().lstrip("/")
        now, busy = time.monotonic(), self._network.busy_seconds()
        busy_share = (busy - self._busy_mark[1]) / max(now - self._busy_mark[0], 1e-6)
        self._busy_mark = (now, busy)
        network = {
            "backend": self.backend_text,
            "backend selection": self.backend_reason,
            "model": self.model_path,
            "label file": self.label_path,
            "masks always empty": self.empty_masks,
            # near 100: the network is the limit; well below it while frames are dropped: the
            # node's own work (decoding, outputs, DDS) is
            "network busy (%)": f"{100 * busy_share:.1f}",
            "worker restarts": self._worker_restarts,
        }
        statuses = []
        if not self.multi:  # one status for the camera and the network, as ever
            cam = self.cameras[""]
            statuses += self._camera_statuses(cam, name, network)
        else:
            _, out_rate, lat, problems = self.stats.window()
            node_problems = [pr for k, pr in problems.items() if k in ("model", "worker")]
            p50 = diag.percentile(lat, 50)
            values = dict(network, cameras=", ".join(self.cameras), **{
                "processed rate (Hz)": f"{out_rate:.2f}", "frames processed": self.stats.processed,
                "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}"})
            statuses.append(diag.make_status(
                f"{name}: segmentation", os.path.basename(self.model_path),
                diag.worst([pr.level for pr in node_problems]),
                "; ".join(pr.message for pr in node_problems) if node_problems else
                f"segmenting {len(self.cameras)} cameras at {out_rate:.1f} Hz in all", values))
            for cam in self.cameras.values():
                statuses += self._camera_statuses(cam, f"{name}: {cam.name}", {})
            if self.surround is not None:
                fused = self.surround.fused()
                used = fused[2] if fused else []
                statuses.append(diag.make_status(
                    f"{name}: drivable grid", self.p["grid.frame_id"], diag.OK if used else diag.WARN,
                    f"fused from {', '.join(used)}" if used else "no camera grid yet",
                    {"cameras in it": ", ".join(used) or "none", "max spread (s)": self.p["grid.max_spread"]}))
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), statuses))

    def _camera_statuses(self, cam: _Camera, prefix: str, extra: Dict[str, object]) -> list:
        """A camera's segmentation status (with ``extra`` values) and its grid's."""
        in_rate, out_rate, lat, problems = cam.stats.window()
        s = cam.stats
        seg_problems = [pr for k, pr in problems.items() if k != "grid"]
        level = diag.worst([pr.level for pr in seg_problems])
        if seg_problems:
            message = "; ".join(pr.message for pr in seg_problems)
        elif in_rate == 0.0:
            level, message = diag.WARN, f"no images on {cam.image_topic}"
        elif cam.idle:
            message = "idle: no subscribers to any output"
        else:
            message = f"segmenting at {out_rate:.1f} Hz"
        p50, pmax = diag.percentile(lat, 50), (max(lat) if lat else None)
        values = dict(extra)
        values.update({
            "input topic": cam.image_topic,
            "input reliability": cam.sub_reliability.get("image", "not subscribed yet: no publisher"),
            "input rate (Hz)": f"{in_rate:.2f}",
            "processed rate (Hz)": f"{out_rate:.2f}",
            "frames received": s.received,
            "frames processed": s.processed,
            "frames dropped": s.dropped,
            "frames failed": s.failed,
            "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}",
            "latency max (ms)": "n/a" if pmax is None else f"{pmax * 1e3:.1f}",
            "last error": s.last_error or "none",
        })
        for stage, ms in sorted(s.stage_ms.items()):
            values[f"stage {stage} (ms)"] = f"{ms:.2f}"
        statuses = [diag.make_status(f"{prefix}: segmentation" if cam.name == "" else f"{prefix} segmentation",
                                     os.path.basename(self.model_path), level, message, values)]
        if self.p["grid.enabled"]:
            g = problems.get("grid")
            statuses.append(diag.make_status(
                f"{prefix}: drivable grid" if cam.name == "" else f"{prefix} drivable grid", self.p["grid.frame_id"],
                g.level if g else diag.OK, g.message if g else "publishing",
                {"frame": self.p["grid.frame_id"], "resolution (m)": self.p["grid.resolution"],
                 "camera_info topic": cam.info_topic,
                 "camera_info timeout (s)": self.p["camera_info_timeout"],
                 "lookup table builds": cam.pipeline.grid.builds if cam.pipeline is not None else 0}))
        return statuses

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Stop the workers; True when all of them ended within timeout (in total)."""
        for slot in [c.slot for c in self.cameras.values()] + [self.ready_slot, self.out_slot]:
            slot.close()
        self._frame_arrived.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        if self.pipeline is not None and stopped:
            self.pipeline.release()  # never under a thread still inferring
        return stopped


def _resolve(node: Node, name: str, only_expand: bool = False) -> str:
    try:
        return node.resolve_topic_name(name, only_expand=only_expand)
    except AttributeError:  # very old rclpy: no remapping known here
        from rclpy.expand_topic_name import expand_topic_name

        return expand_topic_name(name, node.get_name(), node.get_namespace())


def camera_info_beside(image_topic: str) -> str:
    """image_transport's convention: a camera's CameraInfo is 'camera_info' in the namespace of
    its image topic (/front/image_raw -> /front/camera_info)."""
    parent = image_topic.rsplit("/", 1)[0]
    return f"{parent}/camera_info"


def camera_info_topic(node: Node) -> str:
    """'camera_info' where it is remapped, else beside the (remapped) image topic, so that
    remapping only 'image' still finds the camera's CameraInfo."""
    info = _resolve(node, "camera_info")
    if info != _resolve(node, "camera_info", only_expand=True):
        return info
    return camera_info_beside(_resolve(node, "image"))


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


def main(args=None) -> None:
    """The camera_seg_node process; ends it with exit code 0, 1 (cannot start) or 2 (a worker
    thread kept failing)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    applied = apply_default_profile()  # before rclpy.init(): Fast DDS reads it at participant creation
    stop = StopSignals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    try:
        node = CameraSegNode()
        if applied:
            node.get_logger().info(f"Fast DDS profile: {applied} (set FASTRTPS_DEFAULT_PROFILES_FILE to use your own)")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # short waits: a signal's Python handler runs between them
        while stop.received is None and node.fatal_error is None:
            executor.spin_once(timeout_sec=0.1)
        if node.fatal_error is not None:
            code = EXIT_WORKER_FAILED
    except ExternalShutdownException:
        pass
    except Exception as exc:  # invalid parameters at start: say why and exit non-zero
        rclpy.logging.get_logger(NODE_NAME).fatal(f"camera_seg cannot start: {exc}")
        code = 1
    finally:
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


if __name__ == "__main__":
    sys.exit(main())
