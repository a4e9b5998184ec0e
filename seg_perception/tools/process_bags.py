"""`seg-perception process-bags INPUT... --out DIR`: process-bag over many bags, on Ray.

Every bag under the inputs (bags, folders searched all the way down, glob patterns, or a .txt
file of paths) is processed exactly as `process-bag` does it (tools/process_bag.process_bag:
the node's runtime, outputs, several cameras and the map), each by one of a few Ray actors that
load the model once for all the bags they are given. With no --address (and no RAY_ADDRESS) Ray
runs embedded on this machine's cores; with one, on that cluster (whose nodes need the package
installed and the bags, the model and DIR on a path they share).

DIR/<bag>-<key>/ per bag: bag/ (the output bag), frames.jsonl (each frame's figures:
core/drive_metrics), result.json (counts, timings, the drive's figures); written in
DIR/.partial/ and renamed into place whole. <key> is a hash of the bag's bytes, the model file's
bytes and the parameters: a rerun skips what is done, an interrupted one resumes. DIR/
fleet_report.md ranks the drives by what is worth a look (tools/support/fleet_report).
Exit status: 0 every bag done, 1 some failed (each named with its reason), 2 refused, 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Dict, List, Optional, Sequence

from .support.common import ParameterError, node_config


def add_arguments(p) -> None:
    from ..core.outputs import OUTPUTS

    p.add_argument("inputs", nargs="+", help="bags, folders of bags, glob patterns or .txt lists of paths")
    p.add_argument("--out", required=True, help="result folder (created; a rerun reuses what is done)")
    p.add_argument("--params-file", help="the node's ROS 2 params file (default: the node's defaults)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="override one node parameter (repeatable)")
    p.add_argument("--outputs", default="all", help="comma-separated outputs to write (default all): "
                   + ", ".join(OUTPUTS))
    p.add_argument("--no-copy-inputs", action="store_true", help="write only the node's outputs")
    p.add_argument("--render", action="store_true", help="also render each bag's pictures and drive.mp4 "
                   "(into its result folder's render/)")
    p.add_argument("--max-frames", type=int, default=None, help="stop each bag after this many camera frames")
    p.add_argument("--image-topic", help="camera topic of a single camera (as process-bag)")
    p.add_argument("--camera-info-topic", help="its CameraInfo topic (as process-bag)")
    p.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW", help="rename a topic in the "
                   "output bags (as process-bag)")
    from ..core.bagio import STORAGES

    p.add_argument("--storage", choices=STORAGES, help="output storage (default: each input's)")
    add_ray_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_ray_arguments(p) -> None:
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--workers", type=int, default=None, help="actors, each with its own model in memory "
                   "(default: the cluster's CPUs / --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves per worker; "
                   "its inference threads when inference_threads is 0 (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (TensorRT or "
                   "torch CUDA backends; default 0)")


def _fail(text: str, code: int = 2) -> int:
    print(f"seg-perception process-bags: {text}", file=sys.stderr)
    return code


def worker_config(cfg, cpus_per_worker: float):
    """The worker's configuration: ONNX Runtime's threads set to the CPUs Ray gives the worker
    when the parameters leave them to the runtime (0), so workers do not fight over cores."""
    if int(cfg.values["num_threads"]) != 0:
        return cfg
    return type(cfg).from_values(dict(cfg.values, num_threads=max(1, int(cpus_per_worker))))


def run(args) -> int:
    from ..core import resources
    from .process_bag import _outputs
    from .support import fleet, fleet_report

    from ..core.bagio import parse_remaps

    try:
        cfg = node_config(args.params_file, args.param)
        outputs = _outputs(args.outputs, cfg)
        remaps = parse_remaps(args.remap)
        bags = fleet.find_bags(args.inputs)
    except (ParameterError, ValueError, OSError) as exc:
        return _fail(str(exc))
    if not bags:
        return _fail(f"no bag under {' '.join(args.inputs)}")
    if args.workers is not None and args.workers < 1:
        return _fail("--workers must be 1 or more")
    cfg = worker_config(cfg, args.cpus_per_worker)
    from .support.bag_tf import check_tf

    # the driver loads the model once as the node would at start; not where the workers have a
    # GPU the driver may lack (a worker that cannot load it says so, for each of its bags)
    reason = check_tf(cfg) or (check_model(cfg) if args.gpus_per_worker == 0 else None)
    if reason:
        return _fail(reason)
    model_path = cfg.model.path or resources.DEFAULT_MODEL
    options = {"outputs": list(outputs), "copy_inputs": not args.no_copy_inputs, "render": bool(args.render),
               "max_frames": args.max_frames, "image_topic": args.image_topic,
               "camera_info_topic": args.camera_info_topic, "remaps": remaps, "storage": args.storage}
    what = {"command": "process-bags", "parameters": result_parameters(cfg), **options, "code": code_version()}
    model_files = [model_path] + ([cfg.model.label_file] if cfg.model.label_file else [])
    try:
        fleet_run = fleet.run_jobs(bags, args.out, what, model_files, BagWorker, (cfg, options), args.workers,
                                   args.cpus_per_worker, args.gpus_per_worker, args.address, args.quiet)
    except (ValueError, RuntimeError) as exc:  # workers that do not fit, another run on DIR
        return _fail(str(exc))
    report = fleet_report.write_fleet_report(args.out, fleet_run)
    print_summary("process-bags", fleet_run, args.out, report)
    return fleet_run.exit_status


def result_parameters(cfg) -> Dict[str, object]:
    """The parameters a result depends on: all but the CPU threads (the same classes either way)."""
    return {k: v for k, v in cfg.values.items() if k != "num_threads"}


def check_model(cfg) -> Optional[str]:
    """Why the model (and label file) cannot serve the workers, before a worker starts: the same
    load the node makes at start."""
    from ..core.pipeline import build_pipeline

    try:
        build_pipeline(cfg, cfg.cameras[0].name if cfg.multi else "").release()
    except Exception as exc:
        return f"cannot load the model: {type(exc).__name__}: {exc}"
    return None


def code_version() -> str:
    """The package's version and a hash of its code: a result made by other code is made again."""
    import hashlib

    from .. import __version__

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256(__version__.encode())
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                h.update(name.encode())
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(f.read())
    return f"{__version__}+{h.hexdigest()[:12]}"


class BagWorker:
    """A Ray actor: the model loaded once, bags processed one after the other with it."""

    def __init__(self, cfg, options: Dict[str, object], board) -> None:
        from ..core.pipeline import build_pipeline

        from .support.bag_tf import check_tf

        reason = check_tf(cfg)  # this machine's Python, which may not be the driver's
        if reason:
            raise RuntimeError(reason)
        self.cfg, self.options, self.board = cfg, options, board
        self.model = build_pipeline(cfg, cfg.cameras[0].name if cfg.multi else "")

    def process(self, bag: str, final: str, out_dir: str) -> Dict[str, object]:
        from ..core.bagio import BagError
        from ..core.drive_metrics import drive_figures, frame_figures
        from .process_bag import process_bag
        from .support import fleet

        figures = []

        def make(tmp: str) -> Dict[str, object]:
            out_bag = os.path.join(tmp, "bag")
            o = self.options
            stats = process_bag(
                bag, out_bag, self.cfg, o["outputs"], remaps=o["remaps"], copy_inputs=o["copy_inputs"],
                image_topic=o["image_topic"], camera_info_topic=o["camera_info_topic"],
                render_dir=os.path.join(tmp, "render") if o["render"] else None, storage=o["storage"],
                max_frames=o["max_frames"], show_progress=False, model=self.model,
                on_outcome=lambda camera, outcome, t: figures.append(frame_figures(camera, outcome, t / 1e9)),
                on_progress=fleet.throttled_reporter(self.board, bag))
            if stats["interrupted"]:  # never renamed into place as done
                raise RuntimeError("interrupted")
            if stats["frames_processed"] == 0:
                raise BagError(f"no frame could be processed: {stats['first_error'] or 'no camera frames'}")
            with open(os.path.join(tmp, "frames.jsonl"), "w", encoding="utf-8") as f:
                for fig in figures:
                    f.write(json.dumps(fig.to_dict()) + "\n")
            stats["output"] = os.path.join(final, "bag")
            if stats.get("render_dir"):
                stats["render_dir"] = os.path.join(final, "render")
                stats["video"] = stats["video"] and os.path.join(final, "render", os.path.basename(stats["video"]))
            return {"status": "done", "bag": bag, "result": final, "frames": stats["frames_processed"],
                    "seconds": stats["seconds"], "stats": stats, "drive": drive_figures(figures).to_dict(),
                    "worker": f"{socket.gethostname()}:{os.getpid()}"}

        try:
            return fleet.atomic_result(out_dir, final, make)
        except (BagError, ValueError, OSError) as exc:
            return {"status": "failed", "bag": bag, "reason": f"{type(exc).__name__}: {exc}"}
        finally:
            self.board.finished.remote(bag)


def print_summary(command: str, run, out_dir: str, report: Optional[str]) -> None:
    done_now, before = run.done_now, run.done_before
    failed = run.with_status("failed")
    frames = sum(int(run.results[b].get("frames") or 0) for b in done_now)
    line = (f"{command}: {len(run.results)} bags: {len(done_now)} processed now, {len(before)} done before, "
            f"{len(failed)} failed")
    if run.interrupted:
        line += f", {len(run.with_status('interrupted'))} not finished (interrupted)"
    print(line)
    if done_now and run.seconds > 0:
        print(f"  {frames} frames in {run.seconds:.1f} s: {frames / run.seconds:.2f} frames/s, "
              f"{len(done_now) / run.seconds:.3f} bags/s on {run.workers} worker(s), Ray {run.cluster}")
    restarts = {b: r["worker_restarts"] for b, r in run.results.items() if r.get("worker_restarts")}
    for bag, n in restarts.items():
        print(f"  {bag}: its worker died {n} time(s); {'done on a new one' if run.results[bag].get('status') == 'done' else 'given up'}")
    for bag in failed:
        print(f"  failed: {bag}: {run.results[bag].get('reason')}")
    if run.removed_partial:
        print(f"  removed {run.removed_partial} half-written result(s) of an interrupted run")
    print(f"results in {out_dir}" + (f"; report: {report}" if report else ""))
    if run.interrupted:
        print("interrupted: the same command again goes on with the bags not done")
