"""The metadata every seg_perception model carries, and how it is read from model files.

A model file is self-describing: its class list (names and colours), the fixed input size it
expects and how camera frames are fitted to it, the normalisation folded into its graph, and what
it returns. ONNX files keep it as JSON under the metadata key ``seg_perception``; TensorRT
engines in a JSON file beside the engine; PyTorch checkpoints under the ``metadata`` key.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

METADATA_KEY = "seg_perception"
FORMAT = "seg_perception/1"
FIT_MODES = ("stretch", "letterbox")
# A model's numeric precisions: its ONNX variants (_fp16, _int8 Q/DQ) and TensorRT engines.
PRECISIONS = ("fp32", "fp16", "int8")


class ModelInfoError(ValueError):
    """The model's metadata is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    name: str
    color: Tuple[int, int, int]  # RGB, used by the overlay


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    classes: Tuple[ClassInfo, ...]
    input_height: int
    input_width: int
    # How a camera frame is fitted to the fixed input size:
    #   stretch   - resized to exactly HxW (aspect ratio not kept; no wasted pixels)
    #   letterbox - scaled to fit inside HxW keeping aspect ratio, the rest padded
    fit: str = "stretch"
    pad_value: int = 0
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Graph contract: input uint8 [N, H, W, 3] RGB, output uint8 [N, H, W] class ids.
    input_name: str = "image"
    output_name: str = "labels"
    # Optional second output uint8 [N, H, W]: per-pixel confidence, round(255 x the largest
    # softmax probability). Empty: the model has no such output (older exports).
    confidence_name: str = ""
    architecture: str = ""
    source: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def class_names(self) -> List[str]:
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes],
            "input": {
                "height": self.input_height,
                "width": self.input_width,
                "layout": "NHWC",
                "dtype": "uint8",
                "color": "rgb",
                "fit": self.fit,
                "pad_value": self.pad_value,
                "name": self.input_name,
            },
            "normalization": {"mean": list(self.mean), "std": list(self.std), "in_graph": True},
            "output": {"name": self.output_name, "dtype": "uint8", "semantics": "class_id_map"},
            **({"confidence": {"name": self.confidence_name, "dtype": "uint8",
                               "semantics": "max_softmax_probability_x255"}}
               if self.confidence_name else {}),
            "architecture": self.architecture,
            "source": dict(self.source),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelInfo":
        try:
            if d.get("format") != FORMAT:
                raise ModelInfoError(f"unsupported metadata format {d.get('format')!r}, expected {FORMAT!r}")
            classes = tuple(
                ClassInfo(str(c["name"]), _color(c["color"])) for c in d["classes"]
            )
            inp = d["input"]
            norm = d.get("normalization", {})
            out = d.get("output", {})
            info = cls(
                classes=classes,
                input_height=int(inp["height"]),
                input_width=int(inp["width"]),
                fit=str(inp.get("fit", "stretch")),
                pad_value=int(inp.get("pad_value", 0)),
                mean=tuple(float(v) for v in norm.get("mean", (0.485, 0.456, 0.406))),
                std=tuple(float(v) for v in norm.get("std", (0.229, 0.224, 0.225))),
                input_name=str(inp.get("name", "image")),
                output_name=str(out.get("name", "labels")),
                confidence_name=str(d.get("confidence", {}).get("name", "")),
                architecture=str(d.get("architecture", "")),
                source=dict(d.get("source", {})),
            )
        except ModelInfoError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelInfoError(f"malformed model metadata: {exc!r}") from exc
        info.validate()
        return info

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelInfoError(f"model metadata is not valid JSON: {exc}") from exc
        return cls.from_dict(d)

    def validate(self) -> None:
        if self.confidence_name in (self.input_name, self.output_name):
            raise ModelInfoError(f"confidence output name {self.confidence_name!r} clashes with "
                                 "the input or class map name")
        if not 1 <= len(self.classes) <= 255:
            raise ModelInfoError(f"a model needs 1..255 classes (uint8 map), has {len(self.classes)}")
        names = self.class_names
        if len(set(names)) != len(names):
            raise ModelInfoError(f"duplicate class names in model metadata: {names}")
        if self.input_height <= 0 or self.input_width <= 0:
            raise ModelInfoError(f"invalid model input size {self.input_width}x{self.input_height}")
        if self.fit not in FIT_MODES:
            raise ModelInfoError(f"unknown fit mode {self.fit!r}; expected one of {FIT_MODES}")

    def with_source(self, **kv: Any) -> "ModelInfo":
        src = dict(self.source)
        src.update(kv)
        return dataclasses.replace(self, source=src)


def _color(v: Sequence[Any]) -> Tuple[int, int, int]:
    if len(v) != 3 or not all(0 <= int(x) <= 255 for x in v):
        raise ModelInfoError(f"class colour must be 3 values in 0..255, got {v!r}")
    return (int(v[0]), int(v[1]), int(v[2]))


def set_onnx_metadata(model, info: ModelInfo) -> None:
    """Embed ``info`` in an onnx.ModelProto (replacing what was there)."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = info.to_json()


def read_onnx_metadata(path: str) -> Optional[str]:
    """The metadata JSON string embedded in an ONNX file, read without torch (onnx if present,
    else ONNX Runtime's model metadata)."""
    try:
        import onnx  # noqa: F401  (development set)
    except ImportError:
        onnx = None
    if onnx is not None:
        model = onnx.load(path, load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return prop.value
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


# ---------------------------------------------------------------- the graph against its metadata

def wrap_hint(path: str) -> str:
    """The command that makes a segmentation ONNX from elsewhere meet the contract."""
    import os

    stem = os.path.splitext(path)[0]
    return (f"seg-perception wrap {path} --out {stem}_wrapped.onnx --classes cityscapes|camvid|CLASSES.yaml "
            "(docs/models.md)")


def contract_problems(info: ModelInfo, inputs: Sequence[Tuple[str, str, Sequence[Any]]],
                      outputs: Sequence[Tuple[str, str, Sequence[Any]]]) -> List[str]:
    """What in a graph's inputs and outputs, each (name, element type as 'uint8' / 'float32' /
    ..., shape with ints or names for dynamic dimensions), contradicts its metadata; [] when
    it meets the contract: one uint8 [N, H, W, 3] input, uint8 [N, H, W] class ids (and the
    confidence output where the metadata names one)."""
    problems: List[str] = []
    h, w = info.input_height, info.input_width

    def fixed(d: Any) -> bool:
        return isinstance(d, int) and d > 0

    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs {[i[0] for i in inputs]}, the contract has one")
    for name, dtype, shape in inputs[:1]:
        if name != info.input_name:
            problems.append(f"input is {name!r}, the metadata says {info.input_name!r}")
        if dtype != "uint8":
            problems.append(f"input {name!r} is {dtype}, the contract takes uint8 pixels")
        if len(shape) != 4 or any(fixed(d) and d != v for d, v in zip(list(shape)[1:], (h, w, 3))):
            problems.append(f"input {name!r} has shape {list(shape)}, the contract is [N, {h}, {w}, 3] "
                            f"(NHWC at the metadata's {h}x{w})")
    by_name = {o[0]: o for o in outputs}
    wanted = [(info.output_name, "class ids")] + ([(info.confidence_name, "confidence")]
                                                 if info.confidence_name else [])
    for name, what in wanted:
        if name not in by_name:
            problems.append(f"no output {name!r} ({what}, named in the metadata); outputs: {list(by_name)}")
            continue
        _, dtype, shape = by_name[name]
        if dtype != "uint8":
            problems.append(f"output {name!r} ({what}) is {dtype}, the contract is uint8"
                            + (" (logits: the model still needs its ArgMax)" if what == "class ids"
                               and dtype.startswith("float") else ""))
        if len(shape) != 3 or any(fixed(d) and d != v for d, v in zip(list(shape)[1:], (h, w))):
            problems.append(f"output {name!r} ({what}) has shape {list(shape)}, the contract is [N, {h}, {w}]")
    return problems
