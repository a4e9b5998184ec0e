"""`seg-perception process-bag IN --out OUT`: the node's processing over every camera frame of a bag.

The same frame runtime, pipelines and after-inference step the node runs (core/runtime,
core/pipeline, core/finish from the node's configuration), fed the very messages the node would
receive (deserialised with rclpy), one after the other in recorded order, nothing dropped. The
output messages (ros/outputs, as the node publishes them) are serialised into a new bag under the
node's topic names (/camera_seg/<output>; with several cameras /camera_seg/<C>/<output> and the
surround grid /camera_seg/drivable_grid; renamable with --remap) at the input frames' receive
times, with the input topics copied through (unless --no-copy-inputs): the result opens in RViz
or Foxglove like a recording of the node.

Cameras: one (the bag's camera topic, or --image-topic), or the params file's `cameras` (each
camera's C.image / C.camera_info, as the node resolves them). CameraInfo: a camera's first one
applies from its first frame on (a recording often starts with a frame before its CameraInfo);
later ones from their receive time, and the grid stops, as in the node, when the newest is
older than camera_info_timeout (in recorded time).

TF: the bag's /tf_static (from the start) and /tf (in recorded order) give the camera's pose
(camera_pose.source auto or tf) and, with map.pose_source tf, the map's, at each frame's stamp,
as the node's TF listener would (support/bag_tf.py).
"""

from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.parameters import NODE_NAME
from .support.common import ParameterError, Progress, node_config

NODE_NAMESPACE = "/" + NODE_NAME  # the node's topics: what the bag would have recorded


# ----------------------------------------------------------------------------- command

def add_arguments(p) -> None:
    from ..core.bagio import STORAGES
    from ..core.outputs import OUTPUTS

    p.add_argument("bag", help="input bag: a rosbag2 directory (sqlite3 or MCAP) or a .db3/.mcap file")
    p.add_argument("--out", required=True, help="output bag directory to create")
    p.add_argument("--params-file", help="the node's ROS 2 params file (e.g. config/camera_seg.yaml, or "
                   "config/multi_camera.yaml for a rig); default: the node's defaults")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="override one node parameter, e.g. -p grid.enabled:=false (repeatable)")
    p.add_argument("--image-topic", help="camera topic of a single camera (default: the bag's only "
                   "Image/CompressedImage topic)")
    p.add_argument("--camera-info-topic", help="CameraInfo topic of a single camera (default: the camera's "
                   "sibling camera_info)")
    p.add_argument("--outputs", default="all",
                   help="comma-separated outputs to write (default all): " + ", ".join(OUTPUTS))
    p.add_argument("--no-copy-inputs", action="store_true", help="write only the node's outputs")
    p.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW",
                   help="rename a topic in the output bag, e.g. /camera_seg/overlay:=/seg/overlay")
    p.add_argument("--render", metavar="DIR", help="also write image | overlay | grid PNGs and drive.mp4 to DIR "
                   "(the first camera; with several, the surround grid)")
    p.add_argument("--render-height", type=int, default=None, help="panel height of --render pictures "
                   "(default: the frame's, at most 480)")
    p.add_argument("--storage", choices=STORAGES, help="output storage (default: the input's)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many camera frames")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an existing bag")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(text: str, code: int = 2) -> int:
    print(f"seg-perception process-bag: {text}", file=sys.stderr)
    return code


def run(args) -> int:
    from ..core.bagio import BagError, parse_remaps

    try:
        cfg = node_config(args.params_file, args.param)
        outputs = _outputs(args.outputs, cfg)
        remaps = parse_remaps(args.remap)
    except (ParameterError, ValueError, OSError) as exc:
        return _fail(str(exc))
    from .support.bag_tf import check_tf

    reason = check_tf(cfg)
    if reason:
        return _fail(reason)
    try:
        stats = process_bag(args.bag, args.out, cfg, outputs, remaps=remaps,
                            copy_inputs=not args.no_copy_inputs, image_topic=args.image_topic,
                            camera_info_topic=args.camera_info_topic, render_dir=args.render,
                            render_height=args.render_height, storage=args.storage,
                            max_frames=args.max_frames, overwrite=args.overwrite, show_progress=not args.quiet)
    except BagError as exc:
        return _fail(str(exc))
    except Exception as exc:  # model, label file or grid settings that cannot be used
        return _fail(f"{type(exc).__name__}: {exc}")
    _print_summary(stats)
    if stats["interrupted"]:
        return 130
    if stats["frames_processed"] == 0:
        return _fail(f"no frame of {stats['image_topic']} could be processed"
                     + (f": {stats['first_error']}" if stats["first_error"] else ""), 1)
    return 0


def _outputs(text: str, cfg) -> List[str]:
    from ..core.outputs import GRID_OUTPUT, OUTPUTS

    available = [o for o in OUTPUTS if o != GRID_OUTPUT or cfg.grid.enabled]
    if text.strip() in ("", "all"):
        return available
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise ValueError(f"unknown output(s) {unknown}; choose from {list(OUTPUTS)}")
    if GRID_OUTPUT in names and not cfg.grid.enabled:
        raise ValueError("drivable_grid asked for but grid.enabled is false")
    return names


def output_topic(name: str, camera: str = "") -> str:
    """A camera's output topic as the node publishes it (/camera_seg/[C/]name)."""
    return f"{NODE_NAMESPACE}/{camera + '/' if camera else ''}{name}"


# ----------------------------------------------------------------------------- the bag

def camera_topics(cfg, topics, image_topic: Optional[str], camera_info_topic: Optional[str]
                  ) -> Dict[str, Tuple[str, Optional[str]]]:
    """{camera: (image topic, CameraInfo topic or None)}: the bag's camera (or the chosen one)
    for one camera; each configured camera's topics, as the node resolves them, for several."""
    from ..core import bagio

    kinds = {t: i.msgtype for t, i in topics.items()}
    if not cfg.multi:
        return {"": bagio.choose_camera_topics(kinds, image_topic, camera_info_topic,
                                               prefer_compressed=cfg.camera("").transport == "compressed")}
    if image_topic or camera_info_topic:
        raise ValueError("--image-topic / --camera-info-topic name one camera; with several cameras each "
                         "one's topics are its C.image and C.camera_info parameters")
    out = {}
    for cam in cfg.cameras:
        image = "/" + cam.image.lstrip("/") + ("/compressed" if cam.transport == "compressed" else "")
        info = "/" + cam.camera_info.lstrip("/")
        if kinds.get(image) not in bagio.CAMERA_TYPES:
            raise bagio.BagError(f"camera {cam.name}: no camera topic {image} in the bag (set {cam.name}.image)")
        out[cam.name] = (image, info if kinds.get(info) == bagio.CAMERA_INFO else None)
    return out


def process_bag(in_path: str, out_path: str, cfg, outputs: Sequence[str],
                remaps: Optional[Dict[str, str]] = None, copy_inputs: bool = True,
                image_topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
                render_dir: Optional[str] = None, render_height: Optional[int] = None,
                storage: Optional[str] = None, max_frames: Optional[int] = None,
                overwrite: bool = False, show_progress: bool = True, model=None,
                on_outcome=None, on_progress=None) -> Dict[str, object]:
    """Process ``in_path`` into ``out_path`` with the node's configuration ``cfg``
    (core/config.NodeConfig); returns counts and timings. Raises BagError for a bag that cannot
    be read or written (naming it), and the build errors of the pipeline.

    ``model``: a pipeline already loaded (core/pipeline.build_pipeline) whose network serves this
    bag (process-bags loads it once per worker for many bags); else one is loaded for the bag.
    ``on_outcome(camera, outcome, t_ns)``: called for each frame's FrameOutcome (per-frame
    figures); ``on_progress(frames_done, frames_total)``: after each network run."""
    from ..core import bagio

    remaps = remaps or {}
    with bagio.open_bag(in_path) as reader:
        topics = reader.topics()
        cams = camera_topics(cfg, topics, image_topic, camera_info_topic)
        first_image = next(iter(cams.values()))[0]
        total = sum(topics[img].count for img, _ in cams.values())
        if max_frames is not None:
            total = min(total, max_frames)
        odom_topic = _map_odometry_topic(cfg, topics, remaps)
        stats = _new_stats(in_path, out_path, cams, topics, render_dir, storage or reader.storage)
        stats["outputs"] = list(outputs)
        renderer = None
        if render_dir:
            from .support.render import DriveRenderer

            renderer = DriveRenderer(render_dir, fps=_frame_rate(reader, first_image, topics), height=render_height)
        progress = Progress(total, "frames", stream=sys.stderr, enabled=show_progress)
        t_start = time.perf_counter()
        run = _BagRun(cfg, cams, outputs, remaps, stats, renderer, reader.start_time, model, on_outcome,
                      on_progress, total)
        try:
            with bagio.BagWriter(out_path, stats["storage"], overwrite=overwrite) as writer:
                run.open(writer, odom_topic, topics)
                try:
                    run.frames(reader, topics, copy_inputs, max_frames, progress)
                except KeyboardInterrupt:  # keep what is done: the bag is closed properly
                    stats["interrupted"] = True
        except BaseException:
            progress.abort()
            raise
        finally:
            run.close()
            if renderer is not None:
                stats["video"] = renderer.close()
                stats["video_error"] = renderer.video_error
                stats["rendered"] = renderer.frames
        progress.finish()
        stats["seconds"] = time.perf_counter() - t_start
    return stats


def _new_stats(in_path: str, out_path: str, cams, topics, render_dir: Optional[str], storage: str) -> Dict[str, object]:
    """What process_bag counts and returns."""
    first_image, first_info = next(iter(cams.values()))
    return {"input": in_path, "output": out_path, "image_topic": first_image, "camera_info_topic": first_info,
            "cameras": {c: {"image_topic": img, "camera_info_topic": info} for c, (img, info) in cams.items()},
            "frames_total": sum(topics[img].count for img, _ in cams.values()), "frames_processed": 0,
            "frames_failed": 0, "first_error": None, "grid_missing": 0, "grid_error": None, "written": {},
            "copied_topics": [], "interrupted": False, "stage_seconds": {}, "render_dir": render_dir,
            "video": None, "video_error": None, "storage": storage}


def _map_odometry_topic(cfg, topics, remaps: Dict[str, str]) -> Optional[str]:
    """The bag's odometry topic when the drivable map is wanted (map.enabled) from odometry, else
    None."""
    if not (cfg.map.enabled and cfg.grid.enabled):
        return None
    from .support.bag_map import odometry_topic

    if cfg.map.pose_source == "tf":
        return None  # the bag's /tf (support/bag_tf.py)
    return odometry_topic(topics, remaps)


class _BagRun:
    """The frame runtime (core/runtime) run message by message in this thread, nothing dropped;
    its results turned into the node's messages and written at the input frames' receive times."""

    def __init__(self, cfg, cams: Dict[str, Tuple[str, Optional[str]]], outputs: Sequence[str],
                 remaps: Dict[str, str], stats: Dict[str, object], renderer, start_time: int, model=None,
                 on_outcome=None, on_progress=None, total: int = 0) -> None:
        from ..core.outputs import GRID_OUTPUT

        self.model, self.own_model = model, model is None
        self.on_outcome, self.on_progress, self.total = on_outcome, on_progress, total
        self.cfg, self.cams, self.outputs, self.remaps, self.stats = cfg, cams, list(outputs), remaps, stats
        self.renderer, self.start_time = renderer, start_time
        self.wanted = list(outputs)
        if renderer is not None:  # the pictures need the overlay and the grid
            self.wanted += [o for o in ("overlay", GRID_OUTPUT) if o not in self.wanted and
                            (o != GRID_OUTPUT or cfg.grid.enabled)]
        if cfg.multi and cfg.grid.enabled and GRID_OUTPUT in outputs and GRID_OUTPUT not in self.wanted:
            self.wanted.append(GRID_OUTPUT)
        self.by_image = {img: cam for cam, (img, _) in cams.items()}
        self.by_info = {info: cam for cam, (_, info) in cams.items() if info}
        self.runtime = self.finisher = self.writer = self.map = self.tf = None
        self.conns: Dict[Tuple[str, str], object] = {}
        self.done = 0
        self.info_seen: set = set()

    # -- set-up
    def open(self, writer, odom_topic: Optional[str], topics) -> None:
        from ..core.finish import Finisher
        from ..core.pipeline import build_pipeline, pipelines_on
        from ..core.runtime.plan import plan_runs
        from .support.bag_tf import BagTf, needs_tf
        from ..core.runtime.runtime import FrameRuntime
        from ..ros.outputs import OutputMessages

        self.writer = writer
        names = list(self.cams)
        if self.model is None:  # loaded for this bag alone
            self.model = build_pipeline(self.cfg, names[0])
        pipelines = pipelines_on(self.model, self.cfg, {c: info or "camera_info" for c, (_, info) in self.cams.items()})
        plan = plan_runs(self.cfg, next(iter(pipelines.values())).segmenter, 1)  # one run at a time here
        self.runtime = FrameRuntime(names, 1, decode=self._decode, wanted=lambda camera: self.wanted,
                                    deliver=self._deliver, log=self._log)
        self.runtime.attach(pipelines, plan)
        self.messages = OutputMessages(reuse_buffers=True)  # each message is serialised before the next
        map_pose = None
        if needs_tf(self.cfg):
            self.tf = BagTf(topics)
            for pl in pipelines.values():
                if pl.grid is not None and self.cfg.camera("").pose.source != "parameters":
                    pl.grid.pose_source = self.tf.camera_pose_source(self.cfg.camera("").pose.source,
                                                                     self.cfg.grid.frame_id)
            if self.cfg.map.pose_source == "tf":
                map_pose = self.tf.map_pose(self.cfg.map.frame_id, self.cfg.grid.frame_id)
        if self.cfg.map.enabled and self.cfg.grid.enabled:
            from .support.bag_map import BagMap

            self.map = BagMap(writer, self.cfg, self.topic("drivable_map"), self.stats,
                              "the bag's TF" if map_pose is not None else "the bag's odometry")
            self.map.odom_topic = odom_topic
        self.finisher = Finisher(names, self.cfg.grid, self.map.feed if self.map else None, map_pose)
        self._add_output_topics()

    def close(self) -> None:
        if self.own_model and self.model is not None:
            self.model.release()

    def topic(self, name: str, camera: str = "") -> str:
        return self.remaps.get(output_topic(name, camera), output_topic(name, camera))

    def _add_output_topics(self) -> None:
        """One connection per wanted output of each camera (and the surround grid), with the QoS
        the node offers."""
        from ..core import bagio
        from ..core.outputs import GRID_OUTPUT

        out_qos = bagio.TopicQos("reliable", "volatile", "keep_last", 1)
        for camera in self.cams:
            for name in self.outputs:
                msgtype = bagio.OCCUPANCY_GRID if name == GRID_OUTPUT else bagio.IMAGE
                self._connect((camera, name), self.topic(name, camera), msgtype, out_qos)
        if self.finisher.surround is not None and GRID_OUTPUT in self.outputs:
            self._connect(("", GRID_OUTPUT), self.topic(GRID_OUTPUT), bagio.OCCUPANCY_GRID, out_qos)

    def _connect(self, key, topic: str, msgtype: str, qos) -> None:
        self.conns[key] = self.writer.add_topic(topic, msgtype, qos)
        self.stats["written"][topic] = 0

    # -- messages
    def frames(self, reader, topics, copy_inputs: bool, max_frames: Optional[int], progress) -> None:
        """Every message in recorded order: inputs copied through, CameraInfo to its camera's grid
        at its recorded time (a camera's first one from its first frame on), odometry to the map,
        each camera frame processed: one frame per camera at a time into one network run."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from ..core import bagio

        classes = {img: (CompressedImage if topics[img].msgtype == bagio.COMPRESSED_IMAGE else Image)
                   for img, _ in self.cams.values()}
        copy_conns = {}
        if copy_inputs:
            copy_conns = {name: self.writer.copy_topic(info, self.remaps.get(name, name)) for name, info in topics.items()}
            self.stats["copied_topics"] = sorted(self.remaps.get(n, n) for n in copy_conns)
        self._first_camera_infos(reader, deserialize_message, CameraInfo)
        if self.tf is not None:
            self.tf.preload_static(reader)
        tf_topics = self.tf.topics if self.tf is not None else []
        wanted_topics = (list(self.by_image) + list(self.by_info) + tf_topics
                         + ([self.map.odom_topic] if self.map and self.map.odom_topic else []))
        pending: Dict[str, Tuple[object, int]] = {}  # one frame per camera, run together
        for conn, t, raw in reader.messages(None if copy_inputs else wanted_topics):
            if conn.topic in self.by_image and max_frames is not None and self.done + len(pending) >= max_frames:
                break
            if copy_inputs:
                self.writer.write(copy_conns[conn.topic], t, raw)
            if conn.topic in self.by_info:
                self._camera_info(self.by_info[conn.topic], deserialize_message(raw, CameraInfo), t)
            elif conn.topic in tf_topics:
                if conn.topic == "/tf":  # /tf_static is in the buffer from the start
                    self.tf.message(conn.topic, raw)
            elif self.map is not None and conn.topic == self.map.odom_topic:
                from nav_msgs.msg import Odometry

                self.map.odometry(deserialize_message(raw, Odometry))
            elif conn.topic in self.by_image:
                camera = self.by_image[conn.topic]
                if camera in pending or len(pending) >= self.runtime.plan.batch_limit:
                    self._run(pending, progress)
                pending[camera] = (deserialize_message(raw, classes[conn.topic]), t)
        self._run(pending, progress)
        if self.map is not None:
            self.map.finish()
        self.stats["camera_pose"] = {c: {"from": lane.pipeline.grid.pose_from, "frames skipped": lane.pipeline.grid.pose_skipped}
                                     for c, lane in self.runtime.lanes.items()
                                     if lane.pipeline is not None and lane.pipeline.grid is not None}

    def _first_camera_infos(self, reader, deserialize, CameraInfo) -> None:
        """Each camera's first CameraInfo, applied from its first frame on."""
        wanted = dict(self.by_info)
        for conn, t, raw in reader.messages(list(wanted)):
            camera = wanted.pop(conn.topic, None)
            if camera is not None:
                self._camera_info(camera, deserialize(raw, CameraInfo), t)
            if not wanted:
                break

    def _camera_info(self, camera: str, msg, t: int) -> None:
        grid = self.runtime.lanes[camera].pipeline.grid
        if grid is not None:
            grid.set_camera_info(msg, t / 1e9)  # recorded time: a bag replays its own clock

    def _run(self, pending: Dict[str, Tuple[object, int]], progress) -> None:
        if not pending:
            return
        items = [(camera, msg, t) for camera, (msg, t) in pending.items()]
        pending.clear()
        if self.tf is not None:
            self.tf.now_s = max(t for _, _, t in items) / 1e9
        self.runtime.run_now(items)
        self.done += len(items)
        progress.update(self.done)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)
        self.stats["frames_failed"] = sum(lane.stats.failed for lane in self.runtime.lanes.values())

    # -- the runtime's callbacks
    def _decode(self, camera: str, msg, timer):
        from ..ros.conversions import frame_from_msg

        return frame_from_msg(msg, timer)

    def _log(self, kind: str, level: str, text: str) -> None:
        if level == "error" and self.stats["first_error"] is None:
            self.stats["first_error"] = text

    def _deliver(self, camera: str, result, wanted: List[str], t: int) -> None:
        from rclpy.serialization import serialize_message

        from ..core.outputs import GRID_OUTPUT
        from ..ros.outputs import surround_grid_msg

        outcome = self.finisher.finish(camera, result, wanted, t=t / 1e9)
        msgs = self.messages.build(outcome, wanted)
        for name, msg in msgs.items():
            conn = self.conns.get((camera, name))
            if conn is not None:
                self.writer.write(conn, t, serialize_message(msg))
                self.stats["written"][self.topic(name, camera)] += 1
        if outcome.surround is not None and ("", GRID_OUTPUT) in self.conns:
            self.writer.write(self.conns[("", GRID_OUTPUT)], t, serialize_message(surround_grid_msg(outcome)))
            self.stats["written"][self.topic(GRID_OUTPUT)] += 1
        if GRID_OUTPUT in wanted and outcome.grid is not None and outcome.grid.error is not None:
            self.stats["grid_missing"] += 1
            self.stats["grid_error"] = self.stats["grid_error"] or outcome.grid.error
        if self.map is not None:
            self.map.written_after(outcome, t)
        self.stats["frames_processed"] += 1
        for stage, sec in result.timer.times.items():
            self.stats["stage_seconds"][stage] = self.stats["stage_seconds"].get(stage, 0.0) + sec
        if self.renderer is not None and camera == next(iter(self.cams)):
            self._render(outcome, msgs, t)
        if self.on_outcome is not None:
            self.on_outcome(camera, outcome, t)

    def _render(self, outcome, msgs, t: int) -> None:
        from ..ros.conversions import image_to_array

        overlay = msgs.get("overlay")
        grid = outcome.grid
        cells = grid.cells if grid is not None else None
        if self.finisher.surround is not None:  # several cameras: the surround grid, all around
            fused = self.finisher.surround.fused()
            cells = fused[0] if fused is not None else None
        self.renderer.add(outcome.result.frame.rgb(), image_to_array(overlay) if overlay is not None else None,
                          cells, outcome.grid_spec.resolution if outcome.grid_spec is not None else None,
                          caption=f"frame {self.renderer.frames}  t = {(t - self.start_time) / 1e9:.2f} s")


def _frame_rate(reader, image_topic: str, topics) -> float:
    info = topics[image_topic]
    duration = (reader.end_time - reader.start_time) / 1e9
    return (info.count - 1) / duration if info.count > 1 and duration > 0 else 10.0


def _print_summary(s: Dict[str, object]) -> None:
    from ..core.outputs import GRID_OUTPUT

    n = s["frames_processed"]
    secs = s.get("seconds") or 0.0
    fps = n / secs if secs > 0 else float("nan")
    print(f"{s['input']}: {n} of {s['frames_total']} frames of {s['image_topic']} processed in {secs:.1f} s "
          f"({fps:.1f} frames/s)" + (f", {s['frames_failed']} failed ({s['first_error']})" if s["frames_failed"] else ""))
    if n:
        stages = ", ".join(f"{k} {1e3 * v / n:.1f}" for k, v in sorted(s["stage_seconds"].items()))
        print(f"  mean ms per frame: {stages}")
    if s["camera_info_topic"] is None and GRID_OUTPUT in s.get("outputs", ()):
        print("  no CameraInfo topic in the bag: no drivable grid")
    elif s["grid_missing"]:
        print(f"  no grid for {s['grid_missing']} frames: {s['grid_error']}")
    if "map" in s:
        m = s["map"]
        print(f"  drivable map: {m['updates']} frames fused, {m['skipped']} skipped (no pose at their stamp), "
              f"{m['not_updated']} while odometry was missing or stale"
              + (f"; cleared {len(m['clears'])} times ({m['clears'][0]})" if m["clears"] else ""))
        if m.get("odometry_frames"):
            print(f"  warning: {m['odometry_frames']}")
    print(f"wrote {s['output']} ({s['storage']}):")
    for topic, count in s["written"].items():
        print(f"  {topic}: {count} messages")
    if s["copied_topics"]:
        print(f"  inputs copied: {', '.join(s['copied_topics'])}")
    if s["render_dir"]:
        video = s["video"] or f"no video ({s['video_error'] or 'no frames'})"
        print(f"rendered {s.get('rendered', 0)} pictures to {s['render_dir']}; {video}")
    if s["interrupted"]:
        print("interrupted: the output bag holds the frames processed so far")
