"""The graph pieces `seg-perception wrap` adds around a foreign model (core/wrap.py draws the
whole picture): the uint8 image input with the normalisation in front, and argmax, resize and
confidence behind. Every name carries PREFIX, so it never clashes with the model's own."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

PREFIX = "seg_perception_wrap/"


class _Builder:
    """Nodes and constants with the wrap's prefix, appended to a list."""

    def __init__(self, part: str) -> None:
        self.part = part  # "pre" or "post": the two builders never name alike
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, what: str) -> str:
        self._n += 1
        return f"{PREFIX}{self.part}/{what}_{self._n}"

    def const(self, values, dtype=np.float32, what: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(what)
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: Optional[str] = None, **attrs) -> str:
        from onnx import helper

        out = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(op_type), **attrs))
        return out

    def reduce(self, op_type: str, x: str, axis: int, keepdims: int, opset: int) -> str:
        # ReduceSum takes its axes as an input from opset 13, the other reductions from 18
        if opset >= (13 if op_type == "ReduceSum" else 18):
            return self.op(op_type, [x, self.const([axis], np.int64, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=[axis], keepdims=keepdims)

    def resize(self, x: str, height: int, width: int, mode: str, opset: int) -> str:
        """[N, C, h, w] -> [N, C, height, width]; N and C taken from x at run time."""
        nc = self.op("Slice", [self.op("Shape", [x]), self.const([0], np.int64), self.const([2], np.int64)])
        sizes = self.op("Concat", [nc, self.const([height, width], np.int64)], axis=0)
        attrs = ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"} if mode == "linear" else
                 {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})
        if opset >= 13:
            return self.op("Resize", [x, "", "", sizes], **attrs)
        empty = self.const(np.zeros(0), np.float32, "empty")
        return self.op("Resize", [x, empty, empty, sizes], **attrs)


def add_preprocess(model, input_name: str, elem_type: int, nchw: bool, bgr: bool,
                   scale: np.ndarray, shift: np.ndarray, batch, height: int, width: int) -> None:
    """A new input ``image`` (uint8 [batch, height, width, 3] RGB) feeding the model's input
    ``input_name``: float, [channel swap], x * scale + shift per channel, [to NCHW], cast to the
    model's ``elem_type``."""
    from onnx import TensorProto, helper

    b = _Builder("pre")
    x = b.op("Cast", ["image"], to=TensorProto.FLOAT)
    if bgr:
        x = b.op("Gather", [x, b.const([2, 1, 0], np.int64, "bgr")], axis=3)
    x = b.op("Add", [b.op("Mul", [x, b.const(scale, what="scale")]), b.const(shift, what="shift")])
    if nchw:
        x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
    if elem_type != TensorProto.FLOAT:
        x = b.op("Cast", [x], to=elem_type)
    b.op("Identity", [x], output=input_name)  # the original graph reads its input from here
    g = model.graph
    for v in list(g.input):
        if v.name == input_name:
            g.input.remove(v)
    g.input.insert(0, helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, height, width, 3]))
    for node in reversed(b.nodes):
        g.node.insert(0, node)
    g.initializer.extend(b.inits)


def add_postprocess(model, out_name: str, kind: str, rank: int, channels_last: bool, out_hw: Tuple[int, int],
                    in_hw: Tuple[int, int], batch, with_confidence: bool, opset: int) -> None:
    """The outputs ``labels`` (and ``confidence`` for logits) from the model's ``out_name``:
    see the picture in core/wrap.py."""
    from onnx import TensorProto, helper

    b = _Builder("post")
    height, width = in_hw
    resize = tuple(out_hw) != tuple(in_hw)
    x = out_name
    if kind == "ids":
        x = b.op("Cast", [x], to=TensorProto.UINT8)
        if rank == 3:  # [N, h, w]: a channel axis for Resize, taken away again below
            x = b.op("Unsqueeze", [x, b.const([1], np.int64, "axes")]) if opset >= 13 else \
                b.op("Unsqueeze", [x], axes=[1])
        if resize:
            x = b.resize(x, height, width, "nearest", opset)
        (b.op("Squeeze", [x, b.const([1], np.int64, "axes")], output="labels") if opset >= 13
                  else b.op("Squeeze", [x], output="labels", axes=[1]))
        outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, [batch, height, width])]
    else:
        x = b.op("Cast", [x], to=TensorProto.FLOAT)  # float16 logits too
        if channels_last:
            x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
        small = x
        if resize:
            x = b.resize(x, height, width, "linear", opset)
        b.op("Cast", [b.op("ArgMax", [x], axis=1, keepdims=0)], output="labels", to=TensorProto.UINT8)
        outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, [batch, height, width])]
        if with_confidence:
            # largest softmax probability = 1 / sum(exp(logit - max logit)), at the logits' own
            # resolution (as the project's exports do), then resized bilinearly
            top = b.reduce("ReduceMax", small, 1, 1, opset)
            total = b.reduce("ReduceSum", b.op("Exp", [b.op("Sub", [small, top])]), 1, 1, opset)
            p = b.op("Reciprocal", [total])
            if resize:
                p = b.resize(p, height, width, "linear", opset)
            p = b.op("Clip", [b.op("Add", [b.op("Mul", [p, b.const(255.0, what="x255")]), b.const(0.5, what="half")]),
                              b.const(0.0, what="lo"), b.const(255.0, what="hi")])
            p = (b.op("Squeeze", [p, b.const([1], np.int64, "axes")]) if opset >= 13
                 else b.op("Squeeze", [p], axes=[1]))
            b.op("Cast", [b.op("Floor", [p])], output="confidence", to=TensorProto.UINT8)
            outputs.append(helper.make_tensor_value_info("confidence", TensorProto.UINT8, [batch, height, width]))
    g = model.graph
    g.node.extend(b.nodes)
    g.initializer.extend(b.inits)
    del g.output[:]
    g.output.extend(outputs)
