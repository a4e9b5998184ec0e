"""Bring your own model: foreign segmentation ONNX files (exported here the ways other projects
export them, see foreign_models.py) wrapped to the contract, checked at load, and run by the
node over DDS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import foreign_models as fm

from seg_perception.core import wrap as wrap_mod
from seg_perception.core.class_sets import ClassSetError, label_file_for, load_classes, parse_classes
from seg_perception.core.model_info import METADATA_KEY, ModelInfo, set_onnx_metadata
from seg_perception.core.backends.base import SegmenterError
from seg_perception.core.segmenter import Segmenter
from seg_perception.core.wrap import WrapError, WrapOptions, normalised_input, wrap_model

BIN = os.path.dirname(sys.executable)
CITYSCAPES = load_classes("cityscapes")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """{kind: path} of the foreign models, exported once for the module."""
    d = tmp_path_factory.mktemp("foreign")
    return {
        "torchvision": fm.torchvision_lraspp(str(d / "lraspp_cityscapes.onnx"), height=128, width=256),
        "quarter": fm.export(fm.QuarterLogits(19), str(d / "quarter.onnx"), 128, 256),
        "ids": fm.export(fm.FullResolution(19, argmax=True), str(d / "ids.onnx"), 128, 256),
        "nhwc": fm.export(fm.FullResolution(19, nhwc=True), str(d / "nhwc.onnx"), 128, 256, nhwc=True),
    }


def frames(n=1, h=128, w=256, seed=3):
    """Street-like frames: smooth gradients with blocks, so the random nets see a spread of inputs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (h + w))], -1).astype(np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
            img[y:y + 20, x:x + 20] = rng.integers(0, 256, 3)
        out.append(img)
    return np.stack(out)


def original_logits(path, x, name="output"):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run([name], {sess.get_inputs()[0].name: x})[0]


def softmax_max(logits):  # [N, C, H, W] -> [N, H, W]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return 1.0 / e.sum(axis=1)


def test_torchvision_model_with_external_weights_and_dynamic_size(foreign, tmp_path):
    src = foreign["torchvision"]
    assert os.path.isfile(src + ".data")  # exported the common way: weights beside the graph
    opts = WrapOptions(classes=CITYSCAPES)
    with pytest.raises(WrapError, match=r"dynamic.*--size HxW"):
        wrap_model(src, str(tmp_path / "x.onnx"), opts)
    out = str(tmp_path / "sub" / "lraspp_sp.onnx")
    opts.size = (128, 256)
    report = wrap_model(src, out, opts, num_frames=2)
    assert report.agreement >= 0.999 and report.kind == "logits" and report.external_data
    assert os.path.isfile(out + ".data") and os.path.getsize(out) < 2_000_000  # weights stayed outside
    with Segmenter.from_file(out, "onnxruntime") as seg:
        info = seg.info
        assert info.class_names == [c.name for c in CITYSCAPES] and seg.has_confidence
        assert (info.input_height, info.input_width) == (128, 256)
        batch = frames()
        ids, conf = seg.backend.infer_with_confidence(batch)
    # against the original, computed here: normalise with ImageNet statistics on 0..1, NCHW
    x = normalised_input(batch, "nchw", opts, np.float32)
    np.testing.assert_allclose(x[0, :, 5, 7], (batch[0, 5, 7] / 255.0 - wrap_mod.IMAGENET_MEAN)
                               / wrap_mod.IMAGENET_STD, rtol=1e-5)
    logits = original_logits(src, x)
    assert (ids == logits.argmax(1)).mean() >= 0.999
    assert np.abs(conf.astype(int) - np.round(255 * softmax_max(logits)).astype(int)).max() <= 1
    assert len(np.unique(ids)) > 1
    # label_file "" finds the packaged Cityscapes groups, parking empty (it has no such class)
    path = label_file_for(info.class_names)
    assert path and path.endswith("cityscapes.yaml")


def test_quarter_resolution_logits_are_resized_before_argmax(foreign, tmp_path):
    src, out = foreign["quarter"], str(tmp_path / "quarter_sp.onnx")
    report = wrap_model(src, out, WrapOptions(classes=CITYSCAPES), num_frames=2)
    assert report.output_size == (32, 64) and report.model_size == (128, 256)
    assert report.agreement >= 0.999
    batch = frames()
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    ids, conf = sess.run(["labels", "confidence"], {"image": batch})
    assert ids.shape == (1, 128, 256) and ids.dtype == np.uint8 and conf.dtype == np.uint8
    small = original_logits(src, normalised_input(batch, "nchw", WrapOptions(classes=CITYSCAPES), np.float32))
    import torch
    from torch.nn import functional as F

    # bilinear, half-pixel (align_corners False): PyTorch's upsampling as the reference
    up = F.interpolate(torch.from_numpy(small), size=(128, 256), mode="bilinear", align_corners=False).numpy()
    assert (ids == up.argmax(1)).mean() >= 0.999
    # confidence from the small logits, upsampled: within one level of the reference
    ref_conf = F.interpolate(torch.from_numpy(softmax_max(small))[:, None], size=(128, 256), mode="bilinear",
                             align_corners=False)[:, 0].numpy()
    assert np.abs(conf.astype(int) - np.round(255 * ref_conf).astype(int)).max() <= 1


def test_a_model_that_argmaxes_itself_int64_ids(foreign, tmp_path):
    src, out = foreign["ids"], str(tmp_path / "ids_sp.onnx")
    report = wrap_model(src, out, WrapOptions(classes=CITYSCAPES), num_frames=2)
    assert report.kind == "ids" and not report.confidence and report.agreement == 1.0
    with Segmenter.from_file(out, "onnxruntime") as seg:
        assert not seg.has_confidence and seg.info.confidence_name == ""
        batch = frames()
        ids = seg.backend.infer(batch)
    ref = original_logits(src, normalised_input(batch, "nchw", WrapOptions(classes=CITYSCAPES), np.float32))
    assert ref.dtype == np.int64
    np.testing.assert_array_equal(ids, ref.astype(np.uint8))


def test_nhwc_float_model_bgr_and_0_255_range(foreign, tmp_path):
    src, out = foreign["nhwc"], str(tmp_path / "nhwc_sp.onnx")
    opts = WrapOptions(classes=CITYSCAPES, value_range=255.0, mean=(103.5, 116.3, 123.7),
                       std=(57.4, 57.1, 58.4), bgr=True)
    report = wrap_model(src, out, opts, num_frames=2)
    assert "NHWC" in report.input and report.agreement >= 0.999
    batch = frames()
    x = normalised_input(batch, "nhwc", opts, np.float32)
    assert x.shape == (1, 128, 256, 3)
    # BGR: the model's channel 0 is the frame's blue, scaled on 0..255
    np.testing.assert_allclose(x[0, 3, 4, 0], (batch[0, 3, 4, 2] - 103.5) / 57.4, rtol=1e-5)
    ids = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(["labels"], {"image": batch})[0]
    assert (ids == original_logits(src, x).argmax(1)).mean() >= 0.999


def test_the_verification_fails_a_wrap_that_feeds_the_model_wrongly(foreign, tmp_path, monkeypatch):
    """The check compares with the original model on an input normalised here: a graph whose
    normalisation differs (std dropped) is caught and the wrap fails."""
    real = wrap_mod._add_preprocess

    def wrong(model, inp, layout, opts, *args):
        import dataclasses

        return real(model, inp, layout, dataclasses.replace(opts, std=(1.0, 1.0, 1.0)), *args)
    monkeypatch.setattr(wrap_mod, "_add_preprocess", wrong)
    with pytest.raises(WrapError, match=r"agrees with the original on .* below 99.9%"):
        wrap_model(foreign["quarter"], str(tmp_path / "bad.onnx"), WrapOptions(classes=CITYSCAPES), num_frames=2)


def test_refusals_say_what_to_change(foreign, tmp_path):
    with pytest.raises(WrapError, match=r"no axis of 11 classes"):
        wrap_model(foreign["quarter"], str(tmp_path / "a.onnx"), WrapOptions(classes=load_classes("camvid")))
    with pytest.raises(WrapError, match=r"fixed at 128x256.*--size 64x64 cannot change it"):
        wrap_model(foreign["quarter"], str(tmp_path / "b.onnx"), WrapOptions(classes=CITYSCAPES, size=(64, 64)))
    with pytest.raises(WrapError, match=r"no output 'logits'"):
        wrap_model(foreign["quarter"], str(tmp_path / "c.onnx"), WrapOptions(classes=CITYSCAPES, output="logits"))
    with pytest.raises(WrapError, match="not found"):
        wrap_model(str(tmp_path / "missing.onnx"), str(tmp_path / "d.onnx"), WrapOptions(classes=CITYSCAPES))
    with pytest.raises(ClassSetError, match="neither a packaged class set"):
        load_classes("kitti")
    with pytest.raises(ClassSetError, match="duplicate"):
        parse_classes(["road", "road"])
    classes = parse_classes({"classes": ["road", {"name": "car", "color": [1, 2, 3]}]})
    assert classes[1].color == (1, 2, 3) and classes[0].color != classes[1].color


def test_an_unwrapped_model_is_refused_at_load_with_the_command_that_fixes_it(foreign, tmp_path):
    with pytest.raises(SegmenterError, match=r"no 'seg_perception' metadata.*seg-perception wrap .*quarter"):
        Segmenter.from_file(foreign["quarter"], "onnxruntime")
    # metadata added by hand to a float-in, logits-out graph: the graph contradicts it
    model = onnx.load(foreign["quarter"])
    set_onnx_metadata(model, ModelInfo(classes=CITYSCAPES, input_height=128, input_width=256, input_name="input",
                                       output_name="output"))
    hand = str(tmp_path / "by_hand.onnx")
    onnx.save(model, hand)
    with pytest.raises(SegmenterError) as err:
        Segmenter.from_file(hand, "onnxruntime")
    text = str(err.value)
    assert "input 'input' is float32, the contract takes uint8" in text
    assert "output 'output' (class ids) is float32" in text and "ArgMax" in text
    assert "[1, 19, 32, 64]" in text and "seg-perception wrap" in text


def test_wrap_command_prints_the_summary_and_fails_clearly(foreign, tmp_path):
    out = str(tmp_path / "cli.onnx")
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "wrap", foreign["quarter"], "--out", out,
                          "--classes", "cityscapes", "--num-frames", "2", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for needle in ("original input:  input float NCHW [1, 3, 128, 256]", "logits float32 [1, 19, 32, 64]",
                   "resized to 128x256", "classes:         19 (cityscapes)", "ms per frame"):
        assert needle in res.stdout, res.stdout
    assert json.load(open(tmp_path / "r.json"))["agreement"] >= 0.999
    meta = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[METADATA_KEY])
    assert meta["source"]["wrap"]["output_size"] == [32, 64]
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "wrap", foreign["torchvision"], "--out", out,
                          "--classes", "cityscapes"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "--size HxW" in res.stderr and "Traceback" not in res.stderr


def test_the_wrapped_model_through_the_node_over_dds(foreign, tmp_path, ros_domain, peer):
    """A wrapped Cityscapes model in the node with label_file "": the node picks the packaged
    Cityscapes groups, publishes the class map the pipeline computes in this process for the
    same frame, keeps the parking mask empty and says why in diagnostics. An unwrapped model:
    the node stays up with diagnostics ERROR naming the wrap command."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from ros_harness import RELIABLE, NodeProcess
    from test_node import DiagnosticStatus_ERROR, as_array, feed_until, image_msg, stamp_of, status_values, \
        wait_status

    from seg_perception.core.config import NodeConfig
    from seg_perception.core.pipeline import build_pipeline
    from seg_perception.ros.conversions import frame_from_msg

    wrapped = str(tmp_path / "quarter_sp.onnx")
    wrap_model(foreign["quarter"], wrapped, WrapOptions(classes=CITYSCAPES), num_frames=1)
    rgb = np.ascontiguousarray(np.kron(frames()[0], np.ones((2, 2, 1), np.uint8)))  # 512x256 camera
    diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
    outs = {n: peer.subscribe(Image, f"/camera_seg/{n}", RELIABLE) for n in ("labels", "parking_mask")}
    pub = peer.publisher(Image, "/image", RELIABLE)
    # label_file is "" in the shipped params file
    node = NodeProcess(ros_domain[0], ros_domain[1], params={"model": wrapped, "grid.enabled": False})
    try:
        assert peer.wait_matched(pub), node.log()
        stamp = feed_until(peer, pub, lambda s: image_msg(rgb, s), list(outs.values()))
        got = as_array(next(m for m in outs["labels"].snapshot() if stamp_of(m) == stamp))
        parking = as_array(next(m for m in outs["parking_mask"].snapshot() if stamp_of(m) == stamp))
        st = wait_status(diag, lambda s: s.level != DiagnosticStatus_ERROR and "label file" in status_values(s))
        assert st is not None, node.log()
        values = status_values(st)
        assert values["label file"].endswith("cityscapes.yaml")
        assert values["masks always empty"].startswith("parking")
        assert "always empty masks: parking" in node.log()
    finally:
        assert node.stop() == 0, node.log()
    with build_pipeline(NodeConfig.from_values({"model": wrapped, "grid.enabled": False})) as pipeline:
        expected = pipeline.process(frame_from_msg(image_msg(rgb, stamp))).labels()
    assert got.shape == (256, 512) and (got == expected).mean() >= 0.999
    assert len(np.unique(got)) > 1 and not parking.any()

    node = NodeProcess(ros_domain[0], ros_domain[1], params={"model": foreign["quarter"], "grid.enabled": False})
    try:
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "seg-perception wrap" in s.message,
                         timeout=30)
        assert st is not None, node.log()
        assert node.alive()
    finally:
        assert node.stop() == 0, node.log()


class _IdsAtQuarter(fm.QuarterLogits):
    """mmdeploy's segmentation export (with_argmax): int64 ids [N, 1, h, w], opset 11."""

    def forward(self, x):
        return self.head(self.stem(x)).argmax(1, keepdim=True)


@pytest.mark.parametrize("kind", ["ids", "logits"])
def test_opset_11_models_as_mmdeploy_writes_them(tmp_path, kind):
    """Opset 11 (mmdeploy's default): Resize with roi/scales inputs, reductions with axes
    attributes; mmsegmentation's normalisation on 0..255."""
    import torch

    torch.manual_seed(1)
    module = _IdsAtQuarter(19) if kind == "ids" else fm.QuarterLogits(19)
    for p in module.parameters():
        torch.nn.init.normal_(p, 0.0, 0.5)
    src = str(tmp_path / "m.onnx")
    torch.onnx.export(module.eval(), (torch.randn(1, 3, 128, 256),), src, dynamo=False, opset_version=11,
                      input_names=["input"], output_names=["output"])
    assert [o.version for o in onnx.load(src).opset_import if o.domain in ("", "ai.onnx")] == [11]
    opts = WrapOptions(classes=CITYSCAPES, value_range=255.0, mean=(123.675, 116.28, 103.53),
                       std=(58.395, 57.12, 57.375))
    out = str(tmp_path / "w.onnx")
    report = wrap_model(src, out, opts, num_frames=2)
    assert report.agreement >= 0.999 and report.output_size == (32, 64)
    batch = frames()
    outs = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"image": batch})
    assert outs[0].shape == (1, 128, 256) and len(outs) == (1 if kind == "ids" else 2)
    if kind == "logits":
        small = original_logits(src, normalised_input(batch, "nchw", opts, np.float32))
        import cv2

        ref = cv2.resize(softmax_max(small)[0], (256, 128), interpolation=cv2.INTER_LINEAR)
        assert np.abs(outs[1][0].astype(int) - np.round(255 * ref).astype(int)).max() <= 1


def test_a_fixed_batch_is_made_dynamic_where_the_graph_allows_and_kept_with_the_reason(foreign, tmp_path):
    """Exports fix the batch at 1 (the foreign models here are exported so); the node batches
    several cameras' frames where the model takes them, so the wrap frees the batch where the
    graph runs at another one, and keeps it, saying why, where it does not."""
    from seg_perception.core.config import NodeConfig
    from seg_perception.core.runtime.plan import batch_note

    src = foreign["quarter"]
    assert onnx.load(src).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    out = str(tmp_path / "free.onnx")
    report = wrap_model(src, out, WrapOptions(classes=CITYSCAPES), num_frames=3)
    assert report.batch == "batch" and "fixed at 1" in report.batch_note
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    batch = frames(3)
    together = sess.run(["labels"], {"image": batch})[0]
    one_by_one = np.concatenate([sess.run(["labels"], {"image": batch[i:i + 1]})[0] for i in range(3)])
    assert together.shape == (3, 128, 256) and (together == one_by_one).all()
    with Segmenter.from_file(out, "onnxruntime") as seg:
        assert seg.backend.max_batch > 1
    kept = wrap_model(src, str(tmp_path / "kept.onnx"), WrapOptions(classes=CITYSCAPES, keep_batch=True),
                      num_frames=1)
    assert kept.batch == "1" and "--keep-batch" in kept.batch_note

    fixed = fm.export(fm.ConstantReshape(19), str(tmp_path / "reshape.onnx"), 128, 256)
    out = str(tmp_path / "reshape_sp.onnx")
    report = wrap_model(fixed, out, WrapOptions(classes=CITYSCAPES), num_frames=2)
    assert report.batch == "1" and report.batch_note.startswith("fixed at 1: the graph does not run at batch 2")
    assert report.agreement >= 0.999
    params = NodeConfig.from_values({"cameras": ["front", "left"], "max_batch": 0})
    with Segmenter.from_file(out, "onnxruntime") as seg:
        assert seg.backend.max_batch == 1
        note = batch_note(params, seg, workers=1)
    assert "at most 1 frame a run" in note and "does not run at batch 2" in note


def test_a_model_with_a_background_channel_last(tmp_path):
    """Cityscapes models from their authors' repositories often output 19 + 1 channels, a
    background or ignore class last: --classes cityscapes says so and names the fix;
    cityscapes+background wraps it, and the node's label_file "" takes the packaged Cityscapes
    groups, background in none of them."""
    from seg_perception.core.class_sets import ignored_classes
    from seg_perception.core.labels import load_label_file
    from seg_perception.tools.wrap import run_it_lines

    src = fm.export(fm.QuarterLogits(20), str(tmp_path / "espnet_like.onnx"), 128, 256)
    with pytest.raises(WrapError, match=r"no axis of 19 classes.*--classes cityscapes\+background"):
        wrap_model(src, str(tmp_path / "x.onnx"), WrapOptions(classes=CITYSCAPES), num_frames=1)
    classes = load_classes("cityscapes+background")
    assert [c.name for c in classes] == [c.name for c in CITYSCAPES] + ["background"]
    assert classes[-1].color == (0, 0, 0) and classes[:19] == CITYSCAPES
    out = str(tmp_path / "espnet_sp.onnx")
    report = wrap_model(src, out, WrapOptions(classes=classes), num_frames=2)
    assert report.classes == 20 and report.agreement >= 0.999
    with Segmenter.from_file(out, "onnxruntime") as seg:
        names = seg.info.class_names
    path = label_file_for(names)
    assert path and path.endswith("cityscapes.yaml") and ignored_classes(names, path) == ["background"]
    groups = load_label_file(path, names)
    assert all("background" not in g for g in groups.groups.values())
    lines = run_it_lines(out, names)
    assert lines[0] == f"run it: ros2 launch seg_perception camera_seg.launch.py model:={out}"
    assert "background in no group" in lines[1] and "label_file:=" not in lines[0]
    # classes no packaged label file fits: the command names the label file to write
    mine = tmp_path / "mine.yaml"
    mine.write_text("classes: [road, person, car]\n")
    lines = run_it_lines("rel.onnx", [c.name for c in load_classes(str(mine))])
    assert "label_file:=" in lines[-1] and os.path.abspath("rel.onnx") in lines[-1]
    with pytest.raises(ClassSetError, match="empty class name"):
        load_classes("cityscapes+")


def test_the_verification_takes_camera_frames_not_label_maps(foreign, tmp_path):
    """--frames DIR: a data set's folder holds label PNGs beside the frames (PandaSet's
    label_*.png, one channel); only camera frames are verified on, or those a pattern names."""
    import cv2

    d = tmp_path / "street"
    d.mkdir()
    for i, img in enumerate(frames(3)):
        cv2.imwrite(str(d / f"front_camera_{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(d / f"label_{i}.png"), (img[..., 0] // 32).astype(np.uint8))
    src = foreign["quarter"]
    report = wrap_model(src, str(tmp_path / "a.onnx"), WrapOptions(classes=CITYSCAPES), frames_dir=str(d),
                        num_frames=6)
    assert report.frames == 3 and "left out 3 one-channel" in report.frames_source
    report = wrap_model(src, str(tmp_path / "b.onnx"), WrapOptions(classes=CITYSCAPES),
                        frames_dir=str(d / "front_camera_[01].jpg"), num_frames=6)
    assert report.frames == 2 and report.agreement >= 0.999
    (d / "labels_only").mkdir()
    cv2.imwrite(str(d / "labels_only" / "l.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(FileNotFoundError, match="no camera frames"):
        wrap_model(src, str(tmp_path / "c.onnx"), WrapOptions(classes=CITYSCAPES),
                   frames_dir=str(d / "labels_only"))


def test_the_speed_is_timed_as_the_node_runs_the_model(foreign, tmp_path):
    """Warm-up runs left out, the node's default thread count, enough runs for a median."""
    from seg_perception.core.threads import inference_threads

    report = wrap_model(foreign["quarter"], str(tmp_path / "s.onnx"), WrapOptions(classes=CITYSCAPES),
                        num_frames=1)
    runs = int(re.search(r"median of (\d+) runs after 2 warm-up runs", report.speed).group(1))
    assert runs >= 5 and report.ms_per_frame > 0
    assert f"with {inference_threads(0)} thread" in report.speed and "num_threads 0" in report.speed
