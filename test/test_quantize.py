"""FP16 and INT8 (Q/DQ) ONNX variants: what TensorRT's strongly typed builds need from them,
and their agreement with FP32 in ONNX Runtime on the CPU."""

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from seg_perception.core import export as ex
from seg_perception.core import quantize as q
from seg_perception.core.model_info import ModelInfo, read_onnx_metadata

from models import sample_scene_reference_model

H, W = 64, 96


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    wrapped, info = sample_scene_reference_model(H, W)
    path = str(d / "ref.onnx")
    ex.export_onnx(wrapped, info, path)
    return path, info


@pytest.fixture(scope="module")
def eval_inputs():
    return np.stack(q.sample_frames(6, H, W, first=50))  # not the calibration frames


def test_graph_precision_of_the_fp32_export(fp32):
    assert q.graph_precision(fp32[0]) == "fp32"


def test_fp16_variant(fp32, eval_inputs, tmp_path):
    src, info = fp32
    dst = q.convert_fp16(src, q.variant_path(str(tmp_path / "ref.onnx"), "fp16"))
    assert dst.endswith("ref_fp16.onnx")
    model = onnx.load(dst)
    onnx.checker.check_model(model)
    assert q.graph_precision(model) == "fp16"
    # the contract is unchanged: uint8 in, uint8 out
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = ModelInfo.from_json(read_onnx_metadata(dst))
    assert meta.source["precision"] == "fp16" and meta.class_names == info.class_names
    agreement = q.variant_agreement(src, [dst], eval_inputs)[dst]
    assert 0.99 <= agreement <= 1.0
    with pytest.raises(q.QuantizeError, match="already fp16"):
        q.convert_fp16(dst, str(tmp_path / "again.onnx"))


def test_int8_qdq_variant_is_symmetric_per_channel(fp32, eval_inputs, tmp_path):
    src, info = fp32
    calib = np.stack(q.sample_frames(8, H, W))
    dst = q.quantize_int8(src, str(tmp_path / "ref_int8.onnx"), calib, calibration_source="sample")
    model = onnx.load(dst)
    onnx.checker.check_model(model)
    assert q.graph_precision(model) == "int8"
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 4
    zps = q.qdq_zero_points(model)
    assert zps and all(v == 0 for _, v in zps)   # TensorRT accepts symmetric int8 only
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zp_types = {inits[n.input[2]].dtype for n in model.graph.node
                if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    assert zp_types == {np.dtype(np.int8)}
    # weights per output channel: a DequantizeLinear of a conv weight has one scale per channel
    per_channel = [inits[n.input[1]].size for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and inits[n.input[0]].ndim == 4]
    assert per_channel and max(per_channel) > 1
    meta = ModelInfo.from_json(read_onnx_metadata(dst))
    assert meta.source["precision"] == "int8"
    assert meta.source["calibration"]["images"] == 8
    agreement = q.variant_agreement(src, [dst], eval_inputs)[dst]
    assert 0.9 <= agreement < 1.0   # int8 changes some boundary pixels, not the scene


def test_int8_input_errors(fp32, tmp_path):
    src, _ = fp32
    with pytest.raises(q.QuantizeError, match="at least one image"):
        q.quantize_int8(src, str(tmp_path / "a.onnx"), np.zeros((0, H, W, 3), np.uint8))
    with pytest.raises(q.QuantizeError, match="uint8"):
        q.quantize_int8(src, str(tmp_path / "b.onnx"), np.zeros((2, H + 1, W, 3), np.uint8))
    with pytest.raises(q.QuantizeError, match="calibration method"):
        q.quantize_int8(src, str(tmp_path / "c.onnx"), np.zeros((1, H, W, 3), np.uint8), method="x")


def test_image_folder_helpers(tmp_path):
    for i in range(10):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((8, 12, 3), i * 20, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    paths = q.list_images(str(tmp_path), limit=4)
    assert [p[-6:] for p in paths] == ["00.png", "03.png", "06.png", "09.png"]  # spread evenly
    imgs = q.load_images(str(tmp_path), 2)
    assert imgs[0].shape == (8, 12, 3) and imgs[1][0, 0, 0] == 180
    with pytest.raises(FileNotFoundError):
        q.list_images(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        q.pixel_agreement(np.zeros((2, 2)), np.zeros((2, 3)))
    assert q.pixel_agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
