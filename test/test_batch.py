"""Several cameras through one network run (issue #16): run_batch gives every camera exactly what
one run of its own gives, frames of different sizes in one batch, buffers given back; the batch
size follows the model and max_batch; one camera's result never pushes out another's."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from models import TEST_LABEL_YAML, make_colour_model
from test_node import sample_scene_in_test_colours

from seg_perception.core.config import NodeConfig
from seg_perception.core.image import frame_from_rgb
from seg_perception.core.pipeline import build_camera_pipelines, run_batch
from seg_perception.core.runtime.plan import batch_limit, batch_note, runs_asked
from seg_perception.core.runtime.slots import LatestPerKey


def dict_cfg(base: NodeConfig, **changes) -> NodeConfig:
    """The configuration with these parameters changed (the per-camera ones of dropped cameras go)."""
    values = {k: v for k, v in base.values.items() if "." not in k or k.split(".", 1)[0] not in base.values["cameras"]}
    values.update(changes)
    return NodeConfig.from_values(values)


@pytest.fixture
def two_camera_pipelines(tmp_path):
    model = make_colour_model(str(tmp_path / "colour.onnx"))
    labels = tmp_path / "labels.yaml"
    labels.write_text(TEST_LABEL_YAML)
    p = NodeConfig.from_values({"model": model, "label_file": str(labels), "cameras": ["front", "rear"],
                                "grid.enabled": False})
    pipelines = build_camera_pipelines(p, {"front": "/front/camera_info", "rear": "/rear/camera_info"})
    yield p, pipelines
    pipelines["front"].release()


def test_one_batch_gives_each_camera_what_its_own_run_gives(two_camera_pipelines):
    p, pls = two_camera_pipelines
    _, big = sample_scene_in_test_colours(320, 180)
    _, small = sample_scene_in_test_colours(160, 120)
    small = small[::-1].copy()  # another view: the two results must not be swapped or shared
    alone = {"front": pls["front"].process(frame_from_rgb(big)), "rear": pls["rear"].process(frame_from_rgb(small))}
    prepared = [(pls["front"], pls["front"].prepare(frame_from_rgb(big), pooled=True)),
                (pls["rear"], pls["rear"].prepare(frame_from_rgb(small), pooled=True))]
    results = run_batch(prepared)
    assert [r.labels().shape for r in results] == [(180, 320), (120, 160)]
    np.testing.assert_array_equal(results[0].labels(), alone["front"].labels())
    np.testing.assert_array_equal(results[1].labels(), alone["rear"].labels())
    np.testing.assert_array_equal(results[1].confidence(), alone["rear"].confidence())
    assert all(r.timer.times["inference"] == results[0].timer.times["inference"] for r in results)
    # the pooled input buffers went back to their fits
    assert all(pr.model_input is None for _, pr in prepared)


def test_a_failing_batch_gives_every_buffer_back(two_camera_pipelines, monkeypatch):
    _, pls = two_camera_pipelines
    _, rgb = sample_scene_in_test_colours(160, 120)
    prepared = [(pls[c], pls[c].prepare(frame_from_rgb(rgb), pooled=True)) for c in ("front", "rear")]

    def fail(images):  # the backend failing, as a runtime error would
        raise RuntimeError("injected")

    monkeypatch.setattr(pls["rear"].segmenter.backend, "_infer", fail)
    with pytest.raises(RuntimeError, match="injected"):
        run_batch(prepared)
    assert all(pr.model_input is None for _, pr in prepared)


def test_batch_size_follows_cameras_max_batch_and_the_model(two_camera_pipelines, tmp_path):
    p, pls = two_camera_pipelines
    seg = pls["front"].segmenter
    assert seg.backend.max_batch > 4  # dynamic batch dimension
    # one run at a time: every camera's frame (max_batch 0), at most max_batch
    assert seg.backend.device == "cpu" and batch_limit(p, seg) == 2
    assert batch_limit(dict_cfg(p, max_batch=1), seg) == 1
    assert batch_limit(dict_cfg(p, cameras=["a", "b", "c", "d"], max_batch=3), seg) == 3
    assert batch_limit(dict_cfg(p, cameras=[]), seg) == 1
    # several runs at once on the CPU: one frame a run (a batch there costs what its frames cost
    # one by one), unless max_batch asks for more, shared among the runs
    four = dict_cfg(p, cameras=["a", "b", "c", "d"])
    assert batch_limit(four, seg, workers=2) == 1
    assert batch_limit(dict_cfg(four, max_batch=4), seg, workers=2) == 2
    assert "one frame a run" in batch_note(four, seg, 2) and batch_note(dict_cfg(four, max_batch=4), seg, 2) == ""
    # on a GPU every camera's frame in one run (no GPU backend runs here: its device and batch
    # dimension are all batch_limit reads)
    gpu = SimpleNamespace(backend=SimpleNamespace(device="cuda:0", max_batch=8))
    assert batch_limit(four, gpu) == 4 and batch_limit(four, gpu, workers=2) == 2
    assert batch_limit(dict_cfg(four, max_batch=1), gpu) == 1 and batch_note(four, gpu, 1) == ""
    # a model whose batch dimension is fixed at 1: one frame per run, whatever max_batch says
    m = onnx.load(p.model.path)
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = str(tmp_path / "fixed_batch.onnx")
    onnx.save(m, fixed)
    from seg_perception.core.segmenter import Segmenter

    with Segmenter.from_file(fixed, "onnxruntime") as seg1:
        assert seg1.backend.max_batch == 1
        assert batch_limit(dict_cfg(p, cameras=["a", "b", "c", "d"]), seg1) == 1
        # the start-up log says why, only where more was asked for
        assert "the model takes at most 1 frame a run" in batch_note(dict_cfg(p, cameras=["a", "b", "c", "d"]), seg1, 1)
        assert batch_note(dict_cfg(p, cameras=["a", "b", "c", "d"], max_batch=1), seg1, 1) == ""


def test_latest_per_key_keeps_every_cameras_newest():
    slot = LatestPerKey()
    assert slot.put("front", 1) is False
    assert slot.put("rear", 2) is False
    assert slot.put("front", 3) is True  # only the front's older result is dropped
    ok, items = slot.get(timeout=0)
    assert ok and items == [2, 3]
    assert slot.get(timeout=0.01) == (False, [])
    slot.close()
    assert slot.put("front", 4) is True and slot.get(timeout=0) == (False, [])


def test_latest_per_key_never_hands_out_a_cameras_older_frame_after_a_newer_one():
    """Two network runs at once: the run holding the front camera's newer frame finishes first;
    the older frame's result, finishing later, is refused (a drop), whether or not the newer one
    was taken meanwhile; other cameras are not affected."""
    slot = LatestPerKey()
    assert slot.put("front", "newer", order=2.0) is False
    assert slot.put("front", "older", order=1.0) is True  # refused: the newer one stays
    assert slot.get(timeout=0) == (True, ["newer"])
    assert slot.put("front", "older still", order=0.5) is True  # also once the newer one is gone
    assert slot.put("rear", "rear older", order=1.0) is False  # each camera keeps its own order
    assert slot.put("front", "newest", order=3.0) is False
    assert slot.get(timeout=0) == (True, ["rear older", "newest"])


def test_network_runs_at_once_follow_cores_cameras_and_the_backend():
    from seg_perception.core.threads import inference_threads, inference_workers, opencv_threads, runs_at_once

    # asked for: one per camera up to every core but one, two on 2 cores; one camera, one run
    assert inference_workers(0, cameras=4, cores=2) == 2
    assert inference_workers(0, cameras=4, cores=4) == 3 and inference_workers(0, cameras=4, cores=16) == 4
    assert inference_workers(0, cameras=0, cores=16) == 1 and inference_workers(0, 1, 16) == 1
    assert inference_workers(3, cameras=1, cores=2) == 1 and inference_workers(3, cameras=2, cores=2) == 3
    # the session's threads and OpenCV's leave a core to each further run; on 2 cores with two
    # runs: one thread each, OpenCV one
    assert inference_threads(0, workers=1, cores=2) == 1 and inference_threads(0, workers=2, cores=2) == 1
    assert inference_threads(0, workers=4, cores=16) == 12 and inference_threads(5, workers=4, cores=16) == 5
    assert opencv_threads("cpu", 0, workers=4, cores=16) == 1 and opencv_threads("cuda:0", 0, 4, 16) == 16
    # what runs: several only where the backend can, automatically only on the CPU
    assert runs_at_once(2, explicit=False, concurrent=True, device="cpu") == (2, "")
    assert runs_at_once(2, explicit=False, concurrent=True, device="cuda:0") == (1, "")  # a GPU batches
    assert runs_at_once(2, explicit=True, concurrent=True, device="cuda:0") == (2, "")
    runs, warning = runs_at_once(3, explicit=True, concurrent=False, device="cpu")
    assert runs == 1 and "inference_workers 3" in warning and "running one" in warning
    assert runs_at_once(3, explicit=False, concurrent=False, device="cpu") == (1, "")  # asked by default: quiet


def test_the_output_thread_is_niced_only_where_the_network_leaves_a_core():
    from seg_perception.core.threads import output_niceness

    # one run leaves a core: the outputs fill the network's gaps at the niceness asked for
    assert output_niceness(5, "cpu", 0, workers=1, cores=2) == 5
    assert output_niceness(5, "cpu", 0, workers=4, cores=16) == 5  # 12 session threads + 3 runs < 16
    # the runs take every core: nothing to fill, a niced thread only delays every frame's outputs
    assert output_niceness(5, "cpu", 0, workers=2, cores=2) == 0
    assert output_niceness(5, "cpu", num_threads=2, workers=1, cores=2) == 0  # both cores to the session
    assert output_niceness(5, "cpu", 0, workers=4, cores=4) == 0
    # a GPU network leaves the cores to the node
    assert output_niceness(5, "cuda:0", 0, workers=2, cores=2) == 5
    assert output_niceness(0, "cpu", 0, workers=1, cores=2) == 0


def test_batches_share_the_runs_at_once_and_the_session_threads_leave_them_cores(two_camera_pipelines, tmp_path,
                                                                                  monkeypatch):
    """Four cameras, two runs at once: batching, two frames a run; ONNX Runtime without IOBinding
    runs several at once, with IOBinding (one binding and its output buffers) it does not."""
    from seg_perception.core.pipeline import build_pipeline

    p, pls = two_camera_pipelines
    seg = pls["front"].segmenter
    four = dict_cfg(p, cameras=["a", "b", "c", "d"])
    batching = dict_cfg(four, max_batch=4)
    assert batch_limit(batching, seg, workers=2) == 2 and batch_limit(batching, seg, workers=3) == 2
    assert batch_limit(dict_cfg(four, max_batch=1), seg, workers=2) == 1
    assert batch_limit(four, seg, workers=2) == 1  # max_batch 0 on the CPU
    assert runs_asked(dict_cfg(four, inference_workers=3)) == 3 and runs_asked(dict_cfg(p, cameras=[])) == 1
    assert seg.backend.concurrent_runs is True
    from seg_perception.core.backends.registry import create_backend

    with create_backend(p.model.path, "onnxruntime", io_binding=True) as bound:
        assert bound.concurrent_runs is False
    # the session's threads: a core left to each further run on the CPU, none by default (the
    # tools run one frame at a time); counted as on an 8-core machine, where the two differ
    from seg_perception.core import threads

    monkeypatch.setattr(threads, "_cores", lambda cores=None: int(cores) if cores else 8)
    with build_pipeline(p, "front", runs=2) as pl:
        assert pl.segmenter.backend.num_threads == 6
    with build_pipeline(p, "front") as pl:
        assert pl.segmenter.backend.num_threads == 7
    # a PyTorch checkpoint never runs several at once: its threads are not cut
    import os

    from seg_perception.core import resources

    import torch

    checkpoint = os.path.splitext(resources.DEFAULT_MODEL)[0] + ".pt"
    before = torch.get_num_threads()  # the backend sets torch's threads for the whole process
    try:
        with build_pipeline(dict_cfg(p, model=checkpoint, label_file=""), "front", runs=2) as pl:
            assert pl.segmenter.backend.name == "torch"
            assert pl.segmenter.backend.num_threads == 7
    finally:
        torch.set_num_threads(before)


def test_two_runs_at_once_on_one_model_give_each_camera_its_own_result(two_camera_pipelines):
    """What two inference workers do: run_batch from two threads at once on the one shared
    model, each camera's frames prepared into pooled buffers; every result is the one a run
    alone gives (no buffer or output shared between the runs)."""
    import threading

    _, pls = two_camera_pipelines
    _, big = sample_scene_in_test_colours(320, 180)
    views = {"front": big, "rear": big[::-1].copy()}
    alone = {c: pls[c].process(frame_from_rgb(views[c])).labels() for c in views}
    assert not np.array_equal(alone["front"], alone["rear"])
    wrong: list = []

    def worker(cam):
        for _ in range(60):  # enough runs that a buffer or output shared between them shows
            prepared = [(pls[cam], pls[cam].prepare(frame_from_rgb(views[cam]), pooled=True))]
            for result in run_batch(prepared):
                if not np.array_equal(result.labels(), alone[cam]):
                    wrong.append(cam)

    threads = [threading.Thread(target=worker, args=(c,)) for c in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_batch_the_network_never_took_counts_a_drop_for_each_of_its_cameras(two_camera_pipelines):
    """The prepare thread hands batches over in a one-slot mailbox: a newer batch replaces one the
    network has not taken. Each camera in the replaced batch counts one dropped frame (per-camera
    diagnostics) and the batch's input goes back to the pool; so does a batch left at close."""
    from seg_perception.core.runtime.plan import RunPlan
    from seg_perception.core.runtime.runtime import FrameRuntime

    _, pls = two_camera_pipelines
    rt = FrameRuntime(["front", "rear"], 1, decode=lambda cam, msg, timer: frame_from_rgb(msg),
                      wanted=lambda cam: ["labels"], deliver=lambda *a: None, log=lambda *a: None)
    rt.attach(pls, RunPlan(workers=1, batch_limit=2))
    _, rgb = sample_scene_in_test_colours(320, 180)

    def batch():
        return rt._prepare_batch([(rt.lanes[n], (rgb, 0.0)) for n in ("front", "rear")])

    first = batch()
    assert first[1].shape[0] == 2 and first[1].base is not None  # both frames in the rows of one input
    rt.ready.put(first)
    rt.ready.put(batch())  # the network was busy: the first batch is replaced
    assert [lane.stats.dropped for lane in rt.lanes.values()] == [1, 1]
    assert rt.inputs.take(2, *first[1].shape[1:3]) is first[1].base  # its input back in the pool
    rt.ready.close()  # the second one, never taken, at shutdown
    assert [lane.stats.dropped for lane in rt.lanes.values()] == [2, 2]
    rt.release()
