"""ESPNetv2 (seg_perception/core/espnetv2.py) against the authors' Cityscapes weights in
../shared/models/espnetv2_cityscapes: strict loading, a sane answer on a real street frame, ONNX
export (dynamo) that ONNX Runtime agrees with, logits at the input size for odd sizes."""

import glob
import logging
import os

import numpy as np
import pytest
import torch

from seg_perception.core.espnetv2 import (STATE_DICT_KEYS, WIDTH_CHANNELS, ESPNetV2Seg,
                                          load_espnetv2, width_from_name)

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
WEIGHTS_DIR = os.path.join(SHARED, "models", "espnetv2_cityscapes")
WEIGHT_FILES = sorted(glob.glob(os.path.join(WEIGHTS_DIR, "espnetv2_s_*_city_*.pth")))
S2_1024 = os.path.join(WEIGHTS_DIR, "espnetv2_s_2.0_city_1024x512.pth")
STREET_FRAMES = (sorted(glob.glob(os.path.join(SHARED, "data", "camvid", "test", "*.png")))[:1]
                 + [os.path.join(SHARED, "data", "street_frames", "pandaset", "front_camera_00.jpg")])
STREET_FRAME = next((p for p in STREET_FRAMES if os.path.isfile(p)), None)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ROAD, SKY = 0, 10  # Cityscapes train ids

needs_weights = pytest.mark.skipif(not os.path.isfile(S2_1024),
                                   reason=f"ESPNetv2 Cityscapes weights not in {WEIGHTS_DIR}")


def _normalised(path: str, width: int, height: int) -> torch.Tensor:
    from PIL import Image

    rgb = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
    x = (np.asarray(rgb, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()


@pytest.mark.parametrize("width", sorted(WIDTH_CHANNELS))
def test_every_width_builds_with_the_reference_key_count(width):
    assert len(ESPNetV2Seg(num_classes=20, width=width).state_dict()) == STATE_DICT_KEYS


def test_width_from_name():
    assert width_from_name("/x/espnetv2_s_1.5_city_1024x512.pth") == 1.5
    assert width_from_name("model.pth") is None


@pytest.mark.skipif(not WEIGHT_FILES, reason=f"ESPNetv2 Cityscapes weights not in {WEIGHTS_DIR}")
@pytest.mark.parametrize("path", WEIGHT_FILES, ids=os.path.basename)
def test_shared_weights_load_strictly(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = load_espnetv2(path)  # load_state_dict(strict=True) inside
    assert model.width == width_from_name(path) and model.num_classes == 20 and not model.training
    assert len(model.state_dict()) == len(state) == STATE_DICT_KEYS
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[key]), key


def test_a_width_that_does_not_fit_the_file_is_refused():
    if not os.path.isfile(S2_1024):
        pytest.skip(f"ESPNetv2 Cityscapes weights not in {WEIGHTS_DIR}")
    with pytest.raises(RuntimeError):
        load_espnetv2(S2_1024, width=1.0)


@needs_weights
@pytest.mark.skipif(STREET_FRAME is None, reason="no street frame in ../shared/data (CamVid test or PandaSet)")
def test_s2_sees_road_below_and_sky_above_on_a_real_street():
    model = load_espnetv2(S2_1024)
    with torch.inference_mode():
        logits = model(_normalised(STREET_FRAME, 1024, 512))
    assert logits.shape == (1, 20, 512, 1024)
    classes = logits.argmax(dim=1)[0].numpy()
    h, w = classes.shape
    bottom_centre = classes[int(0.80 * h):int(0.95 * h), int(0.35 * w):int(0.65 * w)]
    top_centre = classes[:int(0.12 * h), int(0.30 * w):int(0.70 * w)]
    assert (bottom_centre == ROAD).mean() >= 0.7
    assert (top_centre == ROAD).mean() <= 0.05
    assert (top_centre == SKY).mean() >= 0.5


def test_onnx_export_dynamo_agrees_with_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if os.path.isfile(S2_1024):
        model = load_espnetv2(S2_1024)
    else:  # the export does not depend on the weights' values
        torch.manual_seed(0)
        model = ESPNetV2Seg(num_classes=20, width=2.0).eval()
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    path = str(tmp_path / "espnetv2.onnx")
    # Batch 2 and a dynamic batch dimension, as the project's exporter does.
    example = torch.randn(2, 3, 256, 512)
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=18,
                                input_names=["x"], output_names=["logits"],
                                dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}},
                                external_data=False, optimize=True, verbose=False)
    program.save(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    x = torch.randn(1, 3, 256, 512)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == (1, 20, 256, 512)
    assert float(np.abs(got - expected).max()) < 1e-3


@pytest.mark.parametrize("height,width", [(360, 480), (288, 384), (97, 131)])
def test_odd_input_sizes_give_logits_at_the_input_size(height, width):
    # 360 rows are 23 at 1/16 and 45 at 1/8: the decoder resizes to each skip's own size.
    torch.manual_seed(0)
    model = ESPNetV2Seg(num_classes=20, width=1.0).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, height, width))
    assert out.shape == (1, 20, height, width)
    assert torch.isfinite(out).all()


def test_head_and_backbone_parameters_partition_the_model():
    model = ESPNetV2Seg(num_classes=20, width=2.0)
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}


@needs_weights
def test_the_import_step_writes_a_checkpoint_an_onnx_and_the_licence(tmp_path):
    """seg-perception import-espnetv2: the project's checkpoint and a verified ONNX meeting the
    contract (uint8 in, ids and confidence out), the origin and licence in the metadata and the
    MIT licence file beside them."""
    from seg_perception.core.export import load_checkpoint
    from seg_perception.core.segmenter import Segmenter
    from seg_perception.tools.cli import main

    small = os.path.join(WEIGHTS_DIR, "espnetv2_s_2.0_city_512x256.pth")
    assert main(["import-espnetv2", small, "--out", str(tmp_path), "--num-frames", "1"]) == 0
    stem = tmp_path / "espnetv2_s2.0_cityscapes_512x256"
    wrapped, info = load_checkpoint(str(stem) + ".pt")
    assert info.architecture == "espnetv2_s2.0" and info.class_names[-1] == "background"
    assert "MIT" in info.source["licence"] and "non-commercial" in info.source["training_data"]
    assert (tmp_path / "LICENSE-EdgeNets-MIT.txt").read_text().startswith("MIT License")
    with Segmenter.from_file(str(stem) + ".onnx", "onnxruntime") as seg:
        assert (seg.info.input_height, seg.info.input_width) == (256, 512) and seg.has_confidence
        assert seg.info.source["sha256"] == info.source["sha256"]
    assert main(["import-espnetv2", small, "--out", str(tmp_path), "--width", "1.0"]) == 1
