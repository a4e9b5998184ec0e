"""Small ONNX models built for the tests, whose output is known exactly.

The colour model classifies every pixel by its nearest class colour (argmax of 2 x.c - |c|^2):
paint a frame in class colours and the class map it must produce is the painting itself. It is a
real ONNX file with the project's graph contract and metadata, run through the real backends.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from seg_perception.core.model_info import ClassInfo, ModelInfo, METADATA_KEY

TEST_CLASSES = (
    ("Sky", (70, 130, 180)),
    ("Road", (128, 64, 128)),
    ("Sidewalk", (244, 35, 232)),
    ("Parking", (250, 170, 160)),
    ("Person", (220, 20, 60)),
    ("Car", (0, 0, 142)),
    ("Building", (70, 70, 70)),
)
CLASS_ID = {n: i for i, (n, _) in enumerate(TEST_CLASSES)}
COLOR = {n: c for n, c in TEST_CLASSES}

# A street-like layout of class blocks (rows top to bottom), shared by the DDS and bag tests.
STREET_LAYOUT = [
    ["Sky", "Sky", "Building", "Sky", "Sky", "Sky", "Building", "Building"],
    ["Building", "Sky", "Car", "Car", "Sky", "Sky", "Person", "Building"],
    ["Sidewalk", "Person", "Road", "Road", "Road", "Car", "Person", "Sidewalk"],
    ["Sidewalk", "Road", "Road", "Road", "Road", "Road", "Parking", "Parking"],
    ["Road", "Road", "Road", "Person", "Road", "Road", "Parking", "Parking"],
    ["Road", "Road", "Road", "Road", "Road", "Road", "Road", "Sidewalk"],
]

TEST_LABEL_YAML = """
groups:
  road: [Road]
  pedestrian: [Person]
  parking: [Parking]
  drivable: [Road, Parking]
  ground: [Road, Sidewalk, Parking]
  obstacle: [Person, Car, Building]
"""


def colour_model_info(height: int = 60, width: int = 80, fit: str = "stretch") -> ModelInfo:
    return ModelInfo(classes=tuple(ClassInfo(n, c) for n, c in TEST_CLASSES), input_height=height,
                     input_width=width, fit=fit, architecture="test_nearest_colour",
                     source={"weights": "nearest class colour (built by the tests)"})


# The colour model's scores scaled by this give its softmax: a pure class colour is sure
# (closest other class colour >= 6764 squared units away), a blend of two is not.
CONFIDENCE_TEMPERATURE = 1e-3


def colour_confidence(rgb: np.ndarray) -> np.ndarray:
    """What the colour model's confidence output is for these pixels (uint8 [..., 3] -> [...])."""
    colors = np.array([c for _, c in TEST_CLASSES], np.float64)
    x = rgb.astype(np.float64)
    scores = (2.0 * x @ colors.T - (colors ** 2).sum(1)) * CONFIDENCE_TEMPERATURE
    p_max = 1.0 / np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)
    return np.round(p_max * 255.0).astype(np.uint8)


def make_colour_model(path: str, height: int = 60, width: int = 80, fit: str = "stretch",
                      extra_matmuls: int = 0, confidence: bool = True) -> str:
    """Write the nearest-colour ONNX model. ``extra_matmuls`` adds honest compute (square
    matmuls whose result is multiplied by zero) to make inference slow for overload tests.
    ``confidence``: the second output of exported models (round(255 x max softmax)); off, the
    single-output graph of models exported before it."""
    info = colour_model_info(height, width, fit)
    if confidence:
        import dataclasses

        info = dataclasses.replace(info, confidence_name="confidence")
    colors = np.array([c for _, c in TEST_CLASSES], np.float32)  # K x 3
    w = (2.0 * colors.T).astype(np.float32)                     # 3 x K
    b = -(colors ** 2).sum(1).astype(np.float32)                 # K
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "W"], ["s0"]),
        helper.make_node("Add", ["s0", "B"], ["scores"]),
    ]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
             helper.make_tensor("B", TensorProto.FLOAT, b.shape, b.ravel())]
    last = "scores"
    if extra_matmuls:
        n = 512
        rng = np.random.default_rng(0)
        # orthogonal: the chain keeps its scale (no overflow, no slow denormal arithmetic)
        m = np.linalg.qr(rng.standard_normal((n, n)))[0].astype(np.float32)
        inits += [helper.make_tensor("M", TensorProto.FLOAT, m.shape, m.ravel()),
                  helper.make_tensor("Z", TensorProto.FLOAT, [1], [0.0])]
        # tie the chain to the input so ONNX Runtime cannot fold it into a constant at load
        nodes += [helper.make_node("ReduceMax", ["xf"], ["xmax"], keepdims=0),
                  helper.make_node("Mul", ["xmax", "Z"], ["x0"]),
                  helper.make_node("Add", ["M", "x0"], ["Mx"])]  # = M, but only known at run time
        prev = "Mx"
        for i in range(extra_matmuls):
            nodes.append(helper.make_node("MatMul", [prev, "M"], [f"mm{i}"]))
            prev = f"mm{i}"
        nodes += [helper.make_node("ReduceSum", [prev], ["mmsum"], keepdims=0),
                  helper.make_node("Mul", ["mmsum", "Z"], ["zero"]),
                  helper.make_node("Add", ["scores", "zero"], ["scores2"])]
        last = "scores2"
    nodes += [helper.make_node("ArgMax", [last], ["am"], axis=3, keepdims=0),
              helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.UINT8)]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", height, width])]
    if confidence:
        inits += [helper.make_tensor("T", TensorProto.FLOAT, [1], [CONFIDENCE_TEMPERATURE]),
                  helper.make_tensor("S", TensorProto.FLOAT, [1], [255.0]),
                  helper.make_tensor("axis", TensorProto.INT64, [1], [3])]
        nodes += [helper.make_node("Mul", [last, "T"], ["z"]),
                  helper.make_node("ReduceMax", ["z", "axis"], ["zmax"], keepdims=1),
                  helper.make_node("Sub", ["z", "zmax"], ["zc"]),
                  helper.make_node("Exp", ["zc"], ["ez"]),
                  helper.make_node("ReduceSum", ["ez", "axis"], ["esum"], keepdims=0),
                  helper.make_node("Reciprocal", ["esum"], ["pmax"]),
                  helper.make_node("Mul", ["pmax", "S"], ["p255"]),
                  helper.make_node("Round", ["p255"], ["pr"]),
                  helper.make_node("Cast", ["pr"], ["confidence"], to=TensorProto.UINT8)]
        outputs.append(helper.make_tensor_value_info("confidence", TensorProto.UINT8,
                                                     ["N", height, width]))
    graph = helper.make_graph(
        nodes, "nearest_colour",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", height, width, 3])],
        outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def paint_blocks(layout, block_h: int, block_w: int) -> np.ndarray:
    """An RGB image from a 2-D list of class names, each a block_h x block_w block."""
    rows = []
    for row in layout:
        rows.append(np.concatenate([np.broadcast_to(np.array(COLOR[n], np.uint8), (block_h, block_w, 3))
                                    for n in row], axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def layout_ids(layout) -> np.ndarray:
    return np.array([[CLASS_ID[n] for n in row] for row in layout], np.uint8)


def sample_scene_reference_model(height: int = 64, width: int = 96, seed: int = 0
                                 ):
    """A tiny_fcn whose colour path is set, not trained, to each class's mean colour in the sample
    scene (nearest prototype in normalised colour space) and whose context path keeps small random
    weights. Its class maps on the sample frames have several classes with noisy boundaries, unlike
    a random network whose argmax is often one class everywhere (which agrees trivially). Used to
    test export and backend agreement without a trained model. Imports torch."""
    import torch
    from torch import nn

    from seg_perception.core.export import fresh_model
    from seg_perception.core.sample import SampleCamera, render_frame

    wrapped, info = fresh_model("tiny_fcn", height, width, seed=seed)
    info = info.with_source(weights="colour prototypes of the sample scene (not trained)")
    cam = SampleCamera(width=width, height=height)
    sums = np.zeros((info.num_classes, 3))
    counts = np.zeros(info.num_classes)
    for index in (0, 11, 23):
        rgb, labels = render_frame(index, cam)
        for c in np.unique(labels):
            sel = labels == c
            sums[c] += rgb[sel].sum(axis=0)
            counts[c] += sel.sum()
    mean = np.array(info.mean) * 255.0
    std = np.array(info.std) * 255.0
    weight = np.zeros((info.num_classes, 3))
    bias = np.full(info.num_classes, -50.0)  # classes absent from the scene never win
    for c in range(info.num_classes):
        if counts[c]:
            proto = (sums[c] / counts[c] - mean) / std
            # argmax of -|x - p|^2 == argmax of 2 p.x - |p|^2
            weight[c] = 2.0 * proto
            bias[c] = -float(proto @ proto)
    net = wrapped.model
    with torch.no_grad():
        net.colour.weight.copy_(torch.tensor(weight, dtype=torch.float32).view(-1, 3, 1, 1))
        net.colour.bias.copy_(torch.tensor(bias, dtype=torch.float32))
        for module in net.context.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(0.5)
    return wrapped.eval(), info


def reference_model_files(directory, height: int, width: int):
    """The sample-scene reference model saved as a checkpoint and exported to ONNX in
    ``directory``: (onnx path, checkpoint path, wrapped model, info). Imports torch."""
    import os

    from seg_perception.core import export as ex

    wrapped, info = sample_scene_reference_model(height, width)
    ckpt, onnx_path = os.path.join(str(directory), "ref.pt"), os.path.join(str(directory), "ref.onnx")
    ex.save_checkpoint(wrapped, info, ckpt)
    ex.export_onnx(wrapped, info, onnx_path)
    return onnx_path, ckpt, wrapped, info
