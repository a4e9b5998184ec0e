"""The path of a frame through the camera_seg node's worker threads (a part of the node class,
CameraSegBase, kept apart so that the node file reads as its phases and this one as its threads):

  prepare    takes the newest frame of the camera whose turn it is (and, batching, of the next
             cameras in turn) just before the network is free, and fits it to the model's input
  inference  runs the network once on the prepared batch (core/pipeline.run_batch); several
             cameras on a CPU: several inference threads, each taking the next prepared batch
             (inference_workers, one model)
  outputs    builds and publishes each camera's newest result, feeds the surround grid and the
             drivable map

Each hand-over is a one-slot mailbox (core/latest): never a backlog of stale frames. A worker
that fails is restarted; failing too often, the node exits non-zero (respawn starts it again).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import List

from ..core.camera_info_watch import OK, WARN
from ..core.image import ImageError
from ..core.latest import newest_when_needed, smooth
from ..core.pipeline import GRID_OUTPUT, WAITS, StageTimer, run_batch
from ..core.surround import fair_order
from . import diagnostics as diag
from .camera import Camera
from .conversions import copy_header, frame_from_msg, occupancy_grid_msg, stamp_seconds

# A worker thread that fails (a bug: per-frame errors are handled inside it) is restarted; one
# that fails more than MAX_WORKER_RESTARTS times within RESTART_WINDOW_S ends the node with
# EXIT_WORKER_FAILED, so that a launch file's respawn starts a fresh process.
MAX_WORKER_RESTARTS = 3
RESTART_WINDOW_S = 60.0
WORKER_RESTART_DELAY_S = 0.5
EXIT_WORKER_FAILED = 2


class FramePath:
    """The worker threads' part of CameraSegBase (it uses the node's cameras, slots, stats and
    logs, which CameraSegBase creates)."""

    def _supervised(self, name: str, fn):
        """A worker thread's target: fn run again when it fails (diagnostics ERROR with the
        exception, the traceback in the log); failing too often, the node exits non-zero."""
        def run() -> None:
            failures: List[float] = []
            while True:
                try:
                    fn()
                    return  # its mailbox closed: the node is shutting down
                except Exception as exc:
                    if self.slot.closed:
                        return
                    now = time.monotonic()
                    failures = [t for t in failures if now - t < RESTART_WINDOW_S] + [now]
                    text = f"{name} thread failed: {exc!r}"
                    if len(failures) > MAX_WORKER_RESTARTS:
                        self._fail(f"{text}, {len(failures)} times in {RESTART_WINDOW_S:.0f} s", traceback.format_exc())
                        return
                    self._worker_restarts += 1
                    self.stats.report("worker", diag.ERROR, f"{text}; restarted it")
                    self.get_logger().error(f"{text}; restarting it\n{traceback.format_exc()}")
                    time.sleep(WORKER_RESTART_DELAY_S)
        return run

    def _fail(self, text: str, trace: str) -> None:
        """End the node: diagnostics ERROR now, then main() exits with EXIT_WORKER_FAILED."""
        self.stats.report("worker", diag.ERROR, f"{text}; exiting (respawn restarts the node)")
        try:
            self._publish_diagnostics()
        except Exception:
            pass  # exiting anyway; the log says why
        self.get_logger().fatal(f"{text}; exiting with code {EXIT_WORKER_FAILED}\n{trace}")
        self.fatal_error = text

    def _work(self, index: int = 0) -> None:
        """Inference thread ``index``: the first loads the model; each then runs the network on
        the newest prepared batch, side by side with the others (inference_workers)."""
        if index == 0 and not self._model_done.is_set():  # a restarted thread goes straight to the frames
            self._load_model()
        while not self._model_done.wait(0.2):
            if self.ready_slot.closed:
                return
        if index >= self.inference_workers:
            return  # the backend runs fewer at once than the parameters asked for
        clock = self._network.clocks[index]
        while not self.ready_slot.closed:
            # busy from the moment the batch is taken: the prepare thread must not read this
            # worker as free and prepare a batch that then waits a whole run
            ok, batch = self.ready_slot.get(timeout=0.2, on_take=clock.start)
            if ok:
                try:
                    self._check_fault("inference")
                    self._infer(batch)
                finally:
                    clock.stop()

    def _check_fault(self, thread_name: str) -> None:
        if self._worker_fault is not None:
            self._worker_fault(thread_name)

    def _prepare_frames(self) -> None:
        """Prepare thread: decode and fit the newest frame of the camera whose turn it is (and,
        batching, of the next cameras in turn) to the model's input, just before the network is
        free."""
        while not self._model_done.wait(0.2):
            if self.slot.closed:
                return
        while not self.slot.closed:
            cam, item = self._next_frame(timeout=0.2)
            if cam is None:
                continue
            self._check_fault("prepare")
            if self.pipeline is None:
                pr = self.stats.problem("model")
                self._log("model", "error", "dropping frames: " + (pr.message if pr else "no model loaded"))
                cam.stats.on_dropped()
                continue
            item = newest_when_needed(item, cam.slot, self.ready_slot, self._network, self._prepare_s or 0.0,
                                      cam.stats.on_dropped)
            if item is None:
                return
            t0 = time.monotonic()
            batch = []
            for c, it in [(cam, item)] + self._take_in_turn(self.batch_limit - 1):
                try:
                    prepared = self._prepare(c, *it)
                except Exception as exc:  # never let the worker die; report and go on
                    self._frame_error(c, "frame", f"processing failed: {exc!r}")
                    continue
                if prepared is not None:
                    batch.append(prepared)
            self._prepare_s = smooth(self._prepare_s, time.monotonic() - t0, 0.2)
            if batch:
                for _, prepared, _ in batch:
                    prepared.timer.queued()
                self.ready_slot.put(batch)  # a batch it replaces is counted by _drop_batch

    def _next_frame(self, timeout: float):
        """(camera, its newest frame) of the camera whose turn it is, or (None, None) after
        ``timeout``. Turns: the camera served longest ago first (core/surround.fair_order), so
        under overload every camera gets an equal share of the network."""
        end = time.monotonic() + timeout
        while not self.slot.closed:
            self._frame_arrived.clear()
            taken = self._take_in_turn(1)
            if taken:
                return taken[0]
            left = end - time.monotonic()
            if left <= 0:
                break
            self._frame_arrived.wait(min(left, 0.05))
        return None, None

    def _drop_batch(self, batch) -> None:
        """A prepared batch the network never took: its buffers back, each frame a drop."""
        for cam, prepared, _ in batch:
            prepared.release()
            cam.stats.on_dropped()

    def _take_in_turn(self, n: int) -> list:
        """Up to ``n`` cameras' waiting frames [(camera, frame)], the camera served longest ago
        first (core/surround.fair_order)."""
        if n <= 0:
            return []
        waiting = {c.name: c.waiting_since for c in self.cameras.values() if c.slot.occupied}
        served = {c.name: c.last_served for c in self.cameras.values() if c.last_served is not None}
        taken = []
        for name in fair_order(waiting, served):
            cam = self.cameras[name]
            ok, item = cam.slot.get(timeout=0)
            if ok:
                cam.last_served = time.monotonic()
                taken.append((cam, item))
                if len(taken) == n:
                    break
        return taken

    def _wanted(self, cam: Camera) -> List[str]:
        wanted = [name for name, pub in cam.pubs.items() if pub.get_subscription_count() > 0]
        if self.surround is not None and GRID_OUTPUT not in wanted and \
                self.surround_pub.get_subscription_count() > 0:
            wanted.append(GRID_OUTPUT)  # the surround grid needs this camera's
        if self.map is not None and GRID_OUTPUT not in wanted and self.map.pub.get_subscription_count() > 0:
            wanted.append(GRID_OUTPUT)  # the map is made of it
        return wanted

    def _prepare(self, cam: Camera, msg, t_received: float):
        """(camera, prepared frame, receive time), or None: nobody listens, or a bad image."""
        cam.idle = not self._wanted(cam)
        self._idle = all(c.idle for c in self.cameras.values())
        if cam.idle:  # nobody listens: no work at all, and no old problem reported as current
            cam.stats.clear("frame")
            cam.stats.clear("grid")
            return None
        try:
            timer = StageTimer()
            timer.add(WAITS[0], time.monotonic() - t_received)  # its age in the camera's slot
            # a buffer of its own: the next frame is prepared while the network runs this one
            prepared = cam.pipeline.prepare(frame_from_msg(msg, timer), timer, pooled=True)
        except ImageError as exc:
            self._frame_error(cam, "frame", f"bad image on {cam.image_topic}: {exc}")
            return None
        return cam, prepared, t_received

    def _infer(self, batch) -> None:
        """The network once on the batch (one frame per camera: core/pipeline.run_batch)."""
        for _, prepared, _ in batch:
            prepared.timer.taken(WAITS[1])
        try:
            results = run_batch([(cam.pipeline, prepared) for cam, prepared, _ in batch])
        except Exception as exc:
            for cam, _, _ in batch:
                self._frame_error(cam, "inference", f"inference failed: {exc}")
            return
        with self._count_lock:
            self.network_runs += 1
            self.network_frames += len(batch)
        # hand over to the output thread; the network goes on with the next batch meanwhile.
        # A camera's result older than one another run already handed over is dropped: outputs
        # never go back in time
        for (cam, _, t_received), result in zip(batch, results):
            result.timer.queued()
            if self.out_slot.put(cam.name, (cam, result, t_received), order=t_received):
                cam.stats.on_dropped()

    def _publish_outputs(self) -> None:
        """Output thread: build the outputs of the newest inferred frame and publish them."""
        while not self._model_done.wait(0.2):  # its niceness depends on the loaded backend
            if self.out_slot.closed:
                return
        if self.output_niceness > 0 and sys.platform.startswith("linux"):
            try:  # this thread only (Linux thread id); raising niceness needs no privilege. Set
                # from the process's own (its main thread's), not this thread's: a restarted
                # output thread is the same thread, already niced
                base = os.getpriority(os.PRIO_PROCESS, os.getpid())
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, base + self.output_niceness))
            except OSError as exc:
                self.get_logger().warn(f"output_niceness not applied: {exc}")
        while not self.out_slot.closed:
            ok, items = self.out_slot.get(timeout=0.2)
            for item in items:  # each camera's newest result, in the order they came
                self._check_fault("outputs")
                try:
                    self._finish(*item)
                except Exception as exc:  # never let the worker die; report and go on
                    self._frame_error(item[0], "outputs", f"building outputs failed: {exc!r}")

    def _finish(self, cam: Camera, result, t_received: float) -> None:
        result.timer.taken(WAITS[2])
        wanted = self._wanted(cam)
        cam.messages.build(result, wanted, publish=lambda name, msg: cam.pubs[name].publish(msg)
                           if cam.pubs[name].get_subscription_count() > 0 else None)
        cam.stats.clear("frame")
        self.stats.clear("worker")  # a frame went all the way through: restarted workers work
        if GRID_OUTPUT in wanted and cam.pipeline.grid is not None:
            grid = result.grid()  # computed above: its status
            if grid.state == OK:
                cam.stats.clear("grid")
            else:
                cam.stats.report("grid", diag.WARN if grid.state == WARN else diag.ERROR, grid.status)
                self._log(f"grid:{cam.name}", grid.state, cam.label(grid.status))
            if self.surround is not None and grid.cells is not None:
                self._publish_surround(cam, result, grid.cells)
            if self.map is not None and grid.cells is not None:
                self.map.on_grid(grid.cells, cam.pipeline.grid.spec, result.frame.header, result.grid_confidence())
        cam.stats.on_processed(time.monotonic() - t_received, result.timer.times)
        if cam.stats is not self.stats:  # the network's figures over all cameras
            self.stats.on_processed(time.monotonic() - t_received, result.timer.times)

    def _publish_surround(self, cam: Camera, result, cells) -> None:
        """Every camera's latest grid fused into ~/drivable_grid, stamped with the newest."""
        header = result.frame.header
        stamp = stamp_seconds(header)
        self.surround.update(cam.name, cells, stamp)
        if self.surround_pub.get_subscription_count() == 0:
            return
        out = self.surround.to_publish(stamp)
        if out is None:
            return  # a newer camera's grid is in it: that one published (stamps never go back)
        fused = out[0]
        spec = cam.pipeline.grid.spec
        self.surround_pub.publish(occupancy_grid_msg(fused, spec.resolution, (spec.x_min, spec.y_min),
                                                     copy_header(header, cam.pipeline.grid.frame_id)))

