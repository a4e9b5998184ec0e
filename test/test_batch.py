"""Several cameras through one network run (issue #16): run_batch gives every camera exactly what
one run of its own gives, frames of different sizes in one batch, buffers given back; the batch
size follows the model and max_batch; one camera's result never pushes out another's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models import TEST_LABEL_YAML, make_colour_model
from test_node import sample_scene_in_test_colours

from seg_perception.core.image import frame_from_rgb
from seg_perception.core.latest import LatestPerKey
from seg_perception.core.parameters import default_parameters
from seg_perception.core.pipeline import batch_limit, build_camera_pipelines, run_batch


@pytest.fixture
def two_camera_pipelines(tmp_path):
    model = make_colour_model(str(tmp_path / "colour.onnx"))
    labels = tmp_path / "labels.yaml"
    labels.write_text(TEST_LABEL_YAML)
    p = default_parameters()
    p.update(model=model, label_file=str(labels), cameras=["front", "rear"], **{"grid.enabled": False})
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


def test_a_failing_batch_gives_every_buffer_back(two_camera_pipelines):
    _, pls = two_camera_pipelines
    _, rgb = sample_scene_in_test_colours(160, 120)
    prepared = [(pls[c], pls[c].prepare(frame_from_rgb(rgb), pooled=True)) for c in ("front", "rear")]

    def fail(frame):
        raise RuntimeError("injected")

    pls["rear"].fault_hook = fail
    with pytest.raises(RuntimeError, match="injected"):
        run_batch(prepared)
    assert all(pr.model_input is None for _, pr in prepared)


def test_batch_size_follows_cameras_max_batch_and_the_model(two_camera_pipelines, tmp_path):
    p, pls = two_camera_pipelines
    seg = pls["front"].segmenter
    assert seg.backend.max_batch > 4  # dynamic batch dimension
    assert batch_limit(p, seg) == 2
    assert batch_limit(dict(p, max_batch=1), seg) == 1
    assert batch_limit(dict(p, cameras=["a", "b", "c", "d"], max_batch=3), seg) == 3
    assert batch_limit(dict(p, cameras=[]), seg) == 1
    # a model whose batch dimension is fixed at 1: one frame per run, whatever max_batch says
    m = onnx.load(p["model"])
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = str(tmp_path / "fixed_batch.onnx")
    onnx.save(m, fixed)
    from seg_perception.core.segmenter import Segmenter

    with Segmenter.from_file(fixed, "onnxruntime") as seg1:
        assert seg1.backend.max_batch == 1
        assert batch_limit(dict(p, cameras=["a", "b", "c", "d"]), seg1) == 1


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


def test_a_batch_the_network_never_took_counts_a_drop_for_each_of_its_cameras(two_camera_pipelines):
    """The prepare thread hands batches over in a one-slot mailbox: a newer batch replaces one the
    network has not taken. Each camera in the replaced batch counts one dropped frame (per-camera
    diagnostics) and every input buffer goes back to its pool; so does a batch left at close."""
    from seg_perception.ros import diagnostics as diag
    from seg_perception.ros.camera import Camera
    from seg_perception.ros.frame_path import FramePath

    from seg_perception.core.latest import LatestSlot

    p, pls = two_camera_pipelines
    cams = {n: Camera(n, diag.NodeStats()) for n in ("front", "rear")}
    _, rgb = sample_scene_in_test_colours(320, 180)

    def batch():
        return [(cams[n], pls[n].prepare(frame_from_rgb(rgb), pooled=True), 0.0) for n in cams]

    slot = LatestSlot(on_drop=lambda b: FramePath._drop_batch(None, b))
    first = batch()
    buffers = [(prepared.fit, prepared.model_input) for _, prepared, _ in first]
    slot.put(first)
    slot.put(batch())  # the network was busy: the first batch is replaced
    assert [c.stats.dropped for c in cams.values()] == [1, 1]
    fit = buffers[0][0]  # one frame size, one fit: both cameras' buffers are back in its pool
    assert all(f is fit for f, _ in buffers)
    assert {id(fit.take_buffer()) for _ in buffers} == {id(b) for _, b in buffers}
    slot.close()  # the second one, never taken, at shutdown
    assert [c.stats.dropped for c in cams.values()] == [2, 2]
