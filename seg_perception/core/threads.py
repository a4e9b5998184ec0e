"""How the CPU cores are shared between the network and the node's own image work. With
several cameras on a CPU network the node runs the network on several frames at once (inference
workers, each a thread calling the one loaded model on one frame): on few cores side-by-side runs
of one thread each kept the cores busier than one run of several threads. The measurements
behind each rule here: docs/measurements.md."""

from __future__ import annotations

import os
from typing import Optional, Tuple


def _cores(cores: Optional[int]) -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    if cores:
        return int(cores)
    try:
        return len(os.sched_getaffinity(0)) or 2
    except AttributeError:  # not Linux
        return os.cpu_count() or 2


def inference_workers(workers: int, cameras: int, cores: Optional[int] = None) -> int:
    """Network runs at once the parameters ask for, with several cameras (one camera: one run):
    ``inference_workers``, or for 0 one per camera up to every core but one, which stays for
    the node's own work, and two on 2 cores (one run left the second core half idle)."""
    if cameras <= 1:
        return 1
    if workers > 0:
        return int(workers)
    return max(1, min(int(cameras), max(2, _cores(cores) - 1)))


def runs_at_once(asked: int, explicit: bool, concurrent: bool, device: str) -> Tuple[int, str]:
    """(network runs at once, a warning or "") for a loaded backend: as asked where the backend
    runs several (``concurrent``: ONNX Runtime without IOBinding) and, unless asked for by
    number, only on the CPU, where they use cores a single run leaves idle. A GPU takes the
    cameras as one batch instead."""
    if asked <= 1:
        return 1, ""
    if concurrent and (explicit or device == "cpu"):
        return asked, ""
    if explicit:
        return 1, (f"inference_workers {asked}: this backend on {device} runs one batch at a "
                   "time; running one")
    return 1, ""


def inference_threads(num_threads: int, workers: int = 1, cores: Optional[int] = None) -> int:
    """The CPU threads of the network's session: the parameter, or for 0 every core but one,
    which stays for the node's own work (decoding, outputs, DDS) so the two run side by side.
    With several workers each run's calling thread computes too (ONNX Runtime's pool adds
    threads - 1), so the session gets that many fewer (at least one)."""
    if num_threads > 0:
        return int(num_threads)
    return max(1, _cores(cores) - max(1, int(workers)))


def opencv_threads(backend_device: str, num_threads: int, workers: int = 1,
                   cores: Optional[int] = None) -> int:
    """OpenCV threads for the node's own image work (resize, masks, overlay): the cores the
    network leaves free (OpenCV's default pool took the network's core)."""
    n = _cores(cores)
    return max(1, n - _network_cores(backend_device, num_threads, workers, n))


def output_niceness(asked: int, backend_device: str, num_threads: int, workers: int = 1,
                    cores: Optional[int] = None) -> int:
    """The niceness the output thread gets: ``output_niceness`` where the network leaves a core
    to the node's own work (then the outputs fill the network's gaps without taking its core),
    0 where the network's threads take every core (on a CPU: several runs at once, or a
    ``num_threads`` of every core): there is no gap to fill, and a niced output thread only made
    every frame wait for its outputs."""
    n = _cores(cores)
    return int(asked) if _network_cores(backend_device, num_threads, workers, n) < n else 0


def _network_cores(backend_device: str, num_threads: int, workers: int, cores: int) -> int:
    """CPU cores the network keeps busy: on the CPU the session's threads plus each further
    run's own calling thread; a GPU network none."""
    if backend_device != "cpu":
        return 0
    return inference_threads(num_threads, workers, cores) + max(1, int(workers)) - 1
