"""The frame runtime: what happens to camera frames between their arrival and their outputs,
without ROS. The node offers each camera's messages from its callbacks; process-bag runs the same
stages in its own thread, one bag message after the other (``run_now``).

Threads of the live runtime, each handing the newest item to the next through a one-slot
mailbox (core/runtime/slots.py; a waiting item that a newer one replaces is dropped and counted,
so there is never a backlog of stale frames):

  prepare    takes the newest frame of the camera whose turn it is (the camera served longest
             ago: core/surround.fair_order) and, batching, of the next cameras in turn, just
             before the network is free (core/runtime/clocks.newest_when_needed), and fits it to
             the model's input
  inference  runs the network once on the prepared batch (core/pipeline.run_batch); on a CPU
             several runs at once on the one model (inference_workers), each its own thread
  outputs    hands each camera's newest result to ``deliver`` (the node publishes, a tool writes)

A worker that fails outside its per-frame handling (a bug) is reported and restarted; failing
more than MAX_WORKER_RESTARTS times within RESTART_WINDOW_S, the runtime stops and says so
(``fatal``): the node then exits non-zero for respawn to start it again.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..image import Frame, ImageError
from ..pipeline import WAITS, FrameResult, Prepared, SegmentationPipeline, StageTimer, run_batch
from ..surround import fair_order
from .clocks import BusyClocks, newest_when_needed, smooth
from .plan import RunPlan
from .slots import LatestPerKey, LatestSlot
from .stats import ERROR, WARN, Stats, Window

MAX_WORKER_RESTARTS = 3
RESTART_WINDOW_S = 60.0
WORKER_RESTART_DELAY_S = 0.5

# (camera, message, timer) -> Frame; raises ImageError for input that cannot be read
Decode = Callable[[str, Any, StageTimer], Frame]
# camera -> the outputs somebody wants now ([] : none, the frame is not worth a network run)
Wanted = Callable[[str], List[str]]
# (camera, result, wanted outputs, receive time): the output stage (publish, write)
Deliver = Callable[[str, FrameResult, List[str], float], None]
# (kind, level, text): a log line the caller throttles; level info | warn | error
Log = Callable[[str, str, str], None]
# -> ({camera: pipeline}, plan): load the model (the first inference thread calls it)
Load = Callable[[], Tuple[Dict[str, SegmentationPipeline], RunPlan]]


class InputBatches:
    """[N, H, W, 3] model-input arrays reused from batch to batch: a batch's frames are fitted
    straight into its rows, so the network's input is never stacked (copied) again."""

    def __init__(self) -> None:
        self._free: Dict[Tuple[int, int, int], List[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, n: int, height: int, width: int) -> np.ndarray:
        with self._lock:
            free = self._free.get((n, height, width))
            if free:
                return free.pop()
        return np.empty((n, height, width, 3), np.uint8)

    def give_back(self, array: Optional[np.ndarray]) -> None:
        if array is None:
            return
        with self._lock:
            free = self._free.setdefault(array.shape[:3], [])
            if len(free) < 4:  # one being written, one waiting, one in each run
                free.append(array)


class Lane:
    """One camera in the runtime: its newest-frame slot, its turn, its counters, its pipeline."""

    def __init__(self, name: str, stats: Stats) -> None:
        self.name = name
        self.slot = LatestSlot()
        self.stats = stats
        self.waiting_since = 0.0                  # receive time of the frame in the slot
        self.last_served: Optional[float] = None  # when the network last took its frame
        self.pipeline: Optional[SegmentationPipeline] = None
        self.idle = False                         # nobody wanted its outputs at its last frame
        self.source = ""                          # where its frames come from (a topic), for messages

    def label(self, text: str) -> str:
        """'text' for the single camera, 'C: text' for camera C."""
        return f"{self.name}: {text}" if self.name else text


@dataclasses.dataclass(frozen=True)
class CameraSnapshot:
    window: Window
    received: int
    processed: int
    dropped: int
    failed: int
    last_error: str
    stage_ms: Dict[str, float]
    idle: bool


@dataclasses.dataclass(frozen=True)
class RuntimeSnapshot:
    """What the runtime reports at a diagnostics period (windows since the last snapshot)."""
    loaded: bool
    network_busy_share: float     # of the time since the last snapshot, mean over the runs
    network_runs: int
    network_frames: int
    runs_at_once: int
    frames_per_run: int
    worker_restarts: int
    node: Window                  # the network's: all cameras' frames (one camera: its own)
    cameras: Dict[str, CameraSnapshot]


class FrameRuntime:
    """``cameras``: their names ("" : the single camera). ``workers_asked``: network runs at once
    the parameters ask for (threads are made for them; those beyond what the loaded backend
    allows end once it has loaded)."""

    def __init__(self, cameras: Sequence[str], workers_asked: int, decode: Decode, wanted: Wanted,
                 deliver: Deliver, log: Log, clock: Callable[[], float] = time.monotonic) -> None:
        self.decode, self.wanted, self.deliver, self.log = decode, wanted, deliver, log
        self.clock = clock
        names = list(cameras) or [""]
        self.lanes: Dict[str, Lane] = {}
        for name in names:
            self.lanes[name] = Lane(name, Stats(clock))
        # the network's counters: one camera shares its own, several have them over all cameras
        self.stats = self.lanes[names[0]].stats if names == [""] else Stats(clock)
        self.frame_arrived = threading.Event()
        self.ready = LatestSlot(on_drop=self._drop_batch)  # ([(lane, prepared, receive time)], inputs)
        self.inputs = InputBatches()
        self.done = LatestPerKey()  # each camera's newest result: one camera never drops another's
        self.workers_asked = max(1, int(workers_asked))
        self.plan = RunPlan(workers=1, batch_limit=1)
        self.network = BusyClocks(1, clock=clock)
        self.network_runs = self.network_frames = 0
        self._count_lock = threading.Lock()
        self.loaded = threading.Event()  # the model loaded, or failed to
        self.pipelines: Dict[str, SegmentationPipeline] = {}
        self.worker_restarts = 0
        self.fatal: Optional[str] = None   # set when the runtime gave up (a worker kept failing)
        self.on_fatal: Callable[[str, str], None] = lambda text, trace: None
        self._prepare_s: Optional[float] = None
        self._busy_mark = (clock(), 0.0)
        self._threads: List[threading.Thread] = []
        self.stats.report("model", WARN, "loading the model")

    # ---------------------------------------------------------------- life
    def start(self, load: Optional[Load] = None,
              loaded: Optional[Tuple[Dict[str, SegmentationPipeline], RunPlan]] = None) -> None:
        """Start the threads: ``load`` runs on the first inference thread (the node answers
        meanwhile), or ``loaded`` is a model already loaded (a managed node's configure)."""
        if loaded is not None:
            self._set_loaded(*loaded)
        workers = [("inference", lambda: self._infer_loop(0, load))] + [
            (f"inference_{i + 1}", lambda i=i: self._infer_loop(i)) for i in range(1, self.workers_asked)]
        self._threads = [threading.Thread(target=self._supervised(name, fn), name=f"camera_seg_{name}",
                                          daemon=True)
                         for name, fn in workers + [("prepare", self._prepare_loop),
                                                    ("outputs", self._outputs_loop)]]
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the threads; True when all of them ended within ``timeout`` (in total); the
        network is released then (never under a thread still inferring)."""
        for lane in self.lanes.values():
            lane.slot.close()
        self.ready.close()
        self.done.close()
        self.frame_arrived.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=max(0.0, end - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        if stopped:
            self.release()
        return stopped

    def release(self) -> None:
        first = next(iter(self.pipelines.values()), None)
        self.pipelines = {}
        for lane in self.lanes.values():
            lane.pipeline = None
        if first is not None:
            first.release()  # the pipelines share one network

    @property
    def closed(self) -> bool:
        return self.ready.closed

    def attach(self, pipelines: Dict[str, SegmentationPipeline], plan: RunPlan) -> None:
        """A model already loaded, for ``run_now`` without the threads (process-bag)."""
        self._set_loaded(pipelines, plan)

    def _set_loaded(self, pipelines: Dict[str, SegmentationPipeline], plan: RunPlan) -> None:
        self.plan = plan
        self.network = BusyClocks(plan.workers, clock=self.clock)
        for name, pipeline in pipelines.items():
            self.lanes[name].pipeline = pipeline
        self.pipelines = dict(pipelines)  # last: the other threads use it once it is set
        self.stats.clear("model")
        self.loaded.set()

    def _load(self, load: Load) -> None:
        try:
            self._set_loaded(*load())
        except Exception as exc:  # missing or corrupt model, a bad label file: keep running, report
            self.stats.report("model", ERROR, f"model not loaded: {exc}")
            self.log("model_load", "error", f"model not loaded, nothing will be published: {exc}")
        finally:
            self.loaded.set()

    # ---------------------------------------------------------------- input
    def offer(self, camera: str, item: Any, t_received: Optional[float] = None) -> bool:
        """A camera's newest message (from its callback: nothing else happens there); True when
        it replaced one that was not processed (counted as dropped)."""
        lane = self.lanes[camera]
        lane.stats.on_received()
        now = self.clock() if t_received is None else t_received
        if not lane.slot.occupied:
            lane.waiting_since = now
        dropped = lane.slot.put((item, now))
        if dropped:
            lane.stats.on_dropped()
        self.frame_arrived.set()
        return dropped

    def discard_waiting(self, camera: str) -> None:
        """Forget a camera's waiting frame (unsubscribed: it must not come out after reactivation)."""
        self.lanes[camera].slot.get(timeout=0)

    # ---------------------------------------------------------------- supervision
    def _supervised(self, name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            failures: List[float] = []
            while True:
                try:
                    fn()
                    return  # its mailbox closed: the runtime is closing
                except Exception as exc:
                    if self.closed:
                        return
                    now = time.monotonic()
                    failures = [t for t in failures if now - t < RESTART_WINDOW_S] + [now]
                    text = f"{name} thread failed: {exc!r}"
                    if len(failures) > MAX_WORKER_RESTARTS:
                        text = f"{text}, {len(failures)} times in {RESTART_WINDOW_S:.0f} s"
                        self.stats.report("worker", ERROR, f"{text}; exiting (respawn restarts the node)")
                        self.fatal = text
                        self.on_fatal(text, traceback.format_exc())
                        return
                    self.worker_restarts += 1
                    self.stats.report("worker", ERROR, f"{text}; restarted it")
                    # a kind of its own per failure: every one is logged, with its traceback
                    self.log(f"worker:{self.worker_restarts}", "error", f"{text}; restarting it\n{traceback.format_exc()}")
                    time.sleep(WORKER_RESTART_DELAY_S)
        return run

    # ---------------------------------------------------------------- inference
    def _infer_loop(self, index: int, load: Optional[Load] = None) -> None:
        """Inference thread ``index``: the first loads the model; each then runs the network on
        the newest prepared batch, side by side with the others."""
        if load is not None and not self.loaded.is_set():  # a restarted thread goes straight to the frames
            self._load(load)
        while not self.loaded.wait(0.2):
            if self.closed:
                return
        if index >= self.plan.workers:
            return  # the backend runs fewer at once than the parameters asked for
        clock = self.network.clocks[index]
        while not self.closed:
            # busy from the moment the batch is taken: the prepare thread must not read this
            # run as free and prepare a batch that then waits a whole run
            ok, batch = self.ready.get(timeout=0.2, on_take=clock.start)
            if ok:
                try:
                    self._infer(batch)
                finally:
                    clock.stop()

    def _infer(self, item) -> None:
        batch, inputs = item
        for _, prepared, _ in batch:
            prepared.timer.taken(WAITS[1])
        results = self._run(batch, inputs)
        for (lane, _, t_received), result in zip(batch, results or ()):
            result.timer.queued()
            # a camera's result older than one another run already handed over is dropped:
            # outputs never go back in time
            if self.done.put(lane.name, (lane, result, t_received), order=t_received):
                lane.stats.on_dropped()

    def _run(self, batch, inputs: np.ndarray) -> Optional[List[FrameResult]]:
        """The network once on the batch; None (each frame reported) when it failed."""
        try:
            results = run_batch([(lane.pipeline, prepared) for lane, prepared, _ in batch], inputs)
        except Exception as exc:
            for lane, _, _ in batch:
                self.frame_error(lane, "inference", f"inference failed: {exc}")
            return None
        finally:
            self.inputs.give_back(inputs.base if inputs.base is not None else inputs)
        with self._count_lock:
            self.network_runs += 1
            self.network_frames += len(batch)
        return results

    # ---------------------------------------------------------------- prepare
    def _prepare_loop(self) -> None:
        while not self.loaded.wait(0.2):
            if self.closed:
                return
        while not self.closed:
            lane, item = self._next_frame(timeout=0.2)
            if lane is None:
                continue
            if not self.pipelines:
                pr = self.stats.problem("model")
                self.log("model", "error", "dropping frames: " + (pr.message if pr else "no model loaded"))
                lane.stats.on_dropped()
                continue
            item = newest_when_needed(item, lane.slot, self.ready, self.network, self._prepare_s or 0.0,
                                      lane.stats.on_dropped)
            if item is None:
                return
            t0 = time.monotonic()
            batch, inputs = self._prepare_batch([(lane, item)] + self._take_in_turn(self.plan.batch_limit - 1))
            self._prepare_s = smooth(self._prepare_s, time.monotonic() - t0, 0.2)
            if batch:
                for _, prepared, _ in batch:
                    prepared.timer.queued()
                self.ready.put((batch, inputs))  # a batch it replaces is counted by _drop_batch

    def _prepare_batch(self, taken, live: bool = True) -> Tuple[List[Tuple[Lane, Prepared, float]], Optional[np.ndarray]]:
        """The frames fitted into the rows of one input array: (the batch, its rows in use)."""
        info = next(iter(self.pipelines.values())).info
        rows = self.inputs.take(len(taken), info.input_height, info.input_width)
        batch = []
        for lane, (msg, t_received) in taken:
            try:
                prepared = self._prepare(lane, msg, t_received, rows[len(batch)], live)
            except Exception as exc:  # never let the worker die on one frame; report and go on
                self.frame_error(lane, "frame", f"processing failed: {exc!r}")
                continue
            if prepared is not None:
                batch.append((lane, prepared, t_received))
        if not batch:
            self.inputs.give_back(rows)
            return [], None
        return batch, rows[:len(batch)]

    def _prepare(self, lane: Lane, msg: Any, t_received: float, row: np.ndarray,
                 live: bool = True) -> Optional[Prepared]:
        """The frame fitted to the model's input, or None: nobody wants it, or a bad image."""
        wanted = self.wanted(lane.name)
        lane.idle = not wanted
        if lane.idle:  # nobody listens: no work, and no old problem reported as current
            lane.stats.clear("frame")
            lane.stats.clear("grid")
            return None
        try:
            timer = StageTimer()
            if live:
                timer.add(WAITS[0], self.clock() - t_received)  # its age in the camera's slot
            # into its row of the batch's input: the next batch is prepared while the network runs this one
            prepared = lane.pipeline.prepare(self.decode(lane.name, msg, timer), timer, out=row)
        except ImageError as exc:
            self.frame_error(lane, "frame", f"bad image{' on ' + lane.source if lane.source else ''}: {exc}")
            return None
        prepared.wanted = wanted
        return prepared

    def _next_frame(self, timeout: float):
        """(lane, its newest frame) of the camera whose turn it is, or (None, None) after
        ``timeout``."""
        end = time.monotonic() + timeout
        while not self.closed:
            self.frame_arrived.clear()
            taken = self._take_in_turn(1)
            if taken:
                return taken[0]
            left = end - time.monotonic()
            if left <= 0:
                break
            self.frame_arrived.wait(min(left, 0.05))
        return None, None

    def _take_in_turn(self, n: int) -> list:
        """Up to ``n`` cameras' waiting frames [(lane, (message, receive time))], the camera
        served longest ago first: under overload every camera gets an equal share."""
        if n <= 0:
            return []
        waiting = {name: lane.waiting_since for name, lane in self.lanes.items() if lane.slot.occupied}
        served = {name: lane.last_served for name, lane in self.lanes.items() if lane.last_served is not None}
        taken = []
        for name in fair_order(waiting, served):
            lane = self.lanes[name]
            ok, item = lane.slot.get(timeout=0)
            if ok:
                lane.last_served = self.clock()
                taken.append((lane, item))
                if len(taken) == n:
                    break
        return taken

    def _drop_batch(self, item) -> None:
        """A prepared batch the network never took: its input back, each frame a drop."""
        batch, inputs = item
        for lane, prepared, _ in batch:
            prepared.release()
            lane.stats.on_dropped()
        self.inputs.give_back(inputs.base if inputs.base is not None else inputs)

    # ---------------------------------------------------------------- outputs
    def _outputs_loop(self) -> None:
        while not self.loaded.wait(0.2):  # its niceness depends on the loaded backend
            if self.closed:
                return
        _nice(self.plan.output_niceness, self.log)
        while not self.closed:
            ok, items = self.done.get(timeout=0.2)
            for lane, result, t_received in items:  # each camera's newest result, in the order they came
                self._deliver(lane, result, t_received)

    def _deliver(self, lane: Lane, result: FrameResult, t_received: float, live: bool = True) -> None:
        result.timer.taken(WAITS[2])
        try:
            self.deliver(lane.name, result, result.wanted, t_received)
        except Exception as exc:  # one frame's outputs; the thread goes on
            self.frame_error(lane, "outputs", f"building outputs failed: {exc!r}")
            return
        lane.stats.clear("frame")
        self.stats.clear("worker")  # a frame went all the way through: restarted workers work
        latency = self.clock() - t_received if live else 0.0
        lane.stats.on_processed(latency, result.timer.times)
        if lane.stats is not self.stats:  # the network's figures over all cameras
            self.stats.on_processed(latency, result.timer.times)

    # ---------------------------------------------------------------- in the caller's thread
    def run_now(self, items: Sequence[Tuple[str, Any, float]]) -> None:
        """The same stages in the calling thread, nothing dropped: ``items`` [(camera, message,
        time)], one frame per camera, go through the network as one batch (at most the plan's
        frames per run at a time) and each result to ``deliver`` (process-bag)."""
        if not self.pipelines:
            raise RuntimeError("run_now before the model is loaded (start(loaded=...))")
        lanes = [(self.lanes[c], (msg, t)) for c, msg, t in items]
        for lane, _ in lanes:
            lane.stats.on_received()
        for start in range(0, len(lanes), max(1, self.plan.batch_limit)):
            batch, inputs = self._prepare_batch(lanes[start:start + max(1, self.plan.batch_limit)], live=False)
            if not batch:
                continue
            results = self._run(batch, inputs)
            for (lane, _, t), result in zip(batch, results or ()):
                self._deliver(lane, result, t, live=False)

    # ---------------------------------------------------------------- reports
    def frame_error(self, lane: Lane, kind: str, text: str) -> None:
        """A frame that produced nothing: an ERROR in its camera's problems and a log line."""
        lane.stats.report("frame", ERROR, lane.label(text))
        self.log(f"{kind}:{lane.name}", "error", lane.label(text))

    def snapshot(self) -> RuntimeSnapshot:
        """The figures since the last snapshot (rates, latency, network busy share)."""
        now, busy = self.clock(), self.network.busy_seconds()
        share = (busy - self._busy_mark[1]) / max(now - self._busy_mark[0], 1e-6)
        self._busy_mark = (now, busy)
        cameras = {}
        for name, lane in self.lanes.items():
            s = lane.stats
            window = s.window() if s is not self.stats else None
            cameras[name] = (s, window)
        node = self.stats.window()
        return RuntimeSnapshot(
            loaded=bool(self.pipelines), network_busy_share=share, network_runs=self.network_runs,
            network_frames=self.network_frames, runs_at_once=self.plan.workers,
            frames_per_run=self.plan.batch_limit, worker_restarts=self.worker_restarts, node=node,
            cameras={name: CameraSnapshot(window or node, s.received, s.processed, s.dropped, s.failed,
                                          s.last_error, dict(s.stage_ms), self.lanes[name].idle)
                     for name, (s, window) in cameras.items()})


def _nice(niceness: int, log: Log) -> None:
    """This thread at ``niceness`` above the process's (Linux thread id; no privilege needed to
    raise it). From the process's own, not this thread's: a restarted thread is the same thread."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, base + niceness))
    except OSError as exc:
        log("niceness", "warn", f"output_niceness not applied: {exc}")
