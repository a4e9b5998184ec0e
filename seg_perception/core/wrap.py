"""`seg-perception wrap`: a segmentation ONNX from elsewhere made to meet the project's contract.

The contract (core/model_info.py): input uint8 [N, H, W, 3] RGB at a fixed H x W, output uint8
[N, H, W] class ids, optionally a uint8 confidence beside it, and the metadata (classes, colours,
input size) embedded. A model from torchvision, mmsegmentation or Hugging Face usually takes a
normalised float NCHW tensor and returns float logits, often at 1/4 or 1/8 of the input size.

The wrap edits the graph with onnx's own helpers, keeping every node of the original:

    image (uint8 NHWC) -> Cast float -> [channel swap for BGR] -> x * scale -> (x - mean) / std
        -> [Transpose to NCHW] -> the original graph -> logits
    logits [N, C, h, w] -> [Resize bilinear to H x W] -> ArgMax -> Cast uint8 -> labels
                        -> max softmax probability at h x w -> [Resize] -> x 255, rounded -> confidence
    ids [N, h, w] (int64 / int32 / uint8: a model that argmaxes itself) -> [Resize nearest] -> labels

Then it verifies on sample frames: the wrapped ids against argmax of the original model's
logits on the same normalised input (upsampled the same way), run with ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .model_info import ClassInfo, ModelInfo
from .wrap_graph import add_postprocess, add_preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_WRAP_AGREEMENT = 0.999


class WrapError(ValueError):
    """The model cannot be wrapped as asked; the message says what to change."""


@dataclasses.dataclass
class WrapOptions:
    classes: Tuple[ClassInfo, ...]
    size: Optional[Tuple[int, int]] = None      # (height, width) where the model's input is dynamic
    value_range: float = 1.0                    # the model's input range: 1 (0..1) or 255 (0..255)
    mean: Tuple[float, float, float] = IMAGENET_MEAN   # in the model's input range
    std: Tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False                           # the model takes BGR channel order
    layout: str = "auto"                        # the model's input layout: auto, nchw, nhwc
    output: str = ""                            # which output is the segmentation (default: the first)
    fit: str = "stretch"                        # how camera frames are fitted (metadata)
    confidence: bool = True                     # add the confidence output (logits models)
    keep_batch: bool = False                    # keep a fixed batch (else made dynamic where it can be)


@dataclasses.dataclass
class WrapReport:
    """What the wrap found and measured (printed by the command, kept in the metadata)."""
    input: str
    output: str
    kind: str                     # "logits" or "ids"
    model_size: Tuple[int, int]   # (height, width) of the input
    output_size: Tuple[int, int]  # of the segmentation output before any resize
    classes: int
    agreement: float = 0.0
    frames: int = 0
    frames_source: str = ""
    ms_per_frame: float = 0.0     # the wrapped model as the node runs it (see speed)
    speed: str = ""               # how ms_per_frame was measured
    confidence: bool = False
    external_data: bool = False
    batch: str = "N"              # the wrapped batch dimension: a number (fixed) or a name (dynamic)
    batch_note: str = ""          # what became of the original's batch dimension, and why

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- reading the model

@dataclasses.dataclass
class _Io:
    name: str
    elem_type: int
    dims: List[Any]               # int for a fixed dimension, str (or None) for a dynamic one


def _io(value_info) -> _Io:
    t = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return _Io(value_info.name, t.elem_type, dims)


def _graph_inputs(model) -> List[_Io]:
    """Real inputs: older exporters also list every initializer as a graph input."""
    inits = {i.name for i in model.graph.initializer}
    return [_io(v) for v in model.graph.input if v.name not in inits]


def _opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def _input_layout(inp: _Io, layout: str) -> str:
    if len(inp.dims) != 4:
        raise WrapError(f"input {inp.name!r} has {len(inp.dims)} dimensions {inp.dims}; an image "
                        "model takes 4 ([N, 3, H, W] or [N, H, W, 3])")
    if layout != "auto":
        return layout
    if inp.dims[1] == 3 and inp.dims[3] != 3:
        return "nchw"
    if inp.dims[3] == 3 and inp.dims[1] != 3:
        return "nhwc"
    if inp.dims[1] == 3:
        return "nchw"
    raise WrapError(f"cannot tell the layout of input {inp.name!r} {inp.dims}: give --layout nchw or nhwc")


def _fixed_size(inp: _Io, layout: str, size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    hw = inp.dims[2:4] if layout == "nchw" else inp.dims[1:3]
    static = all(isinstance(d, int) and d > 0 for d in hw)
    if static:
        if size is not None and tuple(size) != tuple(hw):
            raise WrapError(f"the model's input is fixed at {hw[0]}x{hw[1]} (HxW); --size {size[0]}x{size[1]} "
                            "cannot change it (re-export the model at that size, or leave --size out)")
        return int(hw[0]), int(hw[1])
    if size is None:
        raise WrapError(f"the model's input size is dynamic ({inp.dims}); give the size it should run "
                        "at: --size HxW (e.g. --size 512x1024)")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------- the wrap

def wrap_model(src: str, dst: str, opts: WrapOptions, frames_dir: str = "", num_frames: int = 4,
               min_agreement: float = MIN_WRAP_AGREEMENT) -> WrapReport:
    """Write ``dst`` meeting the contract, verified against ``src``; raises WrapError."""
    import onnx

    model, inp, opset = _read_model(src)
    external = _uses_external_data(src)
    layout = _input_layout(inp, opts.layout)
    height, width = _fixed_size(inp, layout, opts.size)
    out_name = opts.output or model.graph.output[0].name
    if out_name not in [o.name for o in model.graph.output]:
        raise WrapError(f"the model has no output {out_name!r}; its outputs: {[o.name for o in model.graph.output]}")

    _fix_input_dims(model, inp, layout, height, width)
    probe = _probe_output(model, inp, out_name, layout, height, width)
    kind, out_hw, channels_last = _output_kind(probe, len(opts.classes), out_name)

    batch, batch_note = _batch_dimension(model, inp, out_name, layout, height, width, opts.keep_batch)
    _add_preprocess(model, inp, layout, opts, batch, height, width)
    with_confidence = opts.confidence and kind == "logits"
    add_postprocess(model, out_name, kind, probe.ndim, channels_last, out_hw, (height, width), batch,
                    with_confidence, opset)

    info = _wrapped_info(src, opts, height, width, layout, out_name, kind, out_hw, with_confidence,
                         batch_note)
    from .model_info import set_onnx_metadata

    set_onnx_metadata(model, info)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise WrapError(f"the wrapped graph does not pass onnx.checker: {exc}") from exc
    _save(model, dst, external)

    report = WrapReport(input=f"{inp.name} {onnx.TensorProto.DataType.Name(inp.elem_type).lower()} "
                              f"{layout.upper()} {inp.dims}",
                        output=f"{out_name} {kind} {probe.dtype} {list(probe.shape)}",
                        kind=kind, model_size=(height, width), output_size=out_hw,
                        classes=len(opts.classes), confidence=with_confidence, external_data=external,
                        batch=str(batch), batch_note=batch_note)
    _verify(src, dst, inp, layout, opts, kind, channels_last, out_name, (height, width), frames_dir,
            num_frames, report)
    if report.agreement < min_agreement:
        raise WrapError(f"the wrapped model agrees with the original on {100 * report.agreement:.3f}% of "
                        f"the pixels, below {100 * min_agreement:.1f}%: wrote {dst} but do not use it")
    report.ms_per_frame, report.speed = time_as_the_node_runs_it(dst)
    return report


def _read_model(src: str):
    """(the ONNX model, its one image input, its opset); refuses what the wrap cannot take."""
    import onnx

    if not os.path.isfile(src):
        raise WrapError(f"model file not found: {src}")
    try:
        model = onnx.load(src)  # external weight files are read from beside it
    except Exception as exc:
        raise WrapError(f"cannot read {src} as ONNX: {exc}") from exc
    opset = _opset(model)
    if opset < 11:
        raise WrapError(f"the model uses ONNX opset {opset}; the wrap needs 11 or later (re-export it, "
                        "or convert it with onnx.version_converter)")
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise WrapError(f"the model has {len(inputs)} inputs {[i.name for i in inputs]}; the wrap takes "
                        "a model with one image input")
    inp = inputs[0]
    if inp.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.UINT8):
        raise WrapError(f"input {inp.name!r} is {onnx.TensorProto.DataType.Name(inp.elem_type)}; the wrap "
                        "takes float32, float16 or uint8 image inputs")
    return model, inp, opset


def _wrapped_info(src: str, opts: WrapOptions, height: int, width: int, layout: str, out_name: str,
                  kind: str, out_hw: Tuple[int, int], with_confidence: bool, batch_note: str) -> ModelInfo:
    """The metadata of the wrapped model: the contract's names, and how it was wrapped."""
    info = ModelInfo(classes=tuple(opts.classes), input_height=height, input_width=width, fit=opts.fit,
                     mean=tuple(m / opts.value_range for m in opts.mean),
                     std=tuple(s / opts.value_range for s in opts.std),
                     input_name="image", output_name="labels",
                     confidence_name="confidence" if with_confidence else "",
                     architecture=f"wrapped {os.path.basename(src)}",
                     source={"wrapped_from": os.path.basename(src),
                             "wrap": {"value_range": opts.value_range, "mean": list(opts.mean),
                                      "std": list(opts.std), "bgr": opts.bgr, "layout": layout,
                                      "output": out_name, "kind": kind,
                                      "output_size": list(out_hw), "batch": batch_note}})
    info.validate()
    return info


def _uses_external_data(path: str) -> bool:
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(path, load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


def _save(model, dst: str, external: bool) -> None:
    """Write ``dst``; weights that came from an external file go to one beside it (DST.data)."""
    import onnx

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if external:
        location = os.path.basename(dst) + ".data"
        if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(dst)), location)):
            os.remove(os.path.join(os.path.dirname(os.path.abspath(dst)), location))
        onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024)
    else:
        onnx.save_model(model, dst)


def _fix_input_dims(model, inp: _Io, layout: str, height: int, width: int) -> None:
    """Set the input's H and W (where they were dynamic) on the graph itself."""
    for v in model.graph.input:
        if v.name == inp.name:
            dims = v.type.tensor_type.shape.dim
            axes = (2, 3) if layout == "nchw" else (1, 2)
            for axis, value in zip(axes, (height, width)):
                dims[axis].ClearField("dim_param")
                dims[axis].dim_value = value


def _probe_output(model, inp: _Io, out_name: str, layout: str, height: int, width: int,
                  batch: int = 1) -> np.ndarray:
    """The segmentation output of the original model on ``batch`` zero frames: its real shape
    and type (exporters often leave output shapes symbolic)."""
    import onnxruntime as ort

    shape = (batch, 3, height, width) if layout == "nchw" else (batch, height, width, 3)
    dtype = {1: np.float32, 10: np.float16, 2: np.uint8}[inp.elem_type]
    if model.ByteSize() > 1_900_000_000:
        raise WrapError("models over 2 GB are not supported by the wrap")
    options = ort.SessionOptions()
    if batch != 1:  # a trial (see _batch_dimension): its failure is an answer, not an error to log
        options.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return sess.run([out_name], {inp.name: np.zeros(shape, dtype)})[0]
    except Exception as exc:
        raise WrapError(f"ONNX Runtime cannot run the model at {height}x{width}, batch {batch}: {exc}") from exc


def _output_kind(out: np.ndarray, num_classes: int, name: str) -> Tuple[str, Tuple[int, int], bool]:
    """("logits" | "ids", (h, w) of the output, channels last)."""
    if np.issubdtype(out.dtype, np.integer):
        if out.ndim == 4 and out.shape[1] == 1:
            return "ids", (out.shape[2], out.shape[3]), False
        if out.ndim == 3:
            return "ids", (out.shape[1], out.shape[2]), False
        raise WrapError(f"output {name!r} holds integers of shape {list(out.shape)}; class ids are "
                        "[N, H, W] or [N, 1, H, W]")
    if out.ndim != 4:
        raise WrapError(f"output {name!r} has shape {list(out.shape)}; logits are [N, C, H, W] "
                        "(or [N, H, W, C])")
    if out.shape[1] == num_classes:
        return "logits", (out.shape[2], out.shape[3]), False
    if out.shape[3] == num_classes:
        return "logits", (out.shape[1], out.shape[2]), True
    hint = ""
    if num_classes + 1 in (out.shape[1], out.shape[3]):
        hint = (f". One channel more than the classes: many models from their authors' repositories "
                f"output a background or ignore class last; name it, e.g. --classes cityscapes+background")
    raise WrapError(f"output {name!r} has shape {list(out.shape)}: no axis of {num_classes} classes. "
                    f"--classes gives {num_classes} classes; the model's logits say how many it has{hint}")


def _batch_dimension(model, inp: _Io, out_name: str, layout: str, height: int, width: int,
                     keep: bool) -> Tuple[Any, str]:
    """(the wrapped batch dimension, what became of the original's and why). Most exports fix
    the batch at 1; the node batches several cameras' frames where the model lets it, so a fixed
    batch is made dynamic where the graph runs at another batch (ONNX Runtime tries batch 2), and
    kept, with the reason, where it cannot (a Reshape to a constant shape, say)."""
    fixed = inp.dims[0] if isinstance(inp.dims[0], int) and inp.dims[0] > 0 else None
    if fixed is None:
        return "batch", "dynamic, as in the original"
    if keep:
        return fixed, f"fixed at {fixed}, as in the original (--keep-batch)"
    import copy

    trial = copy.deepcopy(model)
    _free_batch(trial, inp.name)
    try:
        out = _probe_output(trial, inp, out_name, layout, height, width, batch=2)
    except WrapError as exc:
        reason = str(exc).splitlines()[0][:300]
        return fixed, f"fixed at {fixed}: the graph does not run at batch 2 ({reason})"
    if out.shape[0] != 2:
        return fixed, f"fixed at {fixed}: at batch 2 the graph returns a batch of {out.shape[0]}"
    _free_batch(model, inp.name)
    return "batch", f"dynamic (the original's was fixed at {fixed})"


def _free_batch(model, input_name: str) -> None:
    """The batch dimension of the input and the outputs made a name; the intermediate shapes an
    exporter recorded (at its fixed batch) are dropped, ONNX Runtime infers them again."""
    for v in [v for v in model.graph.input if v.name == input_name] + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]


def _add_preprocess(model, inp: _Io, layout: str, opts: WrapOptions, batch, height: int,
                    width: int) -> None:
    """The options as graph parameters: (x * range / 255 - mean) / std as one multiply and one
    add per channel, in NHWC."""
    from onnx import TensorProto

    if inp.elem_type == TensorProto.UINT8 and (opts.value_range != 255.0 or opts.mean != (0.0, 0.0, 0.0)
                                               or opts.std != (1.0, 1.0, 1.0)):
        raise WrapError("the model takes uint8 input: give --range 255 --mean 0 0 0 --std 1 1 1 "
                        "(its normalisation is inside it)")
    scale = np.array([opts.value_range / 255.0 / s for s in opts.std], np.float32)
    shift = np.array([-m / s for m, s in zip(opts.mean, opts.std)], np.float32)
    add_preprocess(model, inp.name, inp.elem_type, layout == "nchw", opts.bgr, scale, shift, batch,
                   height, width)


# ---------------------------------------------------------------- verification

def normalised_input(frames: np.ndarray, layout: str, opts: WrapOptions, dtype) -> np.ndarray:
    """What the original model is fed for uint8 RGB ``frames`` [N, H, W, 3], computed here
    (numpy), independently of the wrapped graph."""
    x = frames.astype(np.float64)
    if opts.bgr:
        x = x[..., ::-1]
    x = (x * (opts.value_range / 255.0) - np.asarray(opts.mean)) / np.asarray(opts.std)
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.astype(dtype))


def _reference_ids(out: np.ndarray, kind: str, channels_last: bool, in_hw: Tuple[int, int]) -> np.ndarray:
    """Class ids at the input size from the original output, upsampled with OpenCV (bilinear
    logits, nearest ids: the Resize modes the wrap uses)."""
    import cv2

    height, width = in_hw
    if kind == "ids":
        ids = out.reshape(out.shape[0], out.shape[-2], out.shape[-1]).astype(np.uint8)
        return np.stack([cv2.resize(i, (width, height), interpolation=cv2.INTER_NEAREST) for i in ids])
    logits = out.astype(np.float32)
    if not channels_last:
        logits = logits.transpose(0, 2, 3, 1)
    maps = []
    for lg in logits:
        if lg.shape[:2] != (height, width):
            chans = [cv2.resize(np.ascontiguousarray(lg[..., c]), (width, height), interpolation=cv2.INTER_LINEAR)
                     for c in range(lg.shape[2])]
            lg = np.stack(chans, axis=-1)
        maps.append(lg.argmax(axis=-1).astype(np.uint8))
    return np.stack(maps)


def _verify(src: str, dst: str, inp: _Io, layout: str, opts: WrapOptions, kind: str, channels_last: bool,
            out_name: str, in_hw: Tuple[int, int], frames_dir: str, num_frames: int, report: WrapReport) -> None:
    """The wrapped ids against argmax of the original's output, frame by frame; a dynamic batch
    also as one batch of all frames against those."""
    import onnxruntime as ort

    from .quantize import camera_frames, fit_to_model, sample_frames

    height, width = in_hw
    if frames_dir:
        probe_info = ModelInfo(classes=tuple(opts.classes), input_height=height, input_width=width, fit=opts.fit)
        images, skipped = camera_frames(frames_dir, num_frames)
        frames = fit_to_model(images, probe_info)
        source = frames_dir + (f" (left out {len(skipped)} one-channel label or mask images)" if skipped else "")
    else:
        frames, source = np.stack(sample_frames(num_frames, height, width)), "seg_perception sample frames"
    options = ort.SessionOptions()
    original = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    wrapped = ort.InferenceSession(dst, options, providers=["CPUExecutionProvider"])
    dtype = {1: np.float32, 10: np.float16, 2: np.uint8}[inp.elem_type]
    shape = original.get_inputs()[0].shape
    agree = total = 0
    got_each = []
    for frame in frames:
        batch = frame[None]
        x = normalised_input(batch, layout, opts, dtype)
        if any(isinstance(d, int) and d != v for d, v in zip(shape, x.shape)):
            raise WrapError(f"the original model wants {shape}, the verification made {list(x.shape)}")
        ref = _reference_ids(original.run([out_name], {inp.name: x})[0], kind, channels_last, in_hw)
        got = wrapped.run(["labels"], {"image": batch})[0]
        got_each.append(got[0])
        agree += int((got == ref).sum())
        total += int(ref.size)
    report.agreement = agree / max(1, total)
    report.frames, report.frames_source = len(frames), source
    if not report.batch.isdigit() and len(frames) > 1:
        together = wrapped.run(["labels"], {"image": np.ascontiguousarray(frames)})[0]
        same = float((together == np.stack(got_each)).mean())
        if same < MIN_WRAP_AGREEMENT:
            raise WrapError(f"the wrapped model's batch of {len(frames)} frames agrees with the same "
                            f"frames one by one on {100 * same:.3f}% of the pixels: the graph mixes "
                            "frames of a batch; wrap it with --keep-batch")


def time_as_the_node_runs_it(path: str, min_runs: int = 5, max_runs: int = 30,
                             seconds: float = 3.0) -> Tuple[float, str]:
    """(median ms per frame, how it was measured): the wrapped model in the project's ONNX
    Runtime backend with the thread count the node gives it by default (num_threads 0), two
    warm-up runs left out (the first run of a session allocates and plans), then at least
    ``min_runs`` runs and as many as fit ``seconds`` (at most ``max_runs``)."""
    from .segmenter import Segmenter
    from .threads import inference_threads

    threads = inference_threads(0)
    with Segmenter.from_file(path, "onnxruntime", num_threads=threads, providers=["CPUExecutionProvider"]) as seg:
        info = seg.info
        frame = np.stack(sample_frames_for(info.input_height, info.input_width))
        for _ in range(2):
            seg.backend.infer_with_confidence(frame)
        times: List[float] = []
        end = time.perf_counter() + seconds
        while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() < end):
            t0 = time.perf_counter()
            seg.backend.infer_with_confidence(frame)
            times.append(time.perf_counter() - t0)
    how = (f"ONNX Runtime on the CPU with {threads} thread{'s' if threads > 1 else ''}, as the node runs "
           f"it with num_threads 0 on this machine; median of {len(times)} runs after 2 warm-up runs")
    return 1e3 * float(np.median(times)), how


def sample_frames_for(height: int, width: int) -> List[np.ndarray]:
    from .quantize import sample_frames

    return sample_frames(1, height, width)
