"""How the CPU cores are shared between the network and the node's own image work."""

from __future__ import annotations

import os


def inference_threads(num_threads: int) -> int:
    """The CPU threads the network gets: the parameter, or for 0 every core but one, which stays
    for the node's own work (decoding, outputs, DDS) so the two run side by side."""
    if num_threads > 0:
        return int(num_threads)
    return max(1, (os.cpu_count() or 2) - 1)


def opencv_threads(backend_device: str, num_threads: int) -> int:
    """OpenCV threads for the node's own image work (resize, masks, overlay): the cores the
    network leaves free. Measured on 2 cores: with OpenCV's default pool its worker took the
    network's core often enough to cost a tenth of the node's rate."""
    cores = os.cpu_count() or 2
    used = inference_threads(num_threads) if backend_device == "cpu" else 0
    return max(1, cores - used)
