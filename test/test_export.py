"""Export: the ONNX graph contract, embedded metadata, dynamic batch and the verification that
makes an export fail when it does not agree with PyTorch."""

import dataclasses
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from seg_perception.core import export as ex
from seg_perception.core.model_info import METADATA_KEY, ModelInfo, read_onnx_metadata
from seg_perception.tools import cli

from models import sample_scene_reference_model

H, W = 64, 96


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(onnx path, checkpoint path, wrapped model, info) of the sample-scene reference model."""
    d = tmp_path_factory.mktemp("export")
    wrapped, info = sample_scene_reference_model(H, W)
    ckpt = str(d / "ref.pt")
    ex.save_checkpoint(wrapped, info, ckpt)
    path = str(d / "ref.onnx")
    result = ex.export_verified(wrapped, info, path, num_frames=6)
    return path, ckpt, wrapped, info, result


def test_graph_contract_uint8_in_class_map_out_dynamic_batch(reference):
    path, _, _, info, _ = reference
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out, conf) = model.graph.input, model.graph.output
    assert (out.name, conf.name) == (info.output_name, ex.CONFIDENCE_OUTPUT)
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert conf.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    conf_dims = [d.dim_param or d.dim_value for d in conf.type.tensor_type.shape.dim]
    assert in_dims == ["batch", H, W, 3] and out_dims == ["batch", H, W] == conf_dims
    ops = {n.op_type for n in model.graph.node}
    assert "ArgMax" in ops and "Sub" in ops and "Mul" in ops  # argmax and normalisation in graph
    # TensorRT takes uint8 only as network I/O next to a Cast: nothing else may touch it
    consumers = [n.op_type for n in model.graph.node if inp.name in n.input]
    producers = [n.op_type for n in model.graph.node if {out.name, conf.name} & set(n.output)]
    assert consumers == ["Cast"] and producers == ["Cast", "Cast"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    frames = np.stack(ex.sample_frames(3, H, W))
    for n in (1, 3):
        labels, confidence = sess.run(None, {info.input_name: frames[:n]})
        assert labels.shape == confidence.shape == (n, H, W) and labels.dtype == np.uint8
        assert confidence.dtype == np.uint8


def test_confidence_output_is_the_rounded_largest_softmax_probability(reference):
    path, _, wrapped, info, _ = reference
    frames = np.stack(ex.sample_frames(3, H, W))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    labels, confidence = sess.run(None, {info.input_name: frames})
    with torch.inference_mode():
        probs = torch.softmax(wrapped.logits(torch.from_numpy(frames)), dim=1)
    expected = torch.round(probs.amax(dim=1) * 255).to(torch.uint8).numpy()
    # float rounding may move a value sitting on a .5 boundary by one step
    assert np.abs(confidence.astype(int) - expected).max() <= 1
    assert (labels == probs.argmax(dim=1).numpy()).mean() >= 0.999
    # a model of 12 classes is never below 1/12 sure, and this one is not sure everywhere
    assert confidence.min() >= 255 // info.num_classes and confidence.min() < 250
    assert ModelInfo.from_json(read_onnx_metadata(path)).confidence_name == ex.CONFIDENCE_OUTPUT


def test_export_without_confidence_keeps_the_single_output_contract(reference, tmp_path):
    _, _, wrapped, info, _ = reference
    path = ex.export_onnx(wrapped, info, str(tmp_path / "single.onnx"), confidence=False)
    model = onnx.load(path)
    assert [o.name for o in model.graph.output] == [info.output_name]
    assert ModelInfo.from_json(read_onnx_metadata(path)).confidence_name == ""


def test_metadata_embedded_and_readable_without_torch(reference):
    path, _, _, info, _ = reference
    # ONNX Runtime alone (no onnx, no torch) reads it as the node does
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map[METADATA_KEY]
    read = ModelInfo.from_json(meta)
    assert read == dataclasses.replace(info, confidence_name=ex.CONFIDENCE_OUTPUT)
    assert read.class_names[3] == "Road" and read.input_height == H
    assert ModelInfo.from_json(read_onnx_metadata(path)) == read
    assert json.loads(meta)["normalization"]["in_graph"] is True


def test_export_agrees_with_pytorch_on_a_model_that_is_not_trivial(reference):
    path, _, wrapped, info, result = reference
    assert result.agreement >= 0.999
    assert result.classes_seen >= 4          # the check is not the trivial one-class case
    frames = np.stack(ex.sample_frames(4, H, W, first=40))
    ref = ex.torch_class_maps(wrapped, frames)
    assert len(np.unique(ref)) >= 4
    assert ex.pixel_agreement(ref, ex.onnxruntime_class_maps(path, frames)) >= 0.999


def test_verification_detects_a_different_model(reference):
    path, _, wrapped, info, _ = reference
    other, _ = sample_scene_reference_model(H, W, seed=1)
    with torch.no_grad():  # a network the file was not exported from
        other.model.colour.bias.add_(torch.linspace(-3, 3, info.num_classes))
    frames = np.stack(ex.sample_frames(4, H, W))
    result = ex.verify_onnx(path, other, frames, "sample")
    assert result.agreement < 0.999


def test_failed_verification_removes_the_file_and_raises(tmp_path):
    wrapped, info = sample_scene_reference_model(H, W)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ex.ExportError, match="agrees with PyTorch on only"):
        # no file can agree on more than 100% of pixels: the failure path, end to end
        ex.export_verified(wrapped, info, str(out), num_frames=2, min_agreement=1.01)
    assert not out.exists()


def test_verification_on_an_image_folder(reference, tmp_path):
    import cv2

    path, _, wrapped, info, _ = reference
    for i, f in enumerate(ex.sample_frames(3, 120, 200, first=9)):  # another size: fitted
        cv2.imwrite(str(tmp_path / f"{i}.png"), f[:, :, ::-1])
    inputs, source = ex.verification_inputs(info, str(tmp_path), 3)
    assert inputs.shape == (3, H, W, 3) and source == str(tmp_path)
    assert ex.verify_onnx(path, wrapped, inputs).agreement >= 0.999


def test_checkpoint_round_trip(reference):
    _, ckpt, wrapped, info, _ = reference
    loaded, info2 = ex.load_checkpoint(ckpt)
    assert info2 == info
    frames = np.stack(ex.sample_frames(2, H, W))
    assert np.array_equal(ex.torch_class_maps(loaded, frames), ex.torch_class_maps(wrapped, frames))


def test_fresh_model_unknown_architecture():
    with pytest.raises(ex.ExportError, match="unknown architecture"):
        ex.fresh_model("no_such_net")
    assert {"lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "tiny_fcn"} <= set(ex.ARCHITECTURES)


def test_cli_export_checkpoint_with_fp16(reference, tmp_path, capsys):
    _, ckpt, _, info, _ = reference
    out = tmp_path / "m.onnx"
    report = tmp_path / "r.json"
    rc = cli.main(["export", ckpt, "--out", str(out), "--fp16", "--num-frames", "4",
                   "--json", str(report)])
    assert rc == 0
    assert out.exists() and (tmp_path / "m_fp16.onnx").exists()
    data = json.loads(report.read_text())
    assert data["verify"]["agreement"] >= 0.999
    assert data["variants"]["fp16"]["agreement_vs_torch"] >= 0.99
    meta = ModelInfo.from_json(read_onnx_metadata(str(out)))
    assert meta.source["checkpoint"] == "ref.pt" and len(meta.source["checkpoint_sha256"]) == 64
    assert "verified against PyTorch" in capsys.readouterr().out


def test_cli_export_errors(reference, tmp_path, capsys):
    _, ckpt, _, _, _ = reference
    assert cli.main(["export", ckpt, "--arch", "lraspp_mobilenet_v3_large",
                     "--out", str(tmp_path / "x.onnx")]) == 1
    assert "holds a 'tiny_fcn' model" in capsys.readouterr().err
    assert cli.main(["export", ckpt, "--int8", "--out", str(tmp_path / "y.onnx")]) == 1
    assert "--calib-dir" in capsys.readouterr().err
    assert cli.main(["export", "--out", str(tmp_path / "z.onnx")]) == 1
    assert not os.path.exists(tmp_path / "z.onnx")


def test_cli_export_fresh_architecture(tmp_path):
    out = tmp_path / "fresh.onnx"
    assert cli.main(["export", "--arch", "tiny_fcn", "--height", "48", "--width", "64",
                     "--out", str(out), "--num-frames", "2"]) == 0
    info = ModelInfo.from_json(read_onnx_metadata(str(out)))
    assert (info.input_height, info.input_width, info.architecture) == (48, 64, "tiny_fcn")
    assert "random initialisation" in info.source["weights"]


def test_torchvision_models_take_confidence_at_the_head_resolution_with_the_same_ids(tmp_path):
    """LR-ASPP's confidence comes from its 1/8-resolution logits, resized like them: the ids stay
    exactly forward()'s, the confidence stays close to the full-resolution softmax, and the ONNX
    file computes the same."""
    wrapped, info = ex.fresh_model("lraspp_mobilenet_v3_large", 64, 96, seed=3)
    frames = torch.from_numpy(np.stack(ex.sample_frames(2, 64, 96)))
    with torch.inference_mode():
        ids, conf = wrapped.with_confidence(frames)
        assert torch.equal(ids, wrapped(frames))
        full = torch.round(torch.softmax(wrapped.logits(frames), 1).amax(1) * 255)
    assert wrapped._head_logits(wrapped._normalised(frames)).shape[-2:] == (8, 12)
    assert (conf.float() - full).abs().mean() < 4
    path = ex.export_onnx(wrapped, info, str(tmp_path / "l.onnx"))
    got_ids, got_conf = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {info.input_name: frames.numpy()})
    assert np.mean(got_ids == ids.numpy()) >= 0.999
    assert np.abs(got_conf.astype(int) - conf.numpy()).max() <= 1


def test_export_takes_torchvision_state_dicts_and_whole_models(tmp_path):
    """Foreign weights: a torchvision state_dict with --arch and --classes (an aux head from
    training dropped), a whole torch.save(model) file with --classes, and clear refusals that
    name the accepted forms."""
    import subprocess
    import sys

    import torch
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    from seg_perception.core.torch_models import TinyFCN
    from seg_perception.core.segmenter import Segmenter

    exe = [os.path.join(os.path.dirname(sys.executable), "seg-perception"), "export"]
    torch.manual_seed(0)
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=19, aux_loss=True)
    sd = str(tmp_path / "deeplab.pth")
    torch.save(net.state_dict(), sd)
    out = str(tmp_path / "deeplab.onnx")
    res = subprocess.run(exe + [sd, "--arch", "deeplabv3_mobilenet_v3_large", "--classes", "cityscapes",
                                "--height", "64", "--width", "128", "--out", out, "--num-frames", "2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    with Segmenter.from_file(out, "onnxruntime") as seg:
        assert seg.info.num_classes == 19 and seg.info.class_names[11] == "person"
        assert (seg.info.input_height, seg.info.input_width) == (64, 128)
    whole = str(tmp_path / "whole.pt")
    torch.save(TinyFCN(11), whole)
    res = subprocess.run(exe + [whole, "--classes", "camvid", "--height", "48", "--width", "64",
                                "--out", str(tmp_path / "whole.onnx"), "--num-frames", "2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for args, needle in [([sd, "--classes", "cityscapes"], "plain state_dict: give its architecture with --arch"),
                         ([sd, "--arch", "deeplabv3_mobilenet_v3_large"], "carries no class list: give --classes"),
                         ([sd, "--arch", "deeplabv3_mobilenet_v3_large", "--classes", "camvid"],
                          "does not fit deeplabv3_mobilenet_v3_large with 11 classes")]:
        res = subprocess.run(exe + args + ["--out", str(tmp_path / "x.onnx")], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 1 and needle in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    res = subprocess.run(exe + [str(junk), "--out", str(tmp_path / "x.onnx")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 1 and "seg-perception export takes (1)" in res.stderr and "Traceback" not in res.stderr
