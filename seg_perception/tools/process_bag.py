"""`seg-perception process-bag IN --out OUT`: the node's pipeline over every camera frame of a bag.

The same pipeline the node runs (core.pipeline.build_pipeline from the node's parameters, its
outputs turned into messages by ros.outputs), fed the very messages the node would receive
(deserialised with rclpy), without DDS. Its output
messages are serialised with rclpy into a new bag under the node's topic names
(/camera_seg/<output>, renamable with --remap) at the input frames' receive times, with the input
topics copied through (unless --no-copy-inputs): the result opens in RViz or Foxglove like a
recording of the node.

CameraInfo: the bag's first CameraInfo applies from the first frame on (a recording often starts
with a frame before its CameraInfo); later ones apply from their receive time, and the grid stops,
as in the node, when the newest is older than camera_info_timeout (in recorded time).
"""

from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional, Sequence

from ..core.parameters import NODE_NAME
from .common import Progress, node_parameters, parse_param_overrides

NODE_NAMESPACE = "/" + NODE_NAME  # the node's topics: what the bag would have recorded


# ----------------------------------------------------------------------------- command

def add_arguments(p) -> None:
    from ..core.bagio import STORAGES
    from ..core.pipeline import OUTPUTS

    p.add_argument("bag", help="input bag: a rosbag2 directory (sqlite3 or MCAP) or a .db3/.mcap file")
    p.add_argument("--out", required=True, help="output bag directory to create")
    p.add_argument("--params-file", help="the node's ROS 2 params file (e.g. config/camera_seg.yaml); "
                   "default: the node's defaults")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="override one node parameter, e.g. -p grid.enabled:=false (repeatable)")
    p.add_argument("--image-topic", help="camera topic (default: the bag's only Image/CompressedImage topic)")
    p.add_argument("--camera-info-topic", help="CameraInfo topic (default: the camera's sibling camera_info)")
    p.add_argument("--outputs", default="all",
                   help="comma-separated outputs to write (default all): " + ", ".join(OUTPUTS))
    p.add_argument("--no-copy-inputs", action="store_true", help="write only the node's outputs")
    p.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW",
                   help="rename a topic in the output bag, e.g. /camera_seg/overlay:=/seg/overlay")
    p.add_argument("--render", metavar="DIR", help="also write image | overlay | grid PNGs and drive.mp4 to DIR")
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
    from ..core.bagio import BagError

    try:
        overrides = parse_param_overrides(args.param)
        params = node_parameters(args.params_file, overrides)
        outputs = _outputs(args.outputs, params)
        from ..core.bagio import parse_remaps

        remaps = parse_remaps(args.remap)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    try:
        stats = process_bag(args.bag, args.out, params, outputs, remaps=remaps,
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


def _outputs(text: str, params: Dict[str, object]) -> List[str]:
    from ..core.pipeline import GRID_OUTPUT, OUTPUTS

    available = [o for o in OUTPUTS if o != GRID_OUTPUT or params["grid.enabled"]]
    if text.strip() in ("", "all"):
        return available
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise ValueError(f"unknown output(s) {unknown}; choose from {list(OUTPUTS)}")
    if GRID_OUTPUT in names and not params["grid.enabled"]:
        raise ValueError("drivable_grid asked for but grid.enabled is false")
    return names


def output_topic(name: str) -> str:
    return f"{NODE_NAMESPACE}/{name}"


def process_bag(in_path: str, out_path: str, params: Dict[str, object], outputs: Sequence[str],
                remaps: Optional[Dict[str, str]] = None, copy_inputs: bool = True,
                image_topic: Optional[str] = None, camera_info_topic: Optional[str] = None,
                render_dir: Optional[str] = None, render_height: Optional[int] = None,
                storage: Optional[str] = None, max_frames: Optional[int] = None,
                overwrite: bool = False, show_progress: bool = True, pipeline=None) -> Dict[str, object]:
    """Process ``in_path`` into ``out_path``; returns counts and timings. Raises BagError for a
    bag that cannot be read or written (naming it), and the build errors of the pipeline."""
    from ..core import bagio
    from ..core.pipeline import build_pipeline

    remaps = remaps or {}
    with bagio.open_bag(in_path) as reader:
        topics = reader.topics()
        image_topic, info_topic = bagio.choose_camera_topics(
            {t: i.msgtype for t, i in topics.items()}, image_topic, camera_info_topic,
            prefer_compressed=params.get("image_transport") == "compressed")
        total = topics[image_topic].count
        odom_topic = _map_odometry_topic(params, topics, remaps)
        if max_frames is not None:
            total = min(total, max_frames)
        stats = _new_stats(in_path, out_path, image_topic, info_topic, topics[image_topic].count, render_dir,
                           storage or reader.storage)
        stats["outputs"] = list(outputs)
        own_pipeline = pipeline is None
        if own_pipeline:
            pipeline = build_pipeline(params, camera_info_topic=info_topic or "camera_info")
        renderer = None
        if render_dir:
            from .render import DriveRenderer

            renderer = DriveRenderer(render_dir, fps=_frame_rate(reader, image_topic, topics), height=render_height)
        progress = Progress(total, "frames", stream=sys.stderr, enabled=show_progress)
        t_start = time.perf_counter()
        try:
            with bagio.BagWriter(out_path, stats["storage"], overwrite=overwrite) as writer:
                sink = _OutputSink(writer, outputs, remaps, stats, renderer, reader.start_time)
                if odom_topic is not None:
                    from .bag_map import BagMap

                    sink.map = BagMap(writer, params, pipeline.grid.spec, sink.topic("drivable_map"), stats)
                    sink.odom_topic = odom_topic
                try:
                    _run_frames(reader, writer, topics, image_topic, info_topic, pipeline, sink,
                                copy_inputs, remaps, max_frames, progress, stats)
                except KeyboardInterrupt:  # keep what is done: the bag is closed properly
                    stats["interrupted"] = True
        except BaseException:
            progress.abort()
            raise
        finally:
            if renderer is not None:
                stats["video"] = renderer.close()
                stats["video_error"] = renderer.video_error
                stats["rendered"] = renderer.frames
            if own_pipeline:
                pipeline.release()
        progress.finish()
        stats["seconds"] = time.perf_counter() - t_start
    return stats


def _new_stats(in_path: str, out_path: str, image_topic: str, info_topic: Optional[str], frames: int,
               render_dir: Optional[str], storage: str) -> Dict[str, object]:
    """What process_bag counts and returns."""
    return {"input": in_path, "output": out_path, "image_topic": image_topic, "camera_info_topic": info_topic,
            "frames_total": frames, "frames_processed": 0, "frames_failed": 0,
            "first_error": None, "grid_missing": 0, "grid_error": None, "written": {}, "copied_topics": [],
            "interrupted": False, "stage_seconds": {}, "render_dir": render_dir, "video": None,
            "video_error": None, "storage": storage}


def _map_odometry_topic(params: Dict[str, object], topics, remaps: Dict[str, str]) -> Optional[str]:
    """The bag's odometry topic when the drivable map is wanted (map.enabled), else None."""
    if not (params.get("map.enabled") and params["grid.enabled"]):
        return None
    from .bag_map import odometry_topic

    if params["map.pose_source"] != "odometry":
        raise ValueError("process-bag takes the map's pose from the bag's odometry: "
                         "set map.pose_source:=odometry (TF from a bag is not read here)")
    return odometry_topic(topics, remaps)


def _run_frames(reader, writer, topics, image_topic: str, info_topic: Optional[str], pipeline, sink,
                copy_inputs: bool, remaps: Dict[str, str], max_frames: Optional[int], progress,
                stats: Dict[str, object]) -> None:
    """Every message in recorded order: inputs copied through, CameraInfo to the grid at its
    recorded time (the first one from the first frame on), each camera frame processed."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from ..core import bagio

    image_cls = CompressedImage if topics[image_topic].msgtype == bagio.COMPRESSED_IMAGE else Image
    copy_conns = {}
    if copy_inputs:
        copy_conns = {name: writer.copy_topic(info, remaps.get(name, name)) for name, info in topics.items()}
        stats["copied_topics"] = sorted(remaps.get(n, n) for n in copy_conns)
    grid = pipeline.grid
    # times are recorded times, in seconds: a bag replays its own clock
    if info_topic is not None and grid is not None:  # the first applies from the first frame
        for _, t, raw in reader.messages([info_topic]):
            grid.set_camera_info(deserialize_message(raw, CameraInfo), t / 1e9)
            break
    done = 0
    wanted_topics = [image_topic, info_topic or image_topic] + ([sink.odom_topic] if sink.map is not None else [])
    for conn, t, raw in reader.messages(None if copy_inputs else wanted_topics):
        if conn.topic == image_topic and max_frames is not None and done >= max_frames:
            break
        if copy_inputs:
            writer.write(copy_conns[conn.topic], t, raw)
        if conn.topic == info_topic:
            if grid is not None:
                grid.set_camera_info(deserialize_message(raw, CameraInfo), t / 1e9)
        elif sink.map is not None and conn.topic == sink.odom_topic:
            from nav_msgs.msg import Odometry

            sink.map.odometry(deserialize_message(raw, Odometry))
        elif conn.topic == image_topic:
            result = _process_frame(pipeline, deserialize_message(raw, image_cls), t, stats)
            if result is not None:
                sink.write(result, t, done)
                if sink.map is not None:
                    sink.map.frame(result, t)
            done += 1
            progress.update(done)


class _OutputSink:
    """A processed frame's messages into the output bag at the input's receive time (and into
    the --render pictures), counted in ``stats``."""

    def __init__(self, writer, outputs: Sequence[str], remaps: Dict[str, str], stats: Dict[str, object],
                 renderer, start_time: int) -> None:
        from ..core.pipeline import GRID_OUTPUT
        from ..ros.outputs import OutputMessages

        self.writer, self.outputs, self.stats = writer, list(outputs), stats
        self.remaps, self.renderer, self.start_time = remaps, renderer, start_time
        self.wanted = list(outputs)
        if renderer is not None:  # the pictures need the overlay and the grid
            self.wanted += [o for o in ("overlay", GRID_OUTPUT) if o not in self.wanted]
        self.messages = OutputMessages()
        self.conns = _add_output_topics(writer, outputs, self.topic, stats)
        self.map = None  # tools/bag_map.BagMap with map.enabled
        self.odom_topic = ""

    def topic(self, name: str) -> str:
        return self.remaps.get(output_topic(name), output_topic(name))

    def write(self, result, t: int, index: int) -> None:
        import numpy as np

        out_msgs = self.messages.build(result, self.wanted, t=t / 1e9)
        _count_stages(result, self.stats)
        _write_result(self.writer, self.conns, self.topic, result, out_msgs, t, self.wanted, self.stats)
        if self.renderer is not None:
            _render(self.renderer, result, out_msgs, np, t - self.start_time, index)


def _add_output_topics(writer, outputs: Sequence[str], topic_of, stats: Dict[str, object]) -> Dict[str, object]:
    """One output connection per wanted output, with the QoS the node offers."""
    from ..core import bagio
    from ..core.pipeline import GRID_OUTPUT

    out_qos = bagio.TopicQos("reliable", "volatile", "keep_last", 1)
    conns = {}
    for name in outputs:
        msgtype = bagio.OCCUPANCY_GRID if name == GRID_OUTPUT else bagio.IMAGE
        conns[name] = writer.add_topic(topic_of(name), msgtype, out_qos)
        stats["written"][topic_of(name)] = 0
    return conns


def _process_frame(pipeline, msg, t: int, stats: Dict[str, object]):
    """The node's processing of one frame; a bad frame or a failed inference is counted (the
    first error kept) and gives None, as the node publishes nothing for it."""
    from ..core.image import ImageError
    from ..core.pipeline import StageTimer
    from ..ros.conversions import frame_from_msg

    try:
        timer = StageTimer()
        result = pipeline.process(frame_from_msg(msg, timer), timer)
    except Exception as exc:  # ImageError for a bad frame, SegmenterError
        stats["frames_failed"] += 1
        if stats["first_error"] is None:
            kind = "bad image" if isinstance(exc, ImageError) else "processing failed"
            stats["first_error"] = f"{kind} at t={t / 1e9:.3f} s: {exc}"
        return None
    stats["frames_processed"] += 1
    return result


def _count_stages(result, stats: Dict[str, object]) -> None:
    for stage, sec in result.timer.times.items():
        stats["stage_seconds"][stage] = stats["stage_seconds"].get(stage, 0.0) + sec


def _write_result(writer, out_conns, topic_of, result, out_msgs, t: int, wanted: Sequence[str],
                  stats: Dict[str, object]) -> None:
    """Write a frame's output messages at the input's receive time and count a missing grid."""
    from rclpy.serialization import serialize_message

    from ..core.pipeline import GRID_OUTPUT

    for name, out_msg in out_msgs.items():
        if name in out_conns:
            writer.write(out_conns[name], t, serialize_message(out_msg))
            stats["written"][topic_of(name)] += 1
    if GRID_OUTPUT in wanted and result.pipeline.grid is not None and result.grid().error is not None:
        stats["grid_missing"] += 1
        stats["grid_error"] = stats["grid_error"] or result.grid().error


def _frame_rate(reader, image_topic: str, topics) -> float:
    info = topics[image_topic]
    duration = (reader.end_time - reader.start_time) / 1e9
    return (info.count - 1) / duration if info.count > 1 and duration > 0 else 10.0


def _render(renderer, result, out_msgs, np, t_rel: int, index: int) -> None:
    from ..ros.conversions import image_to_array

    overlay = out_msgs.get("overlay")
    grid = out_msgs.get("drivable_grid")
    cells = None
    resolution = None
    if grid is not None:
        cells = np.frombuffer(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
        resolution = grid.info.resolution
    renderer.add(result.frame.rgb(), image_to_array(overlay) if overlay is not None else None, cells,
                 resolution, caption=f"frame {index}  t = {t_rel / 1e9:.2f} s")


def _print_summary(s: Dict[str, object]) -> None:
    from ..core.pipeline import GRID_OUTPUT

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
