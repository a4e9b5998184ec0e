"""ONNX export and checkpoints. Needs torch: used by training, export and the torch backend,
never by the node's ONNX Runtime or TensorRT paths.

The exported graph is core.torch_models.ClassMapModel: it folds the whole contract in, so every
backend shares the same pre- and post-processing and only an HxW uint8 map leaves the device.
``export_model`` (the export command) writes the file and refuses it unless ONNX Runtime agrees
with PyTorch on real frames.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .engine_cache import file_sha256
from .model_info import ClassInfo, ModelInfo, set_onnx_metadata  # noqa: F401  (re-exported)
# torch-free helpers shared with compare and the engine builder (re-exported here)
from .quantize import (fit_to_model, load_images, onnxruntime_class_maps,  # noqa: F401
                       pixel_agreement, sample_frames)
from .torch_models import (ARCHITECTURES, ClassMapModel, ConfidenceGraph, build_model,
                           build_wrapped_model)

log = logging.getLogger(__name__)

# The export refuses to report success below this pixel agreement with PyTorch.
MIN_EXPORT_AGREEMENT = 0.999
BATCH_DIM_NAME = "batch"

CONFIDENCE_OUTPUT = "confidence"


def save_checkpoint(wrapped: ClassMapModel, info: ModelInfo, path: str, **extra) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"metadata": info.to_dict(), "state_dict": wrapped.model.state_dict(), **extra}, path)


def export_onnx(wrapped: ClassMapModel, info: ModelInfo, path: str, opset: int = 18,
                dynamic_batch: bool = True, confidence: bool = True) -> str:
    """Write ``path`` (.onnx) with the graph contract and the metadata embedded; onnx.checker
    passes on it. The batch dimension is named ``batch`` (dynamic) unless dynamic_batch is off.
    ``confidence``: a second output, uint8 per-pixel confidence (see ClassMapModel), recorded
    in the metadata. This writes the file only: ``export_verified`` also checks it."""
    import onnx

    wrapped = wrapped.eval().cpu()
    info = dataclasses.replace(info, confidence_name=CONFIDENCE_OUTPUT if confidence else "")
    module: nn.Module = ConfidenceGraph(wrapped).eval() if confidence else wrapped
    outputs = [info.output_name] + ([info.confidence_name] if confidence else [])
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = torch.zeros(2 if dynamic_batch else 1, info.input_height, info.input_width, 3,
                          dtype=torch.uint8)
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"images_u8": {0: torch.export.Dim.DYNAMIC}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    for noisy in ("onnx_ir", "onnxscript"):  # per-pass INFO lines drown the export's own report
        logging.getLogger(noisy).setLevel(logging.WARNING)
    program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                input_names=[info.input_name], output_names=outputs,
                                external_data=False, optimize=True, verbose=False, **kwargs)
    program.save(path)
    model = onnx.load(path)
    if dynamic_batch:
        _name_batch_dim(model, BATCH_DIM_NAME)
    set_onnx_metadata(model, info)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _name_batch_dim(model, name: str) -> None:
    """The exporter names the dynamic batch dimension after an internal symbol (``s30``); give it a
    name a reader (and TensorRT's optimisation profile log) understands."""
    graph = model.graph
    symbol = graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        return
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = value.type.tensor_type.shape.dim
        for dim in dims:
            if dim.dim_param == symbol:
                dim.dim_param = name


def load_checkpoint(path: str, map_location: Optional[str] = "cpu"):
    """The project's own checkpoint (see CHECKPOINT_FORMS): (ClassMapModel, ModelInfo)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "metadata" not in ckpt:
        raise ExportError(f"{path} is not a seg_perception checkpoint (no 'metadata'). {CHECKPOINT_FORMS}")
    info = ModelInfo.from_dict(ckpt["metadata"])
    wrapped = build_wrapped_model(info)
    wrapped.model.load_state_dict(ckpt["state_dict"])
    return wrapped.eval(), info


CHECKPOINT_FORMS = (
    "seg-perception export takes (1) a checkpoint of `seg-perception train`: a dict "
    "{'metadata': the model's metadata, 'state_dict': its weights}; (2) a torchvision segmentation "
    "state_dict (a dict of tensors, or one under 'state_dict' or 'model') with --arch NAME "
    f"({', '.join(sorted(ARCHITECTURES))}) and --classes SET; (3) a whole model saved with "
    "torch.save(model) (its class must be importable here) with --classes SET")


def load_any_checkpoint(path: str, architecture: str = "", classes: Optional[Sequence[ClassInfo]] = None,
                        height: int = 0, width: int = 0) -> Tuple[ClassMapModel, ModelInfo]:
    """Any of CHECKPOINT_FORMS: (ClassMapModel, ModelInfo). Foreign weights get ImageNet
    normalisation (torchvision's) and the input size given (360x480 by default)."""
    import pickle

    if not os.path.isfile(path):
        raise ExportError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a whole pickled model: weights_only refuses its classes
        ckpt = None
    except Exception as exc:
        raise ExportError(f"cannot read {path} with torch.load: {exc}. {CHECKPOINT_FORMS}") from exc
    if isinstance(ckpt, dict) and "metadata" in ckpt:
        if classes:
            raise ExportError(f"{path} is a seg_perception checkpoint: it carries its classes, drop --classes")
        return load_checkpoint(path)
    if not classes:
        raise ExportError(f"{path} carries no class list: give --classes (cityscapes, camvid or a file). "
                          f"{CHECKPOINT_FORMS}")
    if ckpt is None:
        try:  # executes the file's pickled code: only for model files you trust
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ExportError(f"cannot load {path} as a whole model: {exc}. {CHECKPOINT_FORMS}") from exc
        if not isinstance(model, nn.Module):
            raise ExportError(f"{path} holds a {type(model).__name__}, not a torch model. {CHECKPOINT_FORMS}")
        arch = architecture or type(model).__name__
    else:
        state = ckpt.get("state_dict", ckpt.get("model", ckpt)) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
            raise ExportError(f"{path} is not a state_dict of tensors. {CHECKPOINT_FORMS}")
        if not architecture:
            raise ExportError(f"{path} is a plain state_dict: give its architecture with --arch "
                              f"({', '.join(sorted(ARCHITECTURES))}). {CHECKPOINT_FORMS}")
        model = build_model(architecture, len(classes))
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}  # training-only head
        fix = "check --arch and that --classes lists as many classes as the model's last layer has outputs"
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape (e.g. another number of classes)
            detail = str(exc).strip().splitlines()[-1].strip()
            raise ExportError(f"{path} does not fit {architecture} with {len(classes)} classes: {detail}; "
                              f"{fix}") from exc
        if missing or unexpected:
            raise ExportError(f"{path} does not fit {architecture} with {len(classes)} classes: "
                              f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:3]}); {fix}")
        arch = architecture
    info = ModelInfo(classes=tuple(classes), input_height=int(height or 360), input_width=int(width or 480),
                     architecture=arch if arch in ARCHITECTURES else "", source={"checkpoint_form": (
                         "whole model" if ckpt is None else "state_dict"), "class": arch})
    info.validate()
    return ClassMapModel(model, info.mean, info.std).eval(), info


# --------------------------------------------------------------------------------------------
# Fresh models, verification frames and the verified export used by `seg-perception export`.


class ExportError(RuntimeError):
    """The export cannot be made or does not agree with PyTorch."""


def default_classes() -> Tuple[ClassInfo, ...]:
    from .datasets import CAMVID_PARKING_CLASSES

    return tuple(ClassInfo(name, color) for name, color in CAMVID_PARKING_CLASSES)


def fresh_model(architecture: str, height: int = 360, width: int = 480, seed: int = 0,
                classes: Optional[Sequence[ClassInfo]] = None) -> Tuple[ClassMapModel, ModelInfo]:
    """A randomly initialised model of a named architecture (CamVid+Parking classes unless given):
    for tests, benchmarks of a size, and engine builds before a model is trained."""
    if architecture not in ARCHITECTURES:
        raise ExportError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    info = ModelInfo(classes=tuple(classes or default_classes()), input_height=int(height),
                     input_width=int(width), architecture=architecture,
                     source={"weights": f"random initialisation (seed {seed}), not trained"})
    info.validate()
    torch.manual_seed(seed)
    return build_wrapped_model(info).eval(), info


def torch_class_maps(wrapped: ClassMapModel, inputs: np.ndarray, batch_size: int = 4) -> np.ndarray:
    wrapped = wrapped.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch_size):
            out.append(wrapped(torch.from_numpy(np.ascontiguousarray(inputs[i:i + batch_size]))).numpy())
    return np.concatenate(out)


@dataclasses.dataclass
class VerifyResult:
    agreement: float
    pixels: int
    frames: int
    classes_seen: int          # distinct classes in the reference maps (1 = a trivial model)
    frames_source: str

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def verify_onnx(onnx_path: str, wrapped: ClassMapModel, inputs: np.ndarray,
                frames_source: str = "") -> VerifyResult:
    """Pixel agreement of the ONNX file (ONNX Runtime, CPU) with the PyTorch model on ``inputs``
    (uint8 [N, H, W, 3] at the model size). Batches of 2 exercise the dynamic batch dimension."""
    ref = torch_class_maps(wrapped, inputs, batch_size=2)
    got = onnxruntime_class_maps(onnx_path, inputs, batch_size=2)
    return VerifyResult(pixel_agreement(ref, got), int(ref.size), int(len(inputs)),
                        int(len(np.unique(ref))), frames_source)


def verification_inputs(info: ModelInfo, frames_dir: str = "", count: int = 8
                        ) -> Tuple[np.ndarray, str]:
    """Model inputs for verification: images of ``frames_dir`` when given, else the project's
    sample frames rendered at the model's input size."""
    if frames_dir:
        return fit_to_model(load_images(frames_dir, count), info), frames_dir
    return (np.stack(sample_frames(count, info.input_height, info.input_width)),
            "seg_perception sample frames")


def export_verified(wrapped: ClassMapModel, info: ModelInfo, out_path: str,
                    frames_dir: str = "", num_frames: int = 8, opset: int = 18,
                    min_agreement: float = MIN_EXPORT_AGREEMENT) -> VerifyResult:
    """Export, then check the file against PyTorch; a file that agrees less than
    ``min_agreement`` is removed and ExportError raised, so a bad export never stays behind."""
    export_onnx(wrapped, info, out_path, opset=opset)
    inputs, source = verification_inputs(info, frames_dir, num_frames)
    result = verify_onnx(out_path, wrapped, inputs, source)
    if result.agreement < min_agreement:
        os.remove(out_path)
        raise ExportError(
            f"exported ONNX agrees with PyTorch on only {result.agreement:.4%} of "
            f"{result.pixels} pixels ({result.frames} frames from {source}); at least "
            f"{min_agreement:.2%} is required. The file was removed.")
    if result.classes_seen <= 1:
        log.warning("the model predicts a single class on every verification pixel: the "
                    "agreement check is trivial for this model (untrained weights?)")
    return result


@dataclasses.dataclass
class ExportReport:
    onnx_path: str
    verify: VerifyResult
    variants: Dict[str, Dict[str, object]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {"onnx": self.onnx_path, "verify": self.verify.to_dict(), "variants": self.variants}


def _model_to_export(checkpoint: str, architecture: str, classes: Optional[Sequence[ClassInfo]],
                     height: int, width: int) -> Tuple[ClassMapModel, ModelInfo]:
    """The checkpoint's model (its file recorded in the metadata), or a fresh one of
    ``architecture``; refuses options that contradict what the checkpoint carries."""
    if checkpoint:
        wrapped, info = load_any_checkpoint(checkpoint, architecture, classes, height, width)
        own = "checkpoint_form" not in info.source
        if own and architecture and architecture != info.architecture:
            raise ExportError(f"{checkpoint} holds a {info.architecture!r} model, not {architecture!r}")
        if own and (height or width):
            raise ExportError("--height/--width apply to a fresh model or foreign weights only: a "
                              "seg_perception checkpoint carries the input size it was trained for")
        return wrapped, info.with_source(checkpoint=os.path.basename(checkpoint),
                                         checkpoint_sha256=file_sha256(checkpoint))
    if architecture:
        return fresh_model(architecture, height or 360, width or 480, classes=classes)
    raise ExportError("give a checkpoint to export, or --arch NAME for a fresh model")


def export_model(out_path: str, checkpoint: str = "", architecture: str = "",
                 height: int = 0, width: int = 0, frames_dir: str = "", num_frames: int = 8,
                 fp16: bool = False, int8: bool = False, calib_dir: str = "",
                 calib_images: int = 64, calib_method: str = "minmax", opset: int = 18,
                 min_agreement: float = MIN_EXPORT_AGREEMENT,
                 min_variant_agreement: Optional[Dict[str, float]] = None,
                 classes: Optional[Sequence[ClassInfo]] = None) -> ExportReport:
    """What `seg-perception export` does: load a checkpoint (or make a fresh model of a named
    architecture), export the FP32 ONNX verified against PyTorch, then derive the FP16 and/or
    INT8 Q/DQ variants next to it and measure their agreement with the FP32 file.

    A variant agreeing less than ``min_variant_agreement[precision]`` is removed and raises."""
    from . import quantize

    wrapped, info = _model_to_export(checkpoint, architecture, classes, height, width)
    info = info.with_source(exported_with=f"torch {torch.__version__}, opset {opset}")
    if int8 and not calib_dir:
        raise ExportError("INT8 needs calibration images: --calib-dir DIR (a folder of camera "
                          "images like those the model will see)")
    if int8 and not os.path.isdir(calib_dir):
        raise ExportError(f"calibration folder not found: {calib_dir}")

    verify = export_verified(wrapped, info, out_path, frames_dir, num_frames, opset, min_agreement)
    report = ExportReport(out_path, verify)
    if not (fp16 or int8):
        return report
    inputs, source = verification_inputs(info, frames_dir, num_frames)
    reference = torch_class_maps(wrapped, inputs)
    thresholds = dict(DEFAULT_VARIANT_AGREEMENT)
    thresholds.update(min_variant_agreement or {})
    made = []
    if fp16:
        made.append(("fp16", quantize.convert_fp16(out_path, quantize.variant_path(out_path, "fp16"))))
    if int8:
        calib = fit_to_model(load_images(calib_dir, calib_images), info)
        made.append(("int8", quantize.quantize_int8(
            out_path, quantize.variant_path(out_path, "int8"), calib, method=calib_method,
            calibration_source=calib_dir)))
    for precision, path in made:
        got = onnxruntime_class_maps(path, inputs)
        entry = {"path": path, "agreement_vs_torch": pixel_agreement(reference, got),
                 "frames_source": source, "min_agreement": thresholds[precision]}
        report.variants[precision] = entry
        if entry["agreement_vs_torch"] < thresholds[precision]:
            os.remove(path)
            raise ExportError(f"{precision} variant agrees with PyTorch on only "
                              f"{entry['agreement_vs_torch']:.4%} of pixels (< "
                              f"{thresholds[precision]:.2%}); removed {path}")
    return report


# Reduced precision changes some pixels near class boundaries; these floors catch a broken
# conversion (a wrong scale, a saturated activation), not the usual small drift.
DEFAULT_VARIANT_AGREEMENT = {"fp16": 0.99, "int8": 0.90}
