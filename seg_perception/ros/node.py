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
from ..core.parameters import SPECS, check, check_all
from ..core.pipeline import GRID_OUTPUT, IMAGE_OUTPUTS, SegmentationPipeline, StageTimer, build_pipeline
from ..core.threads import opencv_threads
from . import diagnostics as diag
from .conversions import frame_from_msg
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


class CameraSegNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = diag.NodeStats()
        self.pipeline: Optional[SegmentationPipeline] = None
        # the output thread publishes each message before it builds the next: buffers are reused
        self.messages = OutputMessages(reuse_buffers=True)
        self.backend_text = "not loaded"
        self.backend_reason = ""
        self.empty_masks = "n/a: no model loaded"
        self.model_path = self.p["model"] or resources.DEFAULT_MODEL
        self.label_path = self.p["label_file"] or "the packaged label file of the model's classes"
        self._last_log: Dict[str, float] = {}
        self._latest_info = None  # (CameraInfo, monotonic receive time), applied once the model loaded
        self._idle = False

        self._create_publishers()
        self._create_inputs()
        self._start_workers()
        # timers on the steady clock: diagnostics and the QoS check go on when /clock stops
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.p["input_qos.reliability"] == "auto":
            self.create_timer(1.0, self._guarded(self._subscribe_inputs), clock=steady)
        self.create_timer(self.p["diagnostics_period"], self._guarded(self._publish_diagnostics), clock=steady)
        self.get_logger().info(
            f"subscribing {self.image_topic} ({self.p['image_transport']}) and "
            f"{self.info_topic}; publishing under {self.get_fully_qualified_name()}/")

    def _create_publishers(self) -> None:
        """Every output reliable, depth 1 (RViz subscribes reliable by default; the newest wins)."""
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        self.pubs = {name: self.create_publisher(Image, f"~/{name}", out_qos) for name in IMAGE_OUTPUTS}
        if self.p["grid.enabled"]:
            self.pubs[GRID_OUTPUT] = self.create_publisher(OccupancyGrid, f"~/{GRID_OUTPUT}", out_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _create_inputs(self) -> None:
        """The camera's topics (image_transport's naming), the TF pose source, and the input
        subscriptions where their publishers are already known."""
        if self.p["image_transport"] == "compressed":
            # as image_transport does: remapping 'image' moves the compressed topic with it
            self.image_topic, self._image_type = _resolve(self, "image") + "/compressed", CompressedImage
        else:
            self.image_topic, self._image_type = _resolve(self, "image"), Image
        self.info_topic = camera_info_topic(self)
        self._subs: Dict[str, object] = {}
        self._sub_reliability: Dict[str, str] = {}
        self._retiring: List[tuple] = []  # (replaced subscription, since): destroyed after RETIRE_S
        self._told_waiting = False
        self._last_image_key = None  # (stamp, frame_id) of the last frame, to drop a duplicate
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
        self.slot = LatestSlot()
        self.ready_slot = LatestSlot(on_drop=lambda item: item[0].release())  # its input buffer
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
        now = time.monotonic()
        for old, since in list(self._retiring):
            if now - since >= RETIRE_S:
                self.destroy_subscription(old)
                self._retiring.remove((old, since))
        wanted = self.p["input_qos.reliability"]
        for key, topic, msg_type, cb in (("image", self.image_topic, self._image_type, self._on_image),
                                         ("camera_info", self.info_topic, CameraInfo, self._on_camera_info)):
            rel = wanted
            if wanted == "auto":
                pubs = self.get_publishers_info_by_topic(topic)
                if not pubs:  # nothing to match yet, or the camera is away: keep what matched it
                    if key == "image" and key not in self._subs and not self._told_waiting:
                        self._told_waiting = True
                        self.get_logger().info(f"{topic}: no publisher yet; subscribing once one appears, "
                                               "with its reliability (input_qos.reliability auto)")
                    continue
                rel = ("reliable" if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                         for p in pubs) else "best_effort")
            if self._sub_reliability.get(key) == rel:
                continue
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p["input_qos.depth"],
                             reliability=(ReliabilityPolicy.RELIABLE if rel == "reliable"
                                          else ReliabilityPolicy.BEST_EFFORT),
                             durability=DurabilityPolicy.VOLATILE)
            old = self._subs.get(key)
            self._subs[key] = self.create_subscription(msg_type, topic, cb, qos)  # the new one first
            if old is not None:
                self._retiring.append((old, now))
            self._sub_reliability[key] = rel
            if wanted == "auto" and key == "image":
                self.get_logger().info(f"{topic}: subscribing {rel.replace('_', '-')} to match its publishers")

    # ---------------------------------------------------------------- parameters
    def _declare_parameters(self) -> Dict[str, object]:
        values = {}
        for spec in SPECS:
            values[spec.name] = self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        for k, v in list(values.items()):
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
        pose_changed = "camera_pose.xyz" in changes or "camera_pose.rpy" in changes
        if pose_changed and merged["camera_pose.source"] == "tf":
            return SetParametersResult(successful=False, reason="camera_pose.xyz/rpy are not used: "
                                       "camera_pose.source is tf (the pose comes from TF)")
        # everything is valid: apply all of it
        self.p = merged
        self._apply_runtime_parameters(merged, pose_changed)
        return SetParametersResult(successful=True)

    def _apply_runtime_parameters(self, p: Dict[str, object], pose_changed: bool) -> None:
        pipeline = self.pipeline
        if pipeline is not None:  # else the worker applies self.p once the model has loaded
            pipeline.apply_parameters(p, pose_changed)

    # ---------------------------------------------------------------- model
    def _load(self) -> None:
        t0 = time.monotonic()
        pipeline = build_pipeline(self.p, progress=self._engine_progress, camera_info_topic=self.info_topic)
        if pipeline.grid is not None:
            pipeline.grid.pose_source = self._tf_pose  # None: the pose of the parameters
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
        self.pipeline = pipeline  # last: the other threads use it once it is set

    def _engine_progress(self, text: str) -> None:
        self._log("engine", "info", f"TensorRT engine: {text}")
        self.stats.report("model", diag.WARN, f"building TensorRT engine: {text}")

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, msg) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        if self._retiring and key == self._last_image_key:
            return  # the same frame through the old and the new subscription while they overlap
        self._last_image_key = key
        self.stats.on_received()
        if self.slot.put((msg, time.monotonic())):
            self.stats.on_dropped()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._latest_info = (msg, time.monotonic())  # the worker applies it when the model has loaded
        pipeline = self.pipeline
        if pipeline is not None and pipeline.grid is not None:
            pipeline.grid.set_camera_info(*self._latest_info)  # never raises: a bad one is the grid's error

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
            latest = self._latest_info
            if latest is not None and self.pipeline.grid is not None:
                self.pipeline.grid.set_camera_info(*latest)
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
            ok, item = self.slot.get(timeout=0.2)
            if not ok:
                continue
            self._check_fault("prepare")
            if self.pipeline is None:
                pr = self.stats.problem("model")
                self._log("model", "error", "dropping frames: " + (pr.message if pr else "no model loaded"))
                continue
            item = newest_when_needed(item, self.slot, self.ready_slot, self._network, self._prepare_s or 0.0,
                                      self.stats.on_dropped)
            if item is None:
                return
            try:
                self._prepare(*item)
            except Exception as exc:  # never let the worker die; report and go on
                self._frame_error("frame", f"processing failed: {exc!r}")

    def _wanted(self) -> List[str]:
        return [name for name, pub in self.pubs.items() if pub.get_subscription_count() > 0]

    def _prepare(self, msg, t_received: float) -> None:
        self._idle = not self._wanted()
        if self._idle:  # nobody listens: no work at all, and no old problem reported as current
            self.stats.clear("frame")
            self.stats.clear("grid")
            return
        t0 = time.monotonic()
        try:
            timer = StageTimer()
            # a buffer of its own: the next frame is prepared while the network runs this one
            prepared = self.pipeline.prepare(frame_from_msg(msg, timer), timer, pooled=True)
        except ImageError as exc:
            self._frame_error("frame", f"bad image on {self.image_topic}: {exc}")
            return
        self._prepare_s = smooth(self._prepare_s, time.monotonic() - t0, 0.2)
        if self.ready_slot.put((prepared, t_received)):
            self.stats.on_dropped()

    def _infer(self, prepared, t_received: float) -> None:
        self._network.start()
        try:
            result = self.pipeline.run(prepared)
        except Exception as exc:
            self._frame_error("inference", f"inference failed: {exc}")
            return
        finally:
            self._network.stop()
        # hand over to the output thread; the network goes on with the next frame meanwhile
        if self.out_slot.put((result, t_received)):
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
                self._frame_error("outputs", f"building outputs failed: {exc!r}")

    def _finish(self, result, t_received: float) -> None:
        wanted = self._wanted()
        self.messages.build(result, wanted, publish=lambda name, msg: self.pubs[name].publish(msg))
        self.stats.clear("frame")
        self.stats.clear("worker")  # a frame went all the way through: restarted workers work
        if GRID_OUTPUT in wanted and self.pipeline.grid is not None:
            grid = result.grid()  # computed above: its status
            if grid.state == OK:
                self.stats.clear("grid")
            else:
                self.stats.report("grid", diag.WARN if grid.state == WARN else diag.ERROR, grid.status)
                self._log("grid", grid.state, grid.status)
        self.stats.on_processed(time.monotonic() - t_received, result.timer.times)

    # ---------------------------------------------------------------- diagnostics and logs
    def _frame_error(self, log_kind: str, text: str) -> None:
        """A frame that produced nothing: diagnostics ERROR and a throttled error log line."""
        self.stats.report("frame", diag.ERROR, text)
        self._log(log_kind, "error", text)

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
        in_rate, out_rate, lat, problems = self.stats.window()
        s = self.stats
        seg_problems = [pr for k, pr in problems.items() if k != "grid"]
        level = diag.worst([pr.level for pr in seg_problems])
        if seg_problems:
            message = "; ".join(pr.message for pr in seg_problems)
        elif in_rate == 0.0:
            level, message = diag.WARN, f"no images on {self.image_topic}"
        elif self._idle:
            message = "idle: no subscribers to any output"
        else:
            message = f"segmenting at {out_rate:.1f} Hz"
        p50, pmax = diag.percentile(lat, 50), (max(lat) if lat else None)
        now, busy = time.monotonic(), self._network.busy_seconds()
        busy_share = (busy - self._busy_mark[1]) / max(now - self._busy_mark[0], 1e-6)
        self._busy_mark = (now, busy)
        values = {
            "backend": self.backend_text,
            "backend selection": self.backend_reason,
            "model": self.model_path,
            "label file": self.label_path,
            "masks always empty": self.empty_masks,
            "input topic": self.image_topic,
            "input reliability": self._sub_reliability.get("image", "not subscribed yet: no publisher"),
            "input rate (Hz)": f"{in_rate:.2f}",
            "processed rate (Hz)": f"{out_rate:.2f}",
            "frames received": s.received,
            "frames processed": s.processed,
            "frames dropped": s.dropped,
            "frames failed": s.failed,
            "latency median (ms)": "n/a" if p50 is None else f"{p50 * 1e3:.1f}",
            "latency max (ms)": "n/a" if pmax is None else f"{pmax * 1e3:.1f}",
            # near 100: the network is the limit; well below it while frames are dropped: the
            # node's own work (decoding, outputs, DDS) is
            "network busy (%)": f"{100 * busy_share:.1f}",
            "worker restarts": self._worker_restarts,
            "last error": s.last_error or "none",
        }
        for stage, ms in sorted(s.stage_ms.items()):
            values[f"stage {stage} (ms)"] = f"{ms:.2f}"
        name = self.get_fully_qualified_name().lstrip("/")
        statuses = [diag.make_status(f"{name}: segmentation", os.path.basename(self.model_path),
                                     level, message, values)]
        if self.p["grid.enabled"]:
            g = problems.get("grid")
            statuses.append(diag.make_status(
                f"{name}: drivable grid", self.p["grid.frame_id"],
                g.level if g else diag.OK, g.message if g else "publishing",
                {"frame": self.p["grid.frame_id"], "resolution (m)": self.p["grid.resolution"],
                 "camera_info timeout (s)": self.p["camera_info_timeout"],
                 "lookup table builds": self.pipeline.grid.builds if self.pipeline is not None else 0}))
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), statuses))

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Stop the workers; True when all of them ended within timeout (in total)."""
        for slot in (self.slot, self.ready_slot, self.out_slot):
            slot.close()
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
