"""Backends on a model whose output is not trivial: ONNX Runtime (plain and IOBinding) and
PyTorch agree; auto selection explains itself; the backend benchmark measures what it says."""

import numpy as np
import pytest

from seg_perception.core import export as ex
from seg_perception.core.backends import tensorrt as trtb
from seg_perception.core.backends.onnxruntime import OnnxRuntimeBackend
from seg_perception.core.backends.base import SegmenterError
from seg_perception.core.backends.registry import choose_backend, create_backend
from seg_perception.core.segmenter import Segmenter
from seg_perception.tools.bench_backends import bench_backends, format_table
from seg_perception.tools.support.common import parse_size

from models import reference_model_files

H, W = 64, 96


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("backends")
    onnx_path, ckpt, _, _ = reference_model_files(d, H, W)
    return onnx_path, ckpt


@pytest.fixture(scope="module")
def frames():
    return np.stack(ex.sample_frames(5, H, W, first=30))


def test_onnxruntime_and_torch_agree(model_files, frames):
    onnx_path, ckpt = model_files
    with create_backend(onnx_path, "onnxruntime", num_threads=1) as ort_b, \
            create_backend(ckpt, "torch", num_threads=1) as torch_b:
        a, b = ort_b.infer(frames), torch_b.infer(frames)
        assert a.shape == b.shape == (5, H, W) and a.dtype == b.dtype == np.uint8
        assert len(np.unique(b)) >= 4                     # not a trivial one-class model
        assert np.mean(a == b) >= 0.999
        assert ort_b.info == torch_b.info
        assert "channels_last" in torch_b.describe() and torch_b.device == "cpu"
        # the confidence output: both backends give it, within one step of each other
        (ids_a, conf_a), (ids_b, conf_b) = (ort_b.infer_with_confidence(frames),
                                            torch_b.infer_with_confidence(frames))
        assert ort_b.has_confidence and torch_b.has_confidence
        assert np.array_equal(ids_a, a) and np.array_equal(ids_b, b)
        assert conf_a.shape == (5, H, W) and conf_a.dtype == conf_b.dtype == np.uint8
        assert np.mean(np.abs(conf_a.astype(int) - conf_b.astype(int)) <= 1) >= 0.999
        assert conf_a.min() < 200  # not sure everywhere: the comparison means something


def test_iobinding_matches_plain_run_across_batch_sizes(model_files, frames):
    onnx_path, _ = model_files
    bound = OnnxRuntimeBackend(onnx_path, io_binding=True, num_threads=1)
    plain = OnnxRuntimeBackend(onnx_path, io_binding=False, num_threads=1)
    bound.activate()
    plain.activate()
    try:
        assert "IOBinding" in bound.describe() and "IOBinding" not in plain.describe()
        first = bound.infer(frames[:2])
        first_conf = bound.infer_with_confidence(frames[:2])[1]
        for n in (2, 1, 5, 2):
            assert np.array_equal(bound.infer(frames[:n]), plain.infer(frames[:n]))
            for x, y in zip(bound.infer_with_confidence(frames[:n]), plain.infer_with_confidence(frames[:n])):
                assert np.array_equal(x, y)
        # results handed out earlier are not overwritten by later calls (buffers are reused)
        assert np.array_equal(first, plain.infer(frames[:2]))
        assert np.array_equal(first_conf, plain.infer_with_confidence(frames[:2])[1])
    finally:
        bound.release()
        bound.release()  # twice is safe
        plain.release()
    with pytest.raises(SegmenterError, match="not loaded"):
        bound.infer(frames)


def test_onnxruntime_provider_and_input_errors(model_files, frames):
    onnx_path, _ = model_files
    with pytest.raises(SegmenterError, match="lacks"):
        OnnxRuntimeBackend(onnx_path, providers=["NoSuchExecutionProvider"]).activate()
    b = create_backend(onnx_path, "onnxruntime")
    with pytest.raises(SegmenterError, match="uint8"):
        b.infer(frames.astype(np.float32))


def test_torch_backend_rejects_what_it_cannot_run(model_files, tmp_path):
    _, ckpt = model_files
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SegmenterError):
        create_backend(str(bad), "torch")
    import torch
    ck = torch.load(ckpt, weights_only=True)
    ck["metadata"]["architecture"] = "lraspp_mobilenet_v3_large"
    wrong = tmp_path / "wrong.pt"
    torch.save(ck, wrong)
    with pytest.raises(SegmenterError, match="do not fit"):
        create_backend(str(wrong), "torch")


def test_auto_selection_explains_itself(model_files):
    onnx_path, ckpt = model_files
    name, why = choose_backend(onnx_path, "auto")
    if not trtb.tensorrt_installed():
        assert name == "onnxruntime" and "TensorRT not used: tensorrt is not installed" in why
    assert choose_backend(ckpt, "auto")[0] == "torch"
    assert choose_backend(onnx_path, "onnxruntime") == \
        ("onnxruntime", "backend 'onnxruntime' requested")
    with pytest.raises(SegmenterError, match="cannot run a .pt file"):
        choose_backend(ckpt, "onnxruntime")
    with pytest.raises(SegmenterError, match="cannot run a .onnx file"):
        choose_backend(onnx_path, "torch")
    with pytest.raises(SegmenterError, match="unknown backend"):
        choose_backend(onnx_path, "openvino")
    with Segmenter.from_file(onnx_path) as seg:
        assert seg.backend.selection_reason == why


def test_bench_backends_reports_stages_and_skips(model_files):
    onnx_path, ckpt = model_files
    result = bench_backends([onnx_path, ckpt], ["onnxruntime", "torch", "tensorrt/fp16"],
                            sizes=["160x120"], batch_sizes=[1, 2], threads=1, iters=3)
    runs = result["runs"]
    assert {(r["backend"], r["batch"]) for r in runs} == {
        ("onnxruntime", 1), ("onnxruntime", 2), ("torch", 1), ("torch", 2)}
    for r in runs:
        for stage in ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"):
            s = r[stage]
            assert 0 < s["median"] <= s["p90"] <= s["p99"]
        assert r["fps"] == pytest.approx(r["batch"] * 1000.0 / r["total_ms"]["median"])
        assert r["frame"] == "160x120" and r["model_input"] == f"{W}x{H}" and r["precision"] == "fp32"
    reasons = " ".join(s["reason"] for s in result["skipped"])
    assert "torch cannot run ref.onnx" in reasons and "onnxruntime cannot run ref.pt" in reasons
    table = format_table(result)
    assert "onnxruntime" in table and "fps" in table
    assert parse_size("1920x1080") == (1920, 1080)
    with pytest.raises(ValueError):
        parse_size("1920")


@pytest.mark.parametrize("kind", ["onnxruntime", "torch"])
def test_every_backend_is_a_context_manager_with_the_contract_checked_in_the_base(model_files, frames, kind):
    onnx_path, ckpt = model_files
    with create_backend(onnx_path if kind == "onnxruntime" else ckpt, kind, num_threads=1) as b:
        assert b.active and b.selection_reason == f"backend '{kind}' requested"
        assert b.infer(frames[:1]).shape == (1, H, W)
        for bad, needle in [(frames[:, :H - 1], rf"expected uint8 \[N, {H}, {W}, 3\]"),
                            (frames.astype(np.float32), "got float32"),
                            (frames[0], rf"got uint8 \({H}, {W}, 3\)")]:
            with pytest.raises(SegmenterError, match=needle):
                b.infer(bad)
    assert not b.active
    with pytest.raises(SegmenterError, match="not loaded"):
        b.infer(frames[:1])
    with pytest.raises(RuntimeError, match="boom"):  # released on the way out of an error too
        with Segmenter.from_file(onnx_path, "onnxruntime") as seg:
            raise RuntimeError("boom")
    assert not seg.backend.active
