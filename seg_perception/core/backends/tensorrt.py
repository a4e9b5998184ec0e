"""TensorRT backend (filled in by issue #3). TensorRT is imported lazily: nothing here runs
unless TensorRT and a CUDA GPU are present."""

from __future__ import annotations

import importlib.util
from typing import Any, Tuple

import numpy as np

from ..segmenter import Backend, BackendUnavailable


def tensorrt_usable() -> Tuple[bool, str]:
    """(usable, reason) without importing tensorrt when it is not installed."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt is not installed"
    if importlib.util.find_spec("cuda") is None:
        return False, "cuda-python is not installed"
    return True, "tensorrt and cuda-python present"


class TensorRTBackend(Backend):
    name = "tensorrt"

    def load(self) -> None:
        usable, why = tensorrt_usable()
        if not usable:
            raise BackendUnavailable(f"TensorRT backend unavailable: {why}")
        raise BackendUnavailable("TensorRT runtime backend is not implemented yet (issue #3)")

    def infer(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - see load()
        raise BackendUnavailable("TensorRT backend not loaded")
