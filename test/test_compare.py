"""`seg-perception compare`: pixel agreement between backends and precisions over images."""

import json

import cv2
import numpy as np
import pytest
import torch

from seg_perception.core import export as ex
from seg_perception.core import quantize as q
from seg_perception.tools import cli
from seg_perception.core.backends.registry import parse_model_spec as parse_spec
from seg_perception.tools.compare import compare

from models import reference_model_files, sample_scene_reference_model

H, W = 64, 96


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    onnx_path, ckpt, _, info = reference_model_files(d, H, W)
    fp16 = q.convert_fp16(onnx_path, q.variant_path(onnx_path, "fp16"))
    int8 = q.quantize_int8(onnx_path, q.variant_path(onnx_path, "int8"),
                           np.stack(q.sample_frames(8, H, W)))
    other, _ = sample_scene_reference_model(H, W)
    with torch.no_grad():
        other.model.colour.bias.add_(torch.linspace(-3, 3, info.num_classes))
    shifted = str(d / "shifted.onnx")
    ex.export_onnx(other, info, shifted)
    return {"pt": ckpt, "onnx": onnx_path, "fp16": fp16, "int8": int8, "shifted": shifted, "dir": d}


@pytest.fixture(scope="module")
def images():
    return q.sample_frames(4, 180, 240, first=20)  # camera-like frames, fitted to 96x64


def test_onnxruntime_vs_pytorch_agree_on_a_non_trivial_model(files, images):
    result = compare([files["pt"], files["onnx"]], images, num_threads=1)
    (pair,) = result["pairs"]
    assert pair["a"] == "torch:ref.pt" and pair["b"] == "onnxruntime:ref.onnx"
    assert pair["agreement"] >= 0.999 and pair["worst_image_agreement"] >= 0.99
    assert all(len(m["classes_predicted"]) >= 4 for m in result["models"])
    assert result["pixels"] == 4 * 180 * 240   # compared at the images' own size


def test_precisions_pairwise(files, images):
    result = compare([files["onnx"], files["fp16"], files["int8"]], images, num_threads=1)
    agreement = {(p["a"], p["b"]): p["agreement"] for p in result["pairs"]}
    assert len(agreement) == 3
    assert agreement[("onnxruntime:ref.onnx", "onnxruntime:ref_fp16.onnx")] >= 0.99
    assert 0.9 <= agreement[("onnxruntime:ref.onnx", "onnxruntime:ref_int8.onnx")] < 1.0


def test_a_different_model_disagrees(files, images):
    result = compare([files["onnx"], files["shifted"]], images, num_threads=1)
    assert result["pairs"][0]["agreement"] < 0.99


def test_models_with_different_classes_are_refused(files, images, tmp_path):
    from seg_perception.core.model_info import ClassInfo

    wrapped, info = ex.fresh_model("tiny_fcn", H, W, classes=[ClassInfo("A", (1, 2, 3)),
                                                             ClassInfo("B", (4, 5, 6))])
    path = str(tmp_path / "ab.onnx")
    ex.export_onnx(wrapped, info, path)
    with pytest.raises(ValueError, match="class ids would not mean the same thing"):
        compare([files["onnx"], path], images)


def test_spec_parsing():
    assert parse_spec("m.onnx") == ("onnxruntime", "", "m.onnx")
    assert parse_spec("x/m.pt") == ("torch", "", "x/m.pt")
    assert parse_spec("tensorrt/fp16:m.onnx") == ("tensorrt", "fp16", "m.onnx")
    assert parse_spec("torch:/abs/m.pt") == ("torch", "", "/abs/m.pt")
    with pytest.raises(ValueError, match="precision applies to tensorrt only"):
        parse_spec("onnxruntime/fp16:m.onnx")
    with pytest.raises(ValueError, match="cannot tell the backend"):
        parse_spec("m.bin")


def test_cli_over_an_image_folder(files, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(q.sample_frames(3, 120, 160, first=60)):
        cv2.imwrite(str(folder / f"{i}.png"), f[:, :, ::-1])
    out = tmp_path / "cmp.json"
    rc = cli.main(["compare", files["pt"], files["onnx"], "--images", str(folder),
                   "--min-agreement", "0.999", "--threads", "1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["images"] == 3 and data["source"] == str(folder)
    assert data["pairs"][0]["agreement"] >= 0.999
    assert "agreement" in capsys.readouterr().out
    rc = cli.main(["compare", files["onnx"], files["shifted"], "--images", str(folder),
                   "--min-agreement", "0.999"])
    assert rc == 1
    assert "below the required" in capsys.readouterr().err
    assert cli.main(["compare", files["onnx"]]) == 2
