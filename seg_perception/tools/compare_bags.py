"""`seg-perception compare-bags INPUT... --out DIR --a NAME:=VALUE --b NAME:=VALUE`: two models,
or one model at two settings, over the same drives: where they disagree.

    seg-perception compare-bags drives/ --out cmp --b model:=new.onnx          # the default vs new
    seg-perception compare-bags drives/ --out cmp --a model:=old.onnx --b model:=new.onnx \
        --eval ../shared/data/camvid                                           # + mIoU of each
    seg-perception compare-bags drives/ --out cmp --b min_confidence.road:=0.6  # one model, two settings

A and B are the node's parameters (defaults, --params-file, -p) with --a / --b on top. Every
camera frame of every bag (every --every'th) goes through both, as the node would segment it
(core/pipeline: the same fitting, masks with their minimum confidences, overlays); the counts
(core/disagreement) are per mask (road, pedestrian, parking) and per class both models name.
Ray runs the bags as process-bags does (an actor per worker with both models loaded once;
results keyed by the bag's bytes, both models and both settings; a rerun skips what is done).

DIR/report.md (with DIR/pictures/ and each drive's worst frames) and DIR/report.json: over the
fleet and per drive, how often and where the two disagree per mask and class, mask shares, mean
confidence, the frames with the largest disagreement; with --eval DIR (a labelled folder in
CamVid or Cityscapes layout) each model's mIoU there.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from .support.common import ParameterError, node_config

WORST = 3  # pictures of the frames with the largest disagreement, per drive


def add_arguments(p) -> None:
    from .process_bags import add_ray_arguments

    p.add_argument("inputs", nargs="+", help="bags, folders of bags, glob patterns or .txt lists of paths")
    p.add_argument("--out", required=True, help="result folder (created; a rerun reuses what is done)")
    p.add_argument("--params-file", help="the node's ROS 2 params file, for both (default: the node's defaults)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a node parameter for both (repeatable)")
    p.add_argument("--a", action="append", default=[], metavar="NAME:=VALUE",
                   help="a parameter of A only, e.g. --a model:=old.onnx (repeatable; default: none)")
    p.add_argument("--b", action="append", default=[], metavar="NAME:=VALUE",
                   help="a parameter of B only, e.g. --b model:=new.onnx (repeatable)")
    p.add_argument("--name-a", help="A's name in the report (default: its model file and --a)")
    p.add_argument("--name-b", help="B's name in the report")
    p.add_argument("--every", type=int, default=1, help="compare every N-th camera frame (default 1: all)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per bag")
    p.add_argument("--worst", type=int, default=WORST, help=f"pictures of the worst frames per drive "
                   f"(default {WORST})")
    p.add_argument("--eval", metavar="DATA", help="a labelled folder (CamVid or Cityscapes layout): "
                   "each model's mIoU there")
    p.add_argument("--eval-mapping", help="YAML mapping of its label ids to the models' classes (default: "
                   "built in for CamVid and Cityscapes; see seg-perception evaluate)")
    p.add_argument("--eval-split", help="its split (default: test for CamVid, val for Cityscapes)")
    p.add_argument("--eval-limit", type=int, help="score only the first N images")
    add_ray_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(text: str, code: int = 2) -> int:
    print(f"seg-perception compare-bags: {text}", file=sys.stderr)
    return code


def side_name(cfg, overrides: Sequence[str]) -> str:
    from ..core import resources

    model = os.path.basename(cfg.model.path or resources.DEFAULT_MODEL)
    rest = [o for o in overrides if not o.startswith("model:=")]
    return model + (f" ({', '.join(rest)})" if rest else "")


def compare_config(cfg):
    """A side's configuration for comparing: no grid and no map (what is compared is the masks
    and class maps); the rest as given."""
    return type(cfg).from_values(dict(cfg.values, **{"grid.enabled": False, "map.enabled": False}))


def run(args) -> int:
    from ..core import resources
    from .process_bags import check_model, code_version, result_parameters, worker_config
    from .support import fleet

    try:
        cfg_a = node_config(args.params_file, list(args.param) + list(args.a))
        cfg_b = node_config(args.params_file, list(args.param) + list(args.b))
        bags = fleet.find_bags(args.inputs)
    except (ParameterError, ValueError, OSError) as exc:
        return _fail(str(exc))
    if not args.b and not args.a:
        return _fail("nothing to compare: give B's model or settings, e.g. --b model:=new.onnx")
    if result_parameters(cfg_a) == result_parameters(cfg_b):
        return _fail("--a and --b come to the same parameters: nothing to compare")
    if not bags:
        return _fail(f"no bag under {' '.join(args.inputs)}")
    if args.every < 1 or args.worst < 0:
        return _fail("--every must be 1 or more and --worst 0 or more")
    names = {"a": args.name_a or side_name(cfg_a, args.a), "b": args.name_b or side_name(cfg_b, args.b)}
    cfgs = {k: worker_config(compare_config(c), args.cpus_per_worker) for k, c in (("a", cfg_a), ("b", cfg_b))}
    for k, cfg in cfgs.items():
        reason = check_model(cfg) if args.gpus_per_worker == 0 else None
        if reason:
            return _fail(f"{k.upper()}: {reason}")
    evaluation = None
    if args.eval:  # before the bags: a folder that cannot be scored is refused before hours of work
        evaluation = evaluate_both(args, cfgs)
        if isinstance(evaluation, str):
            return _fail(evaluation)
    options = {"every": args.every, "max_frames": args.max_frames, "worst": args.worst}
    what = {"command": "compare-bags", "a": result_parameters(cfgs["a"]), "b": result_parameters(cfgs["b"]),
            **options, "code": code_version()}
    model_files = []
    for cfg in cfgs.values():
        model_files += [cfg.model.path or resources.DEFAULT_MODEL] + ([cfg.model.label_file] if cfg.model.label_file else [])
    try:
        fleet_run = fleet.run_jobs(bags, args.out, what, model_files, CompareWorker, (cfgs["a"], cfgs["b"], options),
                                   args.workers, args.cpus_per_worker, args.gpus_per_worker, args.address, args.quiet)
    except (ValueError, RuntimeError) as exc:  # workers that do not fit, another run on DIR
        return _fail(str(exc))
    from .process_bags import print_summary
    from .support.compare_report import write_compare_report

    report = write_compare_report(args.out, fleet_run, names, evaluation)
    print_summary("compare-bags", fleet_run, args.out, report)
    return fleet_run.exit_status


def evaluate_both(args, cfgs) -> object:
    """Each side's scores on the --eval folder, or why it cannot be scored."""
    from ..core import resources
    from .evaluate import EvaluationError, evaluate_model

    out = {}
    for k, cfg in cfgs.items():
        try:
            out[k] = evaluate_model(args.eval, cfg.model.path or resources.DEFAULT_MODEL, split=args.eval_split,
                                    backend=cfg.model.backend, label_file=cfg.model.label_file or None,
                                    num_threads=int(cfg.values["num_threads"]), limit=args.eval_limit,
                                    mapping_file=args.eval_mapping,
                                    quiet=args.quiet)
        except EvaluationError as exc:
            return f"--eval {args.eval} ({k.upper()}): {exc}".replace("a --mapping", "an --eval-mapping")
    return out


class CompareWorker:
    """A Ray actor: both models loaded once; bags compared one after the other."""

    def __init__(self, cfg_a, cfg_b, options: Dict[str, object], board) -> None:
        from ..core.pipeline import build_pipeline

        self.cfgs, self.options, self.board = (cfg_a, cfg_b), options, board
        camera = cfg_a.cameras[0].name if cfg_a.multi else ""
        self.a = build_pipeline(cfg_a, camera)
        try:
            self.b = build_pipeline(cfg_b, camera)
        except Exception:
            self.a.release()
            raise

    def process(self, bag: str, final: str, out_dir: str) -> Dict[str, object]:
        from ..core.bagio import BagError
        from .support import fleet

        try:
            return fleet.atomic_result(out_dir, final, lambda tmp: self._compare(bag, final, tmp))
        except (BagError, ValueError, OSError) as exc:
            return {"status": "failed", "bag": bag, "reason": f"{type(exc).__name__}: {exc}"}
        finally:
            self.board.finished.remote(bag)

    def _compare(self, bag: str, final: str, tmp: str) -> Dict[str, object]:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CompressedImage, Image

        from ..core import bagio
        from ..core.disagreement import Disagreement, summary
        from ..ros.conversions import frame_from_msg
        from .process_bag import camera_topics
        from .support import fleet

        every, limit, keep = int(self.options["every"]), self.options["max_frames"], int(self.options["worst"])
        counter = Disagreement(self.a.info.class_names, self.b.info.class_names)
        worst: List[tuple] = []  # a heap of (disagreement, n, picture data): the largest kept
        failed, first_error, n_done = 0, None, 0
        n_seen: Dict[str, int] = {}  # per camera topic: --every counts each camera's frames
        report = fleet.throttled_reporter(self.board, bag)
        os.makedirs(os.path.join(tmp, "pictures"))
        with bagio.open_bag(bag) as reader, open(os.path.join(tmp, "frames.jsonl"), "w", encoding="utf-8") as out:
            topics = reader.topics()
            start = reader.start_time / 1e9
            cams = camera_topics(self.cfgs[0], topics, None, None)
            by_image = {img: cam for cam, (img, _) in cams.items()}
            classes = {img: CompressedImage if topics[img].msgtype == bagio.COMPRESSED_IMAGE else Image
                       for img in by_image}
            total = sum(-(-topics[img].count // every) for img in by_image)
            total = min(total, limit) if limit is not None else total
            for conn, t, raw in reader.messages(list(by_image)):
                n_seen[conn.topic] = n_seen.get(conn.topic, 0) + 1
                if (n_seen[conn.topic] - 1) % every:
                    continue
                if limit is not None and n_done >= limit:
                    break
                try:
                    frame = frame_from_msg(deserialize_message(raw, classes[conn.topic]))
                    ra, rb = self.a.process(frame), self.b.process(frame)
                except Exception as exc:  # a frame that cannot be decoded: counted, the drive goes on
                    failed += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    continue
                camera = by_image[conn.topic]
                masks_a, masks_b = _masks(ra), _masks(rb)
                fig = counter.add(masks_a, masks_b, ra.labels(), rb.labels(), ra.confidence_small,
                                  rb.confidence_small, t / 1e9, camera)
                out.write(json.dumps(fig.to_dict()) + "\n")
                n_done += 1
                report(n_done, total)
                if keep and (len(worst) < keep or fig.disagreement > worst[0][0]):
                    item = (fig.disagreement, n_done, (fig, _difference_panels(ra, rb, masks_a, masks_b)))
                    (heapq.heappush if len(worst) < keep else heapq.heapreplace)(worst, item)
        if n_done == 0:
            raise BagError(f"no frame could be compared: {first_error or 'no camera frames'}")
        pictures = []
        for rank, (_, _, (fig, panels)) in enumerate(sorted(worst, key=lambda w: -w[0]), 1):
            name = f"worst_{rank}.png"
            _save_worst(os.path.join(tmp, "pictures", name), panels, fig, fig.t - start)
            pictures.append({"picture": os.path.join("pictures", name), "t": fig.t, "second": fig.t - start,
                             "camera": fig.camera, "disagreement": fig.disagreement})
        counts = counter.counts()
        return {"status": "done", "bag": bag, "result": final, "frames": n_done, "frames_failed": failed,
                "first_error": first_error, "cameras": list(cams), "counts": counts, "summary": summary(counts),
                "worst": pictures, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _masks(result) -> Dict[str, np.ndarray]:
    """The masks the node would publish for this frame (the groups the model's label file has)."""
    from ..core.disagreement import MASKS

    return {g: result.mask(g) for g in MASKS if result.post.groups.groups.get(g)}


def _difference_panels(ra, rb, masks_a, masks_b):
    """camera, A's overlay, B's overlay, the difference: at the overlay's size (small)."""
    import cv2

    from ..core.disagreement import mask_index

    h, w = ra.overlay_size
    ia = cv2.resize(mask_index(masks_a), (w, h), interpolation=cv2.INTER_NEAREST)
    ib = cv2.resize(mask_index(masks_b), (w, h), interpolation=cv2.INTER_NEAREST)
    rgb = ra.frame.rgb_at(h, w)
    return rgb.copy(), ra.overlay().copy(), rb.overlay().copy(), difference_picture(rgb, ia, ib)


# Difference colours (RGB): in a mask of A's only, of B's only, in different masks of both.
ONLY_A, ONLY_B, BOTH_DIFFERENT = (255, 140, 0), (0, 190, 255), (255, 0, 200)


def difference_picture(rgb: np.ndarray, index_a: np.ndarray, index_b: np.ndarray) -> np.ndarray:
    """The camera image, dimmed and grey, with the pixels the two models put in different masks
    painted: orange where only A has a mask, blue where only B has one, magenta where both have
    one but not the same (core/disagreement.mask_index maps)."""
    import cv2

    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) // 2
    differ = index_a != index_b
    grey[differ & (index_b == 0)] = ONLY_A
    grey[differ & (index_a == 0)] = ONLY_B
    grey[differ & (index_a > 0) & (index_b > 0)] = BOTH_DIFFERENT
    return grey


def _save_worst(path: str, panels, fig, second: float) -> None:
    import cv2

    from .support.pictures import composite, with_caption

    row = composite(panels, ["camera", "A", "B", "difference"], height=240)
    cam = f" camera {fig.camera}," if fig.camera else ""
    text = (f"t = {second:.1f} s,{cam} {100 * fig.disagreement:.1f} % of pixels in different masks; "
            "orange: in a mask of A only, blue: of B only, magenta: in different masks")
    cv2.imwrite(path, cv2.cvtColor(with_caption(row, text), cv2.COLOR_RGB2BGR))
