"""Model metadata, label files, frame fitting, the backend factory, the pipeline and the
newest-frame slot (plain pytest, no ROS)."""

import json
import threading
import time

import numpy as np
import pytest
import yaml

from models import COLOR, CLASS_ID, colour_confidence, TEST_CLASSES, TEST_LABEL_YAML, colour_model_info, layout_ids, \
    make_colour_model, paint_blocks
from seg_perception.core import resources
from seg_perception.core.image import frame_from_rgb
from seg_perception.core.labels import UNKNOWN_ID, LabelFileError, load_label_file, parse_label_groups
from seg_perception.core.runtime.clocks import BusyClock, newest_when_needed, smooth
from seg_perception.core.runtime.slots import LatestSlot
from seg_perception.core.model_info import ModelInfo, ModelInfoError, read_onnx_metadata
from seg_perception.core.config import ConfigError, NodeConfig, OutputConfig
from seg_perception.core.pipeline import SegmentationPipeline
from seg_perception.core.backends.base import SegmenterError
from seg_perception.core.backends.registry import choose_backend
from seg_perception.core.fit import Fit
from seg_perception.core.segmenter import Segmenter

NAMES = [n for n, _ in TEST_CLASSES]


def test_metadata_round_trips_and_is_readable_without_torch(tmp_path):
    path = make_colour_model(str(tmp_path / "m.onnx"))
    info = ModelInfo.from_json(read_onnx_metadata(path))
    assert info.class_names == NAMES
    assert (info.input_height, info.input_width, info.fit) == (60, 80, "stretch")
    assert info.classes[CLASS_ID["Road"]].color == (128, 64, 128)
    assert ModelInfo.from_dict(info.to_dict()) == info


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.update(format="other/9"), "unsupported metadata format"),
    (lambda d: d["input"].update(fit="crop"), "unknown fit mode"),
    (lambda d: d["classes"].append(dict(d["classes"][0])), "duplicate class names"),
    (lambda d: d["classes"][0].update(color=[1, 2]), "3 values"),
    (lambda d: d.pop("input"), "malformed"),
])
def test_bad_metadata_is_rejected(mutate, needle):
    d = colour_model_info().to_dict()
    mutate(d)
    with pytest.raises(ModelInfoError, match=needle):
        ModelInfo.from_dict(json.loads(json.dumps(d)))


def test_label_file_groups_resolve_to_ids(tmp_path):
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), NAMES)
    assert groups.ids("drivable") == [CLASS_ID["Road"], CLASS_ID["Parking"]]
    lut = groups.lut("pedestrian")
    assert lut[CLASS_ID["Person"]] == 255 and lut.sum() == 255


@pytest.mark.parametrize("edit,needle", [
    (lambda g: g.update(road=["Road", "Tarmac"]), r"names class\(es\) \['Tarmac'\]"),
    (lambda g: g.pop("parking"), "lacks group"),
    (lambda g: g.update(lanes=["Road"]), "unknown group"),
    (lambda g: g.update(drivable=["Road", "Sidewalk"], ground=["Road"]), "must also be listed under ground"),
    (lambda g: g.update(obstacle=["Road"]), "both ground and obstacle"),
])
def test_label_file_errors_name_the_problem(tmp_path, edit, needle):
    data = yaml.safe_load(TEST_LABEL_YAML)
    edit(data["groups"])
    path = tmp_path / "l.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LabelFileError, match=needle):
        load_label_file(str(path), NAMES)


def test_shipped_label_file_matches_the_shipped_model():
    info = ModelInfo.from_json(read_onnx_metadata(resources.DEFAULT_MODEL))
    groups = load_label_file(resources.DEFAULT_LABEL_FILE, info.class_names)
    assert groups.groups["road"] and groups.groups["pedestrian"] and groups.groups["parking"]


@pytest.mark.parametrize("src", [(1080, 1920), (360, 480), (101, 37)])
def test_stretch_fit_returns_labels_by_nearest_neighbour(src):
    info = colour_model_info(60, 80, "stretch")
    fit = Fit(src[0], src[1], info)
    small = np.random.default_rng(0).integers(0, 7, (60, 80), dtype=np.uint8)
    big = fit.labels_to_source(small)
    assert big.shape == src
    ys = np.minimum((np.arange(src[0]) * 60 / src[0]).astype(int), 59)
    xs = np.minimum((np.arange(src[1]) * 80 / src[1]).astype(int), 79)
    agree = (big == small[ys][:, xs]).mean()
    assert agree > 0.99  # nearest neighbour (OpenCV rounds a few boundary pixels differently)
    assert set(np.unique(big)) <= set(np.unique(small))


def test_letterbox_keeps_aspect_and_crops_padding_back_out():
    info = colour_model_info(60, 80, "letterbox")
    fit = Fit(1080, 1920, info)  # 16:9 into 4:3: 80x45 inside, 7 rows of padding above
    assert (fit.inner_w, fit.inner_h, fit.off_x, fit.off_y) == (80, 45, 0, 7)
    img = np.full((1080, 1920, 3), 200, np.uint8)
    buf = fit.to_model(img)
    assert (buf[:7] == info.pad_value).all() and (buf[7:52] == 200).all() and (buf[52:] == 0).all()
    labels = np.zeros((60, 80), np.uint8)
    labels[7:52] = 3
    assert (fit.labels_to_source(labels) == 3).all()


def test_backend_factory_errors(tmp_path):
    with pytest.raises(SegmenterError, match="model file not found"):
        Segmenter.from_file(str(tmp_path / "missing.onnx"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    with pytest.raises(SegmenterError, match="cannot load"):
        Segmenter.from_file(str(corrupt), backend="onnxruntime")
    with pytest.raises(SegmenterError, match="cannot tell the backend"):
        choose_backend(str(tmp_path / "model.bin"))
    with pytest.raises(SegmenterError, match="unknown backend"):
        choose_backend(str(corrupt), "openvino")


def test_frames_larger_than_max_image_pixels_are_refused_before_any_work(tmp_path):
    from seg_perception.core.image import ImageError

    seg = Segmenter.from_file(make_colour_model(str(tmp_path / "m.onnx")), backend="onnxruntime")
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), seg.info.class_names)
    pipe = SegmentationPipeline(seg, groups, OutputConfig.plain(max_image_pixels=480 * 180))
    rgb = paint_blocks([["Road", "Car"]], 180, 240)  # 180 x 480: exactly the limit
    assert pipe.process(frame_from_rgb(rgb)).labels().shape == (180, 480)
    with pytest.raises(ImageError, match=r"482x180 is 0.1 MP, more than max_image_pixels = 86400"):
        pipe.prepare(frame_from_rgb(np.zeros((180, 482, 3), np.uint8)))
    pipe.apply(OutputConfig.plain(max_image_pixels=0))  # no limit
    assert pipe.process(frame_from_rgb(np.zeros((180, 482, 3), np.uint8))).labels().shape == (180, 482)


def test_pipeline_outputs_agree_with_each_other_and_the_painting(tmp_path):
    model = make_colour_model(str(tmp_path / "m.onnx"))
    seg = Segmenter.from_file(model, backend="onnxruntime")
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), seg.info.class_names)
    pipe = SegmentationPipeline(seg, groups, OutputConfig.plain(overlay_alpha=1.0))
    layout = [["Sky", "Car", "Sky", "Person"], ["Road", "Road", "Parking", "Sidewalk"]]
    rgb = paint_blocks(layout, 90, 120)  # 180 x 480 -> model 60 x 80 (3x, 6x)
    res = pipe.process(frame_from_rgb(rgb))
    want = np.kron(layout_ids(layout), np.ones((90, 120), np.uint8))
    np.testing.assert_array_equal(res.labels(), want)
    np.testing.assert_array_equal(res.mask("road") == 255, want == CLASS_ID["Road"])
    np.testing.assert_array_equal(res.mask("parking") == 255, want == CLASS_ID["Parking"])
    np.testing.assert_array_equal(res.mask("pedestrian") == 255, want == CLASS_ID["Person"])
    # alpha 1: the overlay is the palette colour of every pixel's class
    palette = np.array([c for _, c in TEST_CLASSES], np.uint8)
    np.testing.assert_array_equal(res.overlay(), palette[want])
    assert {"preprocess", "inference", "postprocess", "overlay"} <= set(res.timer.times)
    # nothing asked, nothing computed
    res2 = pipe.process(frame_from_rgb(rgb))
    assert "postprocess" not in res2.timer.times and "overlay" not in res2.timer.times


def _blend(a: str, b: str, share_b: float):
    return tuple(int(round((1 - share_b) * ca + share_b * cb)) for ca, cb in zip(COLOR[a], COLOR[b]))


def test_min_confidence_leaves_unsure_pixels_out_of_each_mask_by_its_own_threshold(tmp_path):
    seg = Segmenter.from_file(make_colour_model(str(tmp_path / "m.onnx")), backend="onnxruntime")
    assert seg.has_confidence
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), seg.info.class_names)
    pipe = SegmentationPipeline(seg, groups)
    # blocks: a sure road, a road/parking blend (road wins), a person/car blend (person wins),
    # a parking/sidewalk blend (parking wins)
    colours = [COLOR["Road"], _blend("Road", "Parking", 0.49), _blend("Person", "Car", 0.3),
               _blend("Parking", "Sidewalk", 0.495)]
    rgb = np.concatenate([np.broadcast_to(np.array(c, np.uint8), (180, 120, 3)) for c in colours], 1)
    block_conf = colour_confidence(np.array(colours, np.uint8))
    assert block_conf[0] >= 250 and all(60 < c < 200 for c in block_conf[1:]), block_conf
    want_ids = [CLASS_ID["Road"], CLASS_ID["Road"], CLASS_ID["Person"], CLASS_ID["Parking"]]
    res = pipe.process(frame_from_rgb(rgb))
    expected_conf = np.repeat(block_conf, 120)[None, :].repeat(180, 0)
    np.testing.assert_array_equal(res.confidence(), expected_conf)
    np.testing.assert_array_equal(res.labels(), np.repeat(np.array(want_ids, np.uint8), 120)[None].repeat(180, 0))

    def blocks(mask):
        return [bool((mask[:, 120 * i:120 * (i + 1)] == 255).all()) for i in range(4)]
    assert blocks(res.mask("road")) == [True, True, False, False]       # 0: every pixel counts
    # between the blends' confidences: unsure road and parking go, the probable person stays
    level = (max(block_conf[1], block_conf[3]) + 1) / 255.0
    assert level * 255 <= block_conf[0]
    pipe.apply(OutputConfig.plain(min_confidence={"road": level, "parking": level, "pedestrian": 0.2}))
    res = pipe.process(frame_from_rgb(rgb))
    assert blocks(res.mask("road")) == [True, False, False, False]
    assert blocks(res.mask("parking")) == [False, False, False, False]
    assert blocks(res.mask("pedestrian")) == [False, False, True, False]
    # the class map itself stays as the network made it; the grid's copy marks unsure unknown
    assert (res.labels()[:, 120:240] == CLASS_ID["Road"]).all()
    pipe.apply(OutputConfig.plain(min_confidence={"road": level, "parking": level, "pedestrian": 0.2,
                                                  "grid": level}))
    grid_ids = pipe.process(frame_from_rgb(rgb)).grid_labels()
    assert (grid_ids[:, :grid_ids.shape[1] // 4] == CLASS_ID["Road"]).all()
    assert (grid_ids[:, grid_ids.shape[1] // 4:] == UNKNOWN_ID).all()
    # a threshold outside [0, 1] is refused, the whole set with it (core/config)
    with pytest.raises(ConfigError, match="min_confidence.parking"):
        NodeConfig.from_values({}).changed({"min_confidence.road": 0.5, "min_confidence.parking": 1.5})
    assert pipe.outputs.min_confidence["road"] == level


def test_a_model_without_confidence_output_still_works_and_thresholds_do_nothing(tmp_path):
    seg = Segmenter.from_file(make_colour_model(str(tmp_path / "m.onnx"), confidence=False),
                              backend="onnxruntime")
    assert not seg.has_confidence and seg.info.confidence_name == ""
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), seg.info.class_names)
    pipe = SegmentationPipeline(seg, groups, OutputConfig.plain(min_confidence={"road": 0.99, "grid": 0.99}))
    rgb = paint_blocks([["Road", "Person"]], 180, 240)
    res = pipe.process(frame_from_rgb(rgb))
    assert res.confidence() is None
    assert (res.mask("road")[:, :240] == 255).all() and (res.mask("road")[:, 240:] == 0).all()
    assert UNKNOWN_ID not in res.grid_labels()


def test_latest_slot_keeps_only_the_newest_and_counts_drops():
    slot = LatestSlot()
    drops = [slot.put(i) for i in range(5)]
    assert slot.get(0.1) == (True, 4)
    assert drops == [False, True, True, True, True]  # each replaced frame reported as a drop
    assert slot.get(0.01) == (False, None)
    got = []
    t = threading.Thread(target=lambda: got.append(slot.get(5.0)))
    t.start()
    slot.put("x")
    t.join(2)
    assert got == [(True, "x")]
    slot.close()
    assert slot.get(0.01) == (False, None)


def test_latest_slot_hands_replaced_and_abandoned_items_to_on_drop():
    dropped = []
    slot = LatestSlot(on_drop=dropped.append)
    slot.put("a")
    slot.put("b")
    assert dropped == ["a"]
    assert slot.get(0.1) == (True, "b")
    slot.put("c")
    slot.close()  # left in the slot at close: dropped too (e.g. its buffer given back)
    assert dropped == ["a", "c"]


def test_prepared_frames_own_their_input_buffer_until_inferred(tmp_path):
    """The node prepares the next frame while the network runs one: two prepared frames never
    share an input buffer, and a buffer comes back once its frame was inferred (or dropped)."""
    model = make_colour_model(str(tmp_path / "m.onnx"))
    seg = Segmenter.from_file(model, backend="onnxruntime")
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), seg.info.class_names)
    pipe = SegmentationPipeline(seg, groups)
    a_rgb = paint_blocks([["Road", "Sky"]], 60, 80)
    b_rgb = paint_blocks([["Sky", "Road"]], 60, 80)
    a = pipe.prepare(frame_from_rgb(a_rgb), pooled=True)
    b = pipe.prepare(frame_from_rgb(b_rgb), pooled=True)
    assert not np.shares_memory(a.model_input, b.model_input)
    buffers = [a.model_input, b.model_input]  # references held: ids cannot be recycled
    res_a, res_b = pipe.run(a), pipe.run(b)
    assert a.model_input is None and b.model_input is None  # given back
    # each result is its own frame's, though b was prepared before a ran
    np.testing.assert_array_equal(res_a.labels(), seg.segment(a_rgb))
    np.testing.assert_array_equal(res_b.labels(), seg.segment(b_rgb))
    c = pipe.prepare(frame_from_rgb(a_rgb), pooled=True)
    assert any(c.model_input is buf for buf in buffers)  # reused: no allocation per frame
    c.release()  # a dropped frame gives its buffer back too
    d = pipe.prepare(frame_from_rgb(b_rgb), pooled=True)
    assert any(d.model_input is buf for buf in buffers)


def test_overlay_is_shrunk_to_its_max_width_with_the_same_aspect(tmp_path):
    model = make_colour_model(str(tmp_path / "m.onnx"))
    seg = Segmenter.from_file(model, backend="onnxruntime")
    groups = parse_label_groups(yaml.safe_load(TEST_LABEL_YAML), seg.info.class_names)
    pipe = SegmentationPipeline(seg, groups, OutputConfig.plain(overlay_alpha=0.0, overlay_max_width=240))
    layout = [["Sky", "Car", "Sky", "Person"], ["Road", "Road", "Parking", "Sidewalk"]]
    rgb = paint_blocks(layout, 90, 120)  # 180 x 480
    res = pipe.process(frame_from_rgb(rgb))
    assert res.overlay_size == (90, 240)
    # alpha 0: the overlay is the frame itself, shrunk; the masks keep the frame's size
    np.testing.assert_array_equal(res.overlay(), rgb[::2, ::2])
    assert res.labels().shape == (180, 480)
    pipe.apply(OutputConfig.plain(overlay_alpha=0.0, overlay_max_width=0))
    assert pipe.process(frame_from_rgb(rgb)).overlay().shape == (180, 480, 3)
    pipe.apply(OutputConfig.plain(overlay_alpha=0.0, overlay_max_width=960))  # wider than the frame: no change
    assert pipe.process(frame_from_rgb(rgb)).overlay_size == (180, 480)
    # a change at runtime (from another thread) applies from the next frame: a frame keeps its size
    pipe.apply(OutputConfig.plain(overlay_alpha=0.0, overlay_max_width=240))
    res = pipe.process(frame_from_rgb(rgb))
    out = np.zeros(res.overlay_size + (3,), np.uint8)
    pipe.apply(OutputConfig.plain(overlay_alpha=0.0, overlay_max_width=0))
    assert res.overlay_size == (90, 240) and res.overlay(out) is out
    np.testing.assert_array_equal(out, rgb[::2, ::2])


def test_busy_clock_expects_the_recent_job_length():
    clock = BusyClock(smoothing=0.5)
    assert clock.free_in() == 0.0  # idle, nothing known
    clock.start()
    assert clock.free_in() == 0.0  # running, but no length known yet
    time.sleep(0.05)
    clock.stop()
    assert 0.04 <= clock.expected < 0.5
    clock.start()
    assert 0.0 < clock.free_in() <= clock.expected
    time.sleep(clock.expected + 0.01)
    assert clock.free_in() == 0.0  # overdue: whoever waits for it goes ahead
    clock.stop()
    assert smooth(None, 3.0, 0.2) == 3.0 and smooth(1.0, 3.0, 0.5) == 2.0


def test_busy_clock_counts_busy_time_including_the_running_job():
    clock = BusyClock()
    assert clock.busy_seconds() == 0.0
    clock.start()
    time.sleep(0.05)
    clock.stop()
    time.sleep(0.1)  # idle time is not busy time
    done = clock.busy_seconds()
    assert 0.045 <= done < 0.1
    clock.start()
    time.sleep(0.05)
    assert done + 0.045 <= clock.busy_seconds() < done + 0.1  # the running job counts too


def test_a_worker_is_busy_before_the_slot_it_took_from_reads_empty():
    """The inference worker marks its clock busy inside the take: newest_when_needed, watching
    the slot and the clock, never sees an empty slot beside an idle worker (it would prepare a
    batch at once that then waits a whole run)."""
    ready, clock = LatestSlot(), BusyClock()
    clock.expected = 1.0
    seen = []
    ready.put("batch")
    ok, item = ready.get(timeout=0, on_take=lambda: (clock.start(), seen.append((ready.occupied, clock.free_in() > 0))))
    assert ok and item == "batch" and seen == [(True, True)]
    assert not ready.occupied and clock.free_in() > 0.5
    # nothing taken: nothing marked
    assert ready.get(timeout=0.01, on_take=lambda: seen.append("taken")) == (False, None) and len(seen) == 1


def _busy_clock(expected: float) -> BusyClock:
    clock = BusyClock()
    clock.expected = expected
    clock.start()
    return clock


def test_just_in_time_prepares_at_once_when_the_network_is_free():
    frames, ready = LatestSlot(), LatestSlot()
    t0 = time.monotonic()
    assert newest_when_needed("f1", frames, ready, BusyClock(), prepare_s=0.01) == "f1"
    assert time.monotonic() - t0 < 0.05


def test_just_in_time_waits_for_the_network_and_takes_the_newest_frame():
    frames, ready = LatestSlot(), LatestSlot()
    clock = _busy_clock(expected=0.3)  # the network just started a 0.3 s job
    replaced = []
    threading.Timer(0.05, frames.put, ("f2",)).start()
    t0 = time.monotonic()
    item = newest_when_needed("f1", frames, ready, clock, prepare_s=0.1, on_replaced=lambda: replaced.append(1))
    waited = time.monotonic() - t0
    assert item == "f2" and replaced == [1]
    assert 0.15 <= waited < 0.3  # about the job's end less one prepare


def test_just_in_time_holds_while_a_prepared_frame_still_waits():
    # the network overran (free_in is 0) and a prepared frame waits for it: preparing another
    # now would make that one wait a whole inference behind the waiting one
    frames, ready = LatestSlot(), LatestSlot()
    clock = _busy_clock(expected=0.01)
    time.sleep(0.02)
    assert clock.free_in() == 0.0
    ready.put("prepared")
    threading.Timer(0.05, frames.put, ("f2",)).start()
    threading.Timer(0.15, ready.get).start()  # the network takes the waiting frame
    t0 = time.monotonic()
    item = newest_when_needed("f1", frames, ready, clock, prepare_s=0.0)
    assert item == "f2" and time.monotonic() - t0 >= 0.14


def test_just_in_time_gives_up_when_the_frames_close():
    frames, ready = LatestSlot(), LatestSlot()
    threading.Timer(0.05, frames.close).start()
    assert newest_when_needed("f1", frames, ready, _busy_clock(expected=5.0), prepare_s=0.0) is None


def test_a_closed_latest_slot_drops_what_is_put():
    dropped = []
    slot = LatestSlot(on_drop=dropped.append)
    slot.close()
    slot.put("late")  # e.g. a frame prepared while the node shuts down: its buffer comes back
    assert dropped == ["late"] and slot.get(0.01) == (False, None)


def test_camera_info_watch_decides_the_grid_on_its_clock():
    from seg_perception.core.camera_info_watch import ERROR, OK, WARN, CameraInfoWatch

    now = [100.0]
    watch = CameraInfoWatch(2.0, clock=lambda: now[0])
    assert watch.grid_allowed() and not watch.fresh()     # tried before the first: it says why
    assert watch.grid_status("no CameraInfo received yet", "/cam/camera_info") == (
        WARN, "no grid: CameraInfo on /cam/camera_info never received")
    watch.received()
    now[0] += 1.5
    assert watch.fresh() and watch.grid_allowed() and watch.grid_status(None, "/c") == (OK, "")
    assert watch.grid_status("CameraInfo describes 640x480 images", "/c")[0] == ERROR
    now[0] += 1.0                                          # 2.5 s old: stale
    assert not watch.fresh() and not watch.grid_allowed()
    assert watch.grid_status("CameraInfo is stale", "/c") == (WARN, "no grid: CameraInfo on /c last one 2.5 s ago")
    watch.timeout_s = 0.0                                  # never stale
    assert watch.fresh() and watch.grid_allowed()
    # a bag's recorded time, passed explicitly
    bag = CameraInfoWatch(1.0, clock=lambda: 0.0)
    bag.received(10.0)
    assert bag.grid_allowed(10.9) and not bag.grid_allowed(11.2)


def test_a_frames_timer_counts_the_waits_between_threads():
    from seg_perception.core.pipeline import StageTimer

    timer = StageTimer()
    timer.taken("wait for network")  # never queued: nothing counted
    assert timer.times == {}
    timer.queued()
    time.sleep(0.05)
    timer.taken("wait for network")
    timer.taken("wait for network")  # taken once per queueing
    assert 0.05 <= timer.times["wait for network"] < 0.5
    timer.queued()
    timer.taken("wait for outputs")
    assert 0 <= timer.times["wait for outputs"] < 0.05 and set(timer.times) == {"wait for network", "wait for outputs"}
