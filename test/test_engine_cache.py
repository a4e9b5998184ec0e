"""The TensorRT engine cache and the TensorRT backend's logic that runs without TensorRT: keys,
invalidation, sidecars, corrupt files, error paths, the I/O contract check, parser error reports
and build progress. No fake tensorrt module: versions and GPU facts are plain arguments."""

import dataclasses
import json
import os

import numpy as np
import pytest

from seg_perception.core import engine_cache as ec
from seg_perception.core.backends import tensorrt as trtb
from seg_perception.core.export import default_classes
from seg_perception.core.model_info import ModelInfo
from seg_perception.core.backends.base import BackendUnavailable, SegmenterError
from seg_perception.core.backends.registry import create_backend

SHA = "ab" * 32
INFO = ModelInfo(classes=default_classes(), input_height=360, input_width=480,
                 architecture="lraspp_mobilenet_v3_large")


def key(**change):
    fields = dict(onnx_sha256=SHA, tensorrt_version="10.9.0", gpu_name="NVIDIA Orin",
                  compute_capability="8.7", precision="fp16",
                  inputs=(ec.batch_profile("image", 360, 480, 1, 1, 4),))
    fields.update(change)
    k = ec.EngineKey(**fields)
    k.validate()
    return k


def test_default_cache_dir_follows_xdg_and_home():
    assert ec.default_cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}) == \
        "/x/cache/seg_perception/engines"
    assert ec.default_cache_dir({"HOME": "/home/u"}) == "/home/u/.cache/seg_perception/engines"
    assert ec.resolve_cache_dir("", {"HOME": "/h"}) == "/h/.cache/seg_perception/engines"
    assert ec.resolve_cache_dir("rel/dir") == os.path.abspath("rel/dir")


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32}, {"tensorrt_version": "10.10.0"}, {"gpu_name": "NVIDIA A100"},
    {"compute_capability": "8.0"}, {"precision": "int8"},
    {"inputs": (ec.batch_profile("image", 360, 480, 1, 2, 8),)},
    {"inputs": (ec.batch_profile("image", 352, 480, 1, 1, 4),)},
])
def test_every_key_field_changes_the_digest_and_is_explained(change):
    base, other = key(), key(**change)
    assert base.digest() != other.digest()
    assert key().digest() == base.digest()  # deterministic
    reasons = ec.key_differences(base, other)
    assert len(reasons) == 1 and "engine built for" in reasons[0]
    assert ec.engine_path("/c", "model", base) != ec.engine_path("/c", "model", other)


def test_key_round_trip_and_validation():
    k = key()
    assert ec.EngineKey.from_dict(json.loads(json.dumps(k.to_dict()))) == k
    with pytest.raises(ValueError, match="precision"):
        key(precision="int4")
    with pytest.raises(ValueError, match="SHA-256"):
        key(onnx_sha256="abc")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ec.batch_profile("image", 360, 480, 2, 1, 4)
    with pytest.raises(ValueError, match="tensorrt_version"):
        key(tensorrt_version="")


def test_make_key_hashes_the_onnx_file(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"graph bytes")
    k = ec.make_key(str(onnx_file), "10.9.0", "GPU", "8.9", "fp32", [ec.batch_profile("image", 4, 4)])
    assert k.onnx_sha256 == ec.file_sha256(str(onnx_file))
    onnx_file.write_bytes(b"graph bytes, re-exported")
    k2 = ec.make_key(str(onnx_file), "10.9.0", "GPU", "8.9", "fp32", [ec.batch_profile("image", 4, 4)])
    assert k2.digest() != k.digest()   # a new export never reuses the old engine
    # weights in an external file beside the graph (torch.onnx, seg-perception wrap): new
    # weights under the same graph bytes make a new key too
    data = tmp_path / "m.onnx.data"
    data.write_bytes(b"weights v1")
    k3 = ec.make_key(str(onnx_file), "10.9.0", "GPU", "8.9", "fp32", [ec.batch_profile("image", 4, 4)])
    data.write_bytes(b"weights v2")
    k4 = ec.make_key(str(onnx_file), "10.9.0", "GPU", "8.9", "fp32", [ec.batch_profile("image", 4, 4)])
    assert len({k2.digest(), k3.digest(), k4.digest()}) == 3


def test_write_then_lookup_is_valid_with_metadata(tmp_path):
    k = key()
    path = ec.engine_path(str(tmp_path), "camvid_parking_lraspp", k)
    assert os.path.basename(path).startswith("camvid_parking_lraspp.fp16.")
    assert ec.lookup(str(tmp_path), "camvid_parking_lraspp", k).state == "missing"
    ec.write_entry(path, b"\x00engine-bytes" * 100, k, INFO, build={"workspace_mb": 512})
    status = ec.lookup(str(tmp_path), "camvid_parking_lraspp", k)
    assert status.valid and status.engine_path == path
    assert status.info == INFO  # class names, colours, input size travel with the engine
    side = json.loads(open(ec.sidecar_path(path)).read())
    assert side["key"]["gpu_name"] == "NVIDIA Orin" and side["build"]["workspace_mb"] == 512
    assert side["engine"]["bytes"] == 1300 and side["key_digest"] == k.digest()
    assert ec.decide(status, build_if_missing=False) == "load"


def test_stale_entry_reasons_for_a_key_and_for_a_runtime(tmp_path):
    k = key()
    path = ec.engine_path(str(tmp_path), "m", k)
    ec.write_entry(path, b"engine", k, INFO)
    newer = key(tensorrt_version="10.10.0", gpu_name="NVIDIA RTX 4090", compute_capability="8.9")
    status = ec.check_entry(path, expected=newer)
    assert status.state == "stale"
    text = status.explain()
    assert "TensorRT version" in text and "GPU" in text and "compute capability" in text
    # an .engine given directly: only this machine's TensorRT and GPU are known
    assert ec.check_entry(path, runtime=("10.9.0", "NVIDIA Orin", "8.7")).valid
    bad = ec.check_entry(path, runtime=("10.9.0", "NVIDIA A100", "8.0"))
    assert bad.state == "stale" and "NVIDIA A100" in bad.explain()


def test_corrupt_entries_are_never_valid(tmp_path):
    k = key()
    path = ec.engine_path(str(tmp_path), "m", k)
    ec.write_entry(path, b"0123456789" * 50, k, INFO)
    with open(path, "r+b") as f:     # same size, different bytes
        f.seek(10)
        f.write(b"X")
    status = ec.check_entry(path, expected=k)
    assert status.state == "corrupt" and "SHA-256" in status.explain()
    with open(path, "wb") as f:      # truncated
        f.write(b"0123")
    assert "bytes" in ec.check_entry(path, expected=k).explain()
    ec.write_entry(path, b"fine", k, INFO)
    assert ec.check_entry(path, expected=k).valid
    side = ec.sidecar_path(path)
    with open(side, "w") as f:
        f.write("{not json")
    assert ec.check_entry(path, expected=k).state == "corrupt"
    with open(side, "w") as f:
        json.dump({"format": "something-else/9"}, f)
    assert "format" in ec.check_entry(path, expected=k).explain()
    with open(side, "w") as f:
        json.dump({"format": ec.CACHE_FORMAT, "key": {"onnx_sha256": SHA}}, f)
    assert "malformed" in ec.check_entry(path, expected=k).explain()
    os.remove(side)
    status = ec.check_entry(path, expected=k)
    assert status.state == "corrupt" and "missing" in status.explain()


def test_decide_rebuilds_or_refuses_with_a_clear_error(tmp_path):
    k = key()
    missing = ec.lookup(str(tmp_path), "m", k)
    assert ec.decide(missing, build_if_missing=True) == "build"
    with pytest.raises(ec.EngineCacheError) as err:
        ec.decide(missing, build_if_missing=False, how_to_build="seg-perception build-engine m.onnx")
    msg = str(err.value)
    assert "no cached TensorRT engine" in msg and "build_if_missing: false" in msg
    assert "seg-perception build-engine m.onnx" in msg
    path = ec.engine_path(str(tmp_path), "m", k)
    ec.write_entry(path, b"abc", k, INFO)
    with open(path, "wb") as f:
        f.write(b"abcd")
    corrupt = ec.lookup(str(tmp_path), "m", k)
    assert ec.decide(corrupt, build_if_missing=True) == "build"
    with pytest.raises(ec.EngineCacheError, match="corrupt"):
        ec.decide(corrupt, build_if_missing=False)


def test_write_replaces_and_remove_and_list(tmp_path):
    k1, k2 = key(), key(precision="fp32")
    p1, p2 = ec.engine_path(str(tmp_path), "m", k1), ec.engine_path(str(tmp_path), "m", k2)
    ec.write_entry(p1, b"one", k1, INFO)
    ec.write_entry(p1, b"one, rebuilt", k1, INFO)
    assert ec.check_entry(p1, expected=k1).valid
    ec.write_entry(p2, b"two", k2, INFO)
    with open(p2, "ab") as f:
        f.write(b"!")
    states = {os.path.basename(e.engine_path): e.state for e in ec.list_entries(str(tmp_path))}
    assert states == {os.path.basename(p1): "valid", os.path.basename(p2): "corrupt"}
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]  # atomic writes leave nothing
    ec.remove_entry(p2)
    ec.remove_entry(p2)  # twice is fine
    assert [e.engine_path for e in ec.list_entries(str(tmp_path))] == [p1]
    assert ec.list_entries(str(tmp_path / "none")) == []


def test_timing_cache_is_per_tensorrt_version_and_gpu():
    a = ec.timing_cache_path("/c", "10.9.0", "NVIDIA Orin", "8.7")
    assert a == ec.timing_cache_path("/c", "10.9.0", "NVIDIA Orin", "8.7")
    assert a != ec.timing_cache_path("/c", "10.10.0", "NVIDIA Orin", "8.7")
    assert a != ec.timing_cache_path("/c", "10.9.0", "NVIDIA A100", "8.0")
    assert " " not in os.path.basename(a)


def test_build_lock_can_be_taken_again_after_release(tmp_path):
    path = str(tmp_path / "sub" / "m.engine")
    with ec.build_lock(path):
        assert os.path.exists(path + ".lock")
    with ec.build_lock(path):
        pass


# --- TensorRT backend logic that needs no TensorRT ------------------------------------------

def test_check_io_accepts_the_contract_and_rejects_others():
    good = [("image", True, "UINT8", (-1, 360, 480, 3)), ("labels", False, "UINT8", (-1, 360, 480))]
    assert trtb.check_io(good, INFO) == ("image", "labels", 360, 480, None)
    with pytest.raises(SegmenterError, match="uint8"):
        trtb.check_io([good[0], ("labels", False, "INT64", (-1, 360, 480))])
    with pytest.raises(SegmenterError, match="uint8"):
        trtb.check_io(good + [("logits", False, "FLOAT", (-1, 12, 360, 480))])
    with pytest.raises(SegmenterError, match="3 outputs"):
        trtb.check_io(good + [("a", False, "UINT8", (-1, 360, 480)),
                              ("b", False, "UINT8", (-1, 360, 480))])
    # The confidence output, named in the metadata, in either order of the engine's tensors.
    conf_info = dataclasses.replace(INFO, confidence_name="confidence")
    conf = ("confidence", False, "UINT8", (-1, 360, 480))
    assert trtb.check_io([good[0], conf, good[1]], conf_info) == (
        "image", "labels", 360, 480, "confidence")
    # An old engine without it, under metadata that names it, still runs (without confidence).
    assert trtb.check_io(good, conf_info)[4] is None
    with pytest.raises(SegmenterError, match="differ from metadata"):
        trtb.check_io(good + [("other", False, "UINT8", (-1, 360, 480))], conf_info)
    with pytest.raises(SegmenterError, match=r"not \[N, H, W\]"):
        trtb.check_io(good + [("confidence", False, "UINT8", (-1, 180, 240))], conf_info)
    with pytest.raises(SegmenterError, match=r"\[N, H, W, 3\]"):
        trtb.check_io([("image", True, "UINT8", (-1, 3, 360, 480)), good[1]])
    with pytest.raises(SegmenterError, match="metadata says"):
        trtb.check_io([("image", True, "UINT8", (-1, 352, 480, 3)),
                       ("labels", False, "UINT8", (-1, 352, 480))], INFO)


def test_parser_errors_are_all_reported():
    text = trtb.format_parser_errors([
        {"code": "UNSUPPORTED_NODE", "desc": "no importer for op Foo", "node": 7,
         "node_name": "/head/Foo", "node_operator": "Foo"},
        {"code": "INVALID_GRAPH", "desc": "shape mismatch", "node": -1},
    ], "m.onnx")
    assert "2 error(s) for m.onnx" in text
    assert "node 7 '/head/Foo' (Foo): no importer for op Foo" in text
    assert "[INVALID_GRAPH] graph: shape mismatch" in text


def test_build_progress_throttles_steps_and_can_cancel():
    now = [0.0]
    lines = []
    p = trtb.BuildProgress(lines.append, interval_s=2.0, clock=lambda: now[0])
    p.phase_start("Building engine", None, 3)
    p.phase_start("Tactic selection", "Building engine", 100)
    for step in range(100):
        now[0] += 0.1
        assert p.step_complete("Tactic selection", step) is True
    p.phase_finish("Tactic selection")
    assert lines[0].endswith("Building engine (3 steps)")
    assert "Building engine > Tactic selection (100 steps)" in lines[1]
    step_lines = [l for l in lines if "/100" in l]
    assert 4 <= len(step_lines) <= 6      # 10 s of steps at one line per 2 s
    assert lines[-1].endswith("Tactic selection done")
    p.cancel()
    assert p.step_complete("Building engine", 1) is False  # asks TensorRT to stop


@pytest.mark.skipif(trtb.tensorrt_installed(), reason="TensorRT present")
def test_tensorrt_unavailable_here_is_a_clear_error(tmp_path):
    usable, why = trtb.tensorrt_usable()
    assert not usable and "tensorrt is not installed" in why
    backend = trtb.TensorRTBackend(str(tmp_path / "m.onnx"), cache_dir="", build_if_missing=False,
                                   precision="fp16", progress=None, use_cuda_graph=True, num_threads=2)
    with pytest.raises(BackendUnavailable, match="tensorrt is not installed"):
        backend.load()
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(BackendUnavailable):
        create_backend(str(model), "tensorrt")
    with pytest.raises(SegmenterError, match="unknown precision"):
        trtb.TensorRTBackend(str(model), precision="int4")


def test_cuda_errors_carry_cuda_names():
    rt = pytest.importorskip("cuda.bindings.runtime")
    err, count = rt.cudaGetDeviceCount()
    if int(err) == 0 and count:
        pytest.skip("a CUDA device is present")
    with pytest.raises(trtb.CudaError, match=r"cudaGetDeviceCount failed: cudaError\w+"):
        trtb.cuda_call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    with pytest.raises(BackendUnavailable, match="no usable CUDA device"):
        trtb.gpu_identity()
    assert trtb.cuda_call((rt.cudaError_t.cudaSuccess, 5)) == 5
    assert trtb.cuda_call((rt.cudaError_t.cudaSuccess,)) is None


def test_onnx_for_precision(tmp_path):
    from seg_perception.core import export as ex
    from seg_perception.core import quantize as q
    from models import sample_scene_reference_model

    wrapped, info = sample_scene_reference_model(32, 48)
    src = str(tmp_path / "m.onnx")
    ex.export_onnx(wrapped, info, src)
    work = tmp_path / "cache"
    work.mkdir()
    assert trtb.onnx_for_precision(src, "fp32", str(work)) == src
    with pytest.raises(SegmenterError, match="--int8 --calib-dir"):
        trtb.onnx_for_precision(src, "int8", str(work))
    fp16 = trtb.onnx_for_precision(src, "fp16", str(work))   # converted into the cache dir
    assert os.path.dirname(fp16) == str(work) and q.graph_precision(fp16) == "fp16"
    assert trtb.onnx_for_precision(src, "fp16", str(work)) == fp16   # reused, not redone
    calib = np.stack(q.sample_frames(2, 32, 48))
    sibling = q.quantize_int8(src, q.variant_path(src, "int8"), calib)
    assert trtb.onnx_for_precision(src, "int8", str(work)) == sibling
    with pytest.raises(SegmenterError, match="is a int8 graph"):
        trtb.onnx_for_precision(sibling, "fp16", str(work))


def test_build_engine_cli_lists_the_cache_and_explains_missing_tensorrt(tmp_path, capsys):
    from seg_perception.tools import cli

    k = key()
    ec.write_entry(ec.engine_path(str(tmp_path), "m", k), b"engine", k, INFO)
    bad = ec.engine_path(str(tmp_path), "other", key(precision="int8"))
    ec.write_entry(bad, b"engine", key(precision="int8"), INFO)
    os.remove(ec.sidecar_path(bad))
    assert cli.main(["build-engine", "--list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(2 engines)" in out
    assert "valid  fp16  TensorRT 10.9.0  NVIDIA Orin (sm 8.7)  batch 1..4" in out
    assert "corrupt: engine metadata file missing" in out
    assert cli.main(["build-engine", str(tmp_path / "none.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    if not trtb.tensorrt_installed():
        model = tmp_path / "m.onnx"
        model.write_bytes(b"x")
        assert cli.main(["build-engine", str(model), "--precision", "fp16"]) == 2
        assert "TensorRT cannot run here: tensorrt is not installed" in capsys.readouterr().err
