"""How the loaded network is run: how many runs at once, how many frames a run, the output
thread's niceness and OpenCV's threads, decided once the backend is loaded (what it allows and
where it runs), with the notes the node logs at start."""

from __future__ import annotations

import dataclasses
from typing import List

from ..config import NodeConfig
from ..threads import inference_workers, opencv_threads, output_niceness, runs_at_once


@dataclasses.dataclass(frozen=True)
class RunPlan:
    workers: int = 1              # network runs at once (inference threads)
    batch_limit: int = 1          # frames per run
    output_niceness: int = 0      # of the output thread
    opencv_threads: int = 1       # for the node's own image work
    notes: List[str] = dataclasses.field(default_factory=list)   # start-up log lines
    warnings: List[str] = dataclasses.field(default_factory=list)


def plan_runs(cfg: NodeConfig, segmenter, workers_asked: int) -> RunPlan:
    """The plan for ``segmenter`` (loaded) under the configuration."""
    backend = segmenter.backend
    workers, warning = runs_at_once(workers_asked, cfg.runtime.inference_workers > 0,
                                    backend.concurrent_runs, backend.device)
    limit = batch_limit(cfg, segmenter, workers)
    niceness = output_niceness(cfg.runtime.output_niceness, backend.device, cfg.model.num_threads, workers)
    notes: List[str] = []
    if niceness != cfg.runtime.output_niceness:
        notes.append(f"output thread at niceness 0, not output_niceness {cfg.runtime.output_niceness}: the "
                     f"network's threads ({workers} run{'s' if workers > 1 else ''} at once) take every "
                     "core, there are no gaps for the outputs to fill")
    if cfg.multi:
        notes.append(f"{len(cfg.cameras)} cameras on one network, up to {limit} frame{'s' if limit > 1 else ''} "
                     f"per run, {workers} run{'s' if workers > 1 else ''} at once"
                     + batch_note(cfg, segmenter, workers))
    return RunPlan(workers=workers, batch_limit=limit, output_niceness=niceness,
                   opencv_threads=opencv_threads(backend.device, cfg.model.num_threads, workers),
                   notes=notes, warnings=[warning] if warning else [])


def runs_asked(cfg: NodeConfig) -> int:
    """Network runs at once the parameters ask for (core/threads.inference_workers); fewer run
    where the backend cannot (core/threads.runs_at_once)."""
    return inference_workers(cfg.runtime.inference_workers, len(cfg.values["cameras"]))


def one_frame_runs(cfg: NodeConfig, device: str, workers: int) -> bool:
    """max_batch 0 with several runs at once on the CPU: one frame a run. There a batch costs
    what its frames cost one by one, so two runs of two frames only made each frame wait for its
    neighbour's compute (docs/speed.md, several cameras). A single run (a GPU, or a backend that
    runs one at a time) still takes every camera's frame."""
    return not cfg.runtime.max_batch and device == "cpu" and int(workers) > 1


def frames_per_run_asked(cfg: NodeConfig, device: str, workers: int = 1) -> int:
    """Frames a run the parameters ask for: the cameras' frames (at most max_batch) shared among
    ``workers`` runs at once (4 cameras, 2 runs: 2 each); one where one_frame_runs says so."""
    if one_frame_runs(cfg, device, workers):
        return 1
    return -(-cfg.model.max_batch // max(1, int(workers)))  # rounded up: no camera left out


def batch_limit(cfg: NodeConfig, segmenter, workers: int = 1) -> int:
    """How many cameras' frames go through the network in one run: what the parameters ask for,
    never more than the model takes."""
    return max(1, min(frames_per_run_asked(cfg, segmenter.backend.device, workers), segmenter.backend.max_batch))


def batch_note(cfg: NodeConfig, segmenter, workers: int) -> str:
    """Why a run takes fewer frames than there are cameras, for the start-up log ("" otherwise)."""
    backend = segmenter.backend
    limit = batch_limit(cfg, segmenter, workers)
    if frames_per_run_asked(cfg, backend.device, workers) > limit:
        why = (segmenter.info.source or {}).get("wrap", {}).get("batch", "")
        return (f" (the model takes at most {backend.max_batch} frame{'s' if backend.max_batch > 1 else ''} "
                "a run: " + (f"its wrap says: batch {why})" if why.startswith("fixed") else
                             "export or wrap it with a dynamic batch dimension)"))
    if one_frame_runs(cfg, backend.device, workers):
        return (" (max_batch 0 on the CPU with several runs at once: one frame a run, as a batch there "
                "costs what its frames cost one by one; max_batch N shares N frames among the runs)")
    return ""
