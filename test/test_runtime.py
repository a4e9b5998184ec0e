"""The frame runtime (core/runtime) without DDS: a fake backend that takes a set time per run and
records every batch, frames offered as the node's callbacks offer them, an injected clock for
what the runtime measures. Newest frame wins, fair turns, batches, runs at once, supervision."""

from __future__ import annotations

import threading
import time
from typing import List

import numpy as np
import pytest

from seg_perception.core.backends.base import Backend
from seg_perception.core.image import frame_from_rgb
from seg_perception.core.labels import parse_label_groups
from seg_perception.core.model_info import ClassInfo, ModelInfo
from seg_perception.core.pipeline import SegmentationPipeline
from seg_perception.core.runtime.plan import RunPlan
from seg_perception.core.runtime.runtime import MAX_WORKER_RESTARTS, FrameRuntime
from seg_perception.core.segmenter import Segmenter

CLASSES = ("Road", "Person")
LABELS = {"groups": {"road": ["Road"], "pedestrian": ["Person"], "parking": [], "drivable": ["Road"],
                     "ground": ["Road"], "obstacle": ["Person"]}}


class SlowBackend(Backend):
    """``seconds`` per run whatever the batch; records the batch sizes and how many runs overlap.
    The class id it returns is the frame's red value, so a result shows which frame it was."""

    name = "fake"

    def __init__(self, seconds: float) -> None:
        super().__init__("fake.onnx")
        self.seconds = seconds
        self.batches: List[int] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        self.info = ModelInfo(classes=tuple(ClassInfo(n, (0, 0, 0)) for n in CLASSES), input_height=8, input_width=8)
        self.has_confidence, self.max_batch, self.concurrent_runs = False, 64, True

    def _infer(self, images):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.batches.append(len(images))
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return (images[..., 0] % 2).astype(np.uint8), None


class FakeClock:
    """Time that moves only when the test says so (plus what the test's steps add)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def frame(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def make_runtime(cameras, seconds=0.05, plan=RunPlan(workers=1, batch_limit=1), clock=time.monotonic):
    backend = SlowBackend(seconds)
    seg = Segmenter(backend.activate())
    groups = parse_label_groups(LABELS, list(CLASSES))
    delivered = []
    rt = FrameRuntime(cameras, plan.workers, decode=lambda cam, msg, timer: frame_from_rgb(msg),
                      wanted=lambda cam: ["labels"],
                      deliver=lambda cam, result, wanted, t: delivered.append((cam, int(result.frame.rgb()[0, 0, 0]))),
                      log=lambda kind, level, text: None, clock=clock)
    rt.start(loaded=({c or "": SegmentationPipeline(seg, groups) for c in (cameras or [""])}, plan))
    return rt, backend, delivered


def wait_until(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.005)
    return pred()


def test_the_newest_frame_wins_and_the_others_are_counted_dropped():
    rt, backend, delivered = make_runtime([""], seconds=0.2)
    try:
        rt.offer("", frame(1))
        assert wait_until(lambda: backend.batches)  # the network is busy with frame 1
        for v in range(2, 7):
            rt.offer("", frame(v))  # 2..5 are replaced before the network is free
        assert wait_until(lambda: len(delivered) == 2)
        time.sleep(0.3)
        assert delivered == [("", 1), ("", 6)]
        snap = rt.snapshot()
        assert (snap.cameras[""].received, snap.cameras[""].processed, snap.cameras[""].dropped) == (6, 2, 4)
    finally:
        assert rt.close(2.0)


def test_cameras_take_turns_under_overload():
    """Four cameras at twice what the network takes: each gets an equal share (the camera served
    longest ago first), where serving the oldest waiting frame starves one (test_surround)."""
    cams = ["a", "b", "c", "d"]
    rt, backend, delivered = make_runtime(cams, seconds=0.02)
    try:
        stop = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < stop:
            for c in cams:
                rt.offer(c, frame(i % 250))
            i += 1
            time.sleep(0.04)  # 4 frames per 40 ms, the network takes 2
        time.sleep(0.2)
        counts = [sum(1 for c, _ in delivered if c == cam) for cam in cams]
        assert min(counts) >= 10 and max(counts) - min(counts) <= 2, counts
        assert sum(rt.snapshot().cameras[c].dropped for c in cams) > 0
    finally:
        assert rt.close(2.0)


def test_a_run_takes_several_cameras_frames_in_one_batch_and_runs_go_at_once():
    rt, backend, delivered = make_runtime(["a", "b", "c"], seconds=0.1, plan=RunPlan(workers=1, batch_limit=3))
    try:
        rt.offer("a", frame(1))
        assert wait_until(lambda: backend.batches)
        for c in ("a", "b", "c"):
            rt.offer(c, frame(3))
        assert wait_until(lambda: len(delivered) == 4)
        assert backend.batches == [1, 3]  # the waiting frame of every camera in one run
    finally:
        assert rt.close(2.0)
    rt, backend, delivered = make_runtime(["a", "b"], seconds=0.15, plan=RunPlan(workers=2, batch_limit=1))
    try:
        for v in range(6):
            rt.offer("a", frame(v))
            rt.offer("b", frame(v))
            time.sleep(0.05)
        assert wait_until(lambda: len(delivered) >= 4)
        assert backend.most_at_once == 2  # two runs on the one model at once
        # a camera's outputs never go back in time, whichever run finishes first
        for cam in ("a", "b"):
            values = [v for c, v in delivered if c == cam]
            assert values == sorted(values), values
    finally:
        assert rt.close(2.0)


def test_the_snapshot_measures_on_the_injected_clock():
    clock = FakeClock()
    rt, backend, delivered = make_runtime([""], seconds=0.01, clock=clock)
    try:
        rt.snapshot()  # a window starts
        rt.offer("", frame(1))  # received at t=1000
        assert wait_until(lambda: len(delivered) == 1)
        clock.t += 2.0  # two seconds pass on the runtime's clock
        snap = rt.snapshot()
        w = snap.cameras[""].window
        assert w.input_rate == pytest.approx(0.5) and w.processed_rate == pytest.approx(0.5)
        assert snap.network_busy_share == pytest.approx(0.0, abs=1e-6)  # the run took no time on this clock
        assert w.latencies == (0.0,)  # offered and delivered at the same clock time
    finally:
        assert rt.close(2.0)


class Crashing(FrameRuntime):
    """A worker step that fails outside its per-frame handling (a bug) ``times`` times."""

    def __init__(self, *args, times: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.times = times

    def _prepare_batch(self, taken, live=True):
        if self.times > 0:
            self.times -= 1
            raise RuntimeError("bug")
        return super()._prepare_batch(taken, live)


@pytest.mark.parametrize("times", [1, MAX_WORKER_RESTARTS + 1])
def test_a_failing_worker_is_restarted_and_one_that_keeps_failing_ends_the_runtime(times, monkeypatch):
    from seg_perception.core.runtime import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "WORKER_RESTART_DELAY_S", 0.01)
    backend = SlowBackend(0.01)
    seg = Segmenter(backend.activate())
    delivered, fatal, logs = [], [], []
    rt = Crashing([""], 1, decode=lambda cam, msg, timer: frame_from_rgb(msg), wanted=lambda cam: ["labels"],
                  deliver=lambda *a: delivered.append(a), log=lambda *a: logs.append(a), times=times)
    rt.on_fatal = lambda text, trace: fatal.append(text)
    rt.start(loaded=({"": SegmentationPipeline(seg, parse_label_groups(LABELS, list(CLASSES)))}, RunPlan()))
    try:
        for v in range(times + 2):
            rt.offer("", frame(v))
            time.sleep(0.05)
        if times <= MAX_WORKER_RESTARTS:
            assert wait_until(lambda: delivered)  # frames flow again after the restart
            assert rt.worker_restarts == times and rt.fatal is None and not fatal
            assert any("prepare thread failed" in text and "Traceback" in text for _, _, text in logs)
            assert rt.stats.problem("worker") is None  # a frame went all the way through: cleared
        else:
            assert wait_until(lambda: fatal)
            assert "prepare thread failed" in fatal[0] and rt.fatal == fatal[0]
            assert "exiting" in rt.stats.problem("worker").message
    finally:
        rt.close(2.0)


def test_run_now_processes_every_frame_in_the_callers_thread():
    """process-bag's way: nothing dropped, one frame per camera in one run, results in order."""
    backend = SlowBackend(0.0)
    seg = Segmenter(backend.activate())
    groups = parse_label_groups(LABELS, list(CLASSES))
    delivered = []
    rt = FrameRuntime(["a", "b"], 1, decode=lambda cam, msg, timer: frame_from_rgb(msg), wanted=lambda cam: ["labels"],
                      deliver=lambda cam, result, wanted, t: delivered.append((cam, t)), log=lambda *a: None)
    rt.attach({c: SegmentationPipeline(seg, groups) for c in ("a", "b")}, RunPlan(batch_limit=2))
    for t in range(3):
        rt.run_now([("a", frame(t), t), ("b", frame(t), t)])
    assert delivered == [(c, t) for t in range(3) for c in ("a", "b")]
    assert backend.batches == [2, 2, 2]
    assert all(rt.snapshot().cameras[c].dropped == 0 for c in ("a", "b"))
