"""Reduced-precision variants of an exported model, and the torch-free tools that check them.

TensorRT 10 deprecated its implicit INT8 calibrators and TensorRT 11 builds only strongly typed
networks, so precision lives in the ONNX graph itself:

* FP16: every float tensor and weight converted to float16 (ONNX Runtime's float16 converter);
  the uint8 input and output stay as they are, so the graph contract does not change.
* INT8: explicit quantization, QuantizeLinear/DequantizeLinear (Q/DQ) pairs inserted by ONNX
  Runtime's ``quantize_static`` in QDQ format, int8 symmetric (zero point 0, as TensorRT
  requires), weights per output channel, activation ranges calibrated on an image folder.

Both files still run in ONNX Runtime on the CPU, which is how their agreement with FP32 is
measured where no GPU is present (a proxy for TensorRT's numbers, not the same kernels).

Needs onnx and onnxruntime (no torch): the helpers for image folders, fitting and pixel agreement
live here too so that ``compare`` and the engine builder can use them without torch.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .model_info import METADATA_KEY, ModelInfo, set_onnx_metadata

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# Operators whose inputs get Q/DQ pairs: the convolutions carry almost all the work, Add joins
# the residual branches (TensorRT fuses Q/DQ around Conv+Add), Resize keeps the upsampled head
# in int8. Activations, the normalisation and ArgMax stay in float.
INT8_OP_TYPES = ("Conv", "Add", "Resize")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class QuantizeError(RuntimeError):
    """A precision variant cannot be made."""


# --------------------------------------------------------------------------------------------
# Images, fitting and agreement (no torch).


def list_images(folder: str, limit: int = 0) -> List[str]:
    """Image files of ``folder`` (or matching a glob pattern such as ``dir/front_camera_*.jpg``)
    sorted by name; with ``limit``, that many spread evenly over them (neighbouring video frames
    look alike, so the first few are a poor sample)."""
    paths = _image_paths(folder)
    if limit and len(paths) > limit:
        idx = np.linspace(0, len(paths) - 1, limit).round().astype(int)
        paths = [paths[i] for i in idx]
    return paths


def _image_paths(folder: str) -> List[str]:
    if glob.has_magic(folder):
        paths = sorted(p for p in glob.glob(folder) if p.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) match {folder}")
        return paths
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return paths


def camera_frames(folder: str, limit: int = 0) -> Tuple[List[np.ndarray], List[str]]:
    """(RGB uint8 camera frames of ``folder`` or a glob pattern, the paths left out): images
    stored with one channel are label or mask maps (CamVid's annotations, PandaSet's labels
    beside its frames), not camera frames, and are left out. With ``limit``, that many frames
    spread evenly over the folder (the next one where a pick is a label map)."""
    import cv2

    paths = _image_paths(folder)
    n = len(paths)
    picks = list(dict.fromkeys(np.linspace(0, n - 1, min(limit, n)).round().astype(int).tolist())) if limit else []
    chosen = set(picks)
    order = picks + [i for i in range(n) if i not in chosen]  # a label map's place goes to the next
    frames: Dict[int, np.ndarray] = {}
    skipped: List[str] = []
    for i in order:
        if limit and len(frames) >= limit:
            break
        img = cv2.imread(paths[i], cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot decode image {paths[i]}")
        if img.ndim == 2:
            skipped.append(paths[i])
            continue
        if img.dtype != np.uint8:
            img = (img // 257).astype(np.uint8)  # 16-bit PNG
        frames[i] = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if not frames:
        raise FileNotFoundError(f"no camera frames in {folder}: its {n} images all have one channel "
                                "(label or mask maps); point it at the camera images")
    return [frames[i] for i in sorted(frames)], sorted(skipped)


def load_images(folder: str, limit: int = 0) -> List[np.ndarray]:
    """RGB uint8 camera frames of a folder or glob pattern (see camera_frames)."""
    return camera_frames(folder, limit)[0]


def sample_frames(count: int, height: int, width: int, first: int = 0, step: int = 7
                  ) -> List[np.ndarray]:
    """``count`` frames of the project's own sample drive rendered at ``height`` x ``width``
    (``step`` frames apart, so that the car and the pedestrian move between them)."""
    from .sample import SampleCamera, render_frame

    cam = SampleCamera(width=int(width), height=int(height))
    return [render_frame(first + i * step, cam)[0] for i in range(count)]


def fit_to_model(images: Sequence[np.ndarray], info: ModelInfo) -> np.ndarray:
    """[N, H, W, 3] uint8 model inputs: each image fitted the way the node fits camera frames."""
    from .fit import Fit

    batch = np.empty((len(images), info.input_height, info.input_width, 3), np.uint8)
    for i, img in enumerate(images):
        Fit(img.shape[0], img.shape[1], info).to_model(img, out=batch[i])
    return batch


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same class id in two class maps of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"class maps differ in shape: {a.shape} vs {b.shape}")
    return float(np.count_nonzero(a == b)) / a.size if a.size else 1.0


def onnxruntime_class_maps(onnx_path: str, inputs: np.ndarray, batch_size: int = 4,
                           num_threads: int = 0) -> np.ndarray:
    """Class maps of ``inputs`` (uint8 [N, H, W, 3] at the model size) from ONNX Runtime, CPU."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if num_threads:
        so.intra_op_num_threads = int(num_threads)
    sess = ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: np.ascontiguousarray(inputs[i:i + batch_size])})[0]
           for i in range(0, len(inputs), batch_size)]
    return np.concatenate(out).astype(np.uint8, copy=False)


# --------------------------------------------------------------------------------------------
# Reading what a graph is.


def _load(model_or_path):
    import onnx

    if isinstance(model_or_path, (str, os.PathLike)):
        return onnx.load(str(model_or_path))
    return model_or_path


def graph_precision(model_or_path) -> str:
    """'int8' for a graph with Q/DQ nodes, 'fp16' for one with float16 weights or casts, else
    'fp32'. With strongly typed TensorRT builds, this decides the engine's precision."""
    import onnx

    model = _load(model_or_path)
    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == f16 for t in model.graph.initializer):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in node.attribute):
            return "fp16"
    return "fp32"


def read_info(model) -> ModelInfo:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelInfo.from_json(prop.value)
    raise QuantizeError(f"the model carries no '{METADATA_KEY}' metadata")


def variant_path(fp32_path: str, precision: str) -> str:
    """model.onnx -> model_fp16.onnx / model_int8.onnx (fp32: unchanged)."""
    if precision == "fp32":
        return fp32_path
    root, ext = os.path.splitext(fp32_path)
    return f"{root}_{precision}{ext or '.onnx'}"


# --------------------------------------------------------------------------------------------
# FP16


def convert_fp16(src: str, dst: str) -> str:
    """Write the FP16 variant of the FP32 ONNX file ``src`` to ``dst`` (metadata kept, marked
    ``source.precision = fp16``). onnx.checker passes on the result."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(src)
    have = graph_precision(model)
    if have != "fp32":
        raise QuantizeError(f"{src} is already {have}; FP16 is made from the FP32 export")
    info = read_info(model)
    # keep_io_types: the contract's uint8 input and output stay; only the float inside changes.
    converted = convert_float_to_float16(model, keep_io_types=True)
    set_onnx_metadata(converted, info.with_source(precision="fp16", derived_from=os.path.basename(src)))
    onnx.checker.check_model(converted)
    _save(converted, dst)
    return dst


# --------------------------------------------------------------------------------------------
# INT8 (explicit quantization, Q/DQ)


def _calibration_reader(inputs: np.ndarray, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        """Feeds calibration frames one at a time (uint8 [1, H, W, 3], the graph's own input)."""

        def __init__(self) -> None:
            self._index = 0

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            if self._index >= len(inputs):
                return None
            batch = np.ascontiguousarray(inputs[self._index:self._index + 1])
            self._index += 1
            return {input_name: batch}

        def rewind(self) -> None:
            self._index = 0

    return FrameReader()


def quantize_int8(src: str, dst: str, calibration_inputs: np.ndarray, method: str = "minmax",
                  per_channel: bool = True, op_types: Sequence[str] = INT8_OP_TYPES,
                  calibration_source: str = "") -> str:
    """Write the INT8 Q/DQ variant of the FP32 ONNX file ``src`` to ``dst``, with activation
    ranges calibrated on ``calibration_inputs`` (uint8 [N, H, W, 3] at the model size).

    int8 symmetric for activations and weights (zero point 0: TensorRT's explicit quantization
    accepts only that), weights per output channel, QDQ format."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise QuantizeError(f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}")
    if calibration_inputs is None or len(calibration_inputs) == 0:
        raise QuantizeError("INT8 calibration needs at least one image")
    model = onnx.load(src)
    have = graph_precision(model)
    if have != "fp32":
        raise QuantizeError(f"{src} is already {have}; INT8 is made from the FP32 export")
    info = read_info(model)
    expected = (info.input_height, info.input_width, 3)
    if calibration_inputs.dtype != np.uint8 or tuple(calibration_inputs.shape[1:]) != expected:
        raise QuantizeError(f"calibration inputs must be uint8 [N, {expected[0]}, {expected[1]}, 3], "
                            f"got {calibration_inputs.dtype} {calibration_inputs.shape}")
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory(prefix="seg_perception_int8_") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        # Shape inference and graph clean-up first, as ONNX Runtime's quantizer recommends. Its
        # symbolic pass fails on the confidence branch (ONNX's own shape inference suffices:
        # only the batch dimension is dynamic).
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(
            pre, dst, _calibration_reader(calibration_inputs, info.input_name),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types), calibrate_method=calib,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    out = onnx.load(dst)
    set_onnx_metadata(out, info.with_source(
        precision="int8", derived_from=os.path.basename(src),
        calibration={"images": int(len(calibration_inputs)), "method": method,
                     "source": calibration_source, "per_channel": bool(per_channel)}))
    onnx.checker.check_model(out)
    _save(out, dst)
    return dst


def qdq_zero_points(model_or_path) -> List[Tuple[str, int]]:
    """(tensor name, largest |zero point|) of every QuantizeLinear's zero point: all must be 0 for
    TensorRT. Lets a test (and the builder) check a graph before a long build."""
    from onnx import numpy_helper

    model = _load(model_or_path)
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is not None:
                out.append((node.input[2], int(np.abs(numpy_helper.to_array(zp).astype(np.int32)).max())))
    return out


def _save(model, path: str) -> None:
    import onnx

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)  # never leave a half-written model under the final name


# --------------------------------------------------------------------------------------------
# Agreement of variants with their FP32 source.


def variant_agreement(fp32_path: str, variant_paths: Sequence[str], inputs: np.ndarray,
                      num_threads: int = 0) -> Dict[str, float]:
    """Pixel agreement of each variant with the FP32 file on ``inputs``, all in ONNX Runtime CPU."""
    ref = onnxruntime_class_maps(fp32_path, inputs, num_threads=num_threads)
    return {p: pixel_agreement(ref, onnxruntime_class_maps(p, inputs, num_threads=num_threads))
            for p in variant_paths}
