"""The Segmenter: a loaded backend plus the frame fitting its model asks for."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from .backends.base import Backend, SegmenterError
from .fit import Fit
from .model_info import ModelInfo


class Segmenter:
    """A loaded backend plus the frame fitting its model asks for."""

    def __init__(self, backend: Backend) -> None:
        if backend.info is None:
            raise SegmenterError(f"{backend.model_path}: backend {backend.name} is not loaded")
        self.backend = backend
        self.info: ModelInfo = backend.info
        self._fits: Dict[Tuple[int, int], Fit] = {}

    @classmethod
    def from_file(cls, model_path: str, backend: str = "auto", **options: Any) -> "Segmenter":
        from .backends.registry import create_backend

        return cls(create_backend(model_path, backend, **options))

    def fit_for(self, height: int, width: int) -> Fit:
        key = (height, width)
        fit = self._fits.get(key)
        if fit is None:
            if len(self._fits) > 8:  # a camera that keeps changing size must not grow this
                self._fits.clear()
            fit = self._fits[key] = Fit(height, width, self.info)
        return fit

    def infer_model_input(self, model_input: np.ndarray) -> np.ndarray:
        """One HxWx3 uint8 image already at the model size -> HxW uint8 class map."""
        return self.backend.infer(model_input[None])[0]

    @property
    def has_confidence(self) -> bool:
        return self.backend.has_confidence

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB frame of any size -> HxW uint8 class map at the frame's size."""
        fit = self.fit_for(rgb.shape[0], rgb.shape[1])
        return fit.labels_to_source(self.infer_model_input(fit.to_model(rgb)))

    def release(self) -> None:
        self.backend.release()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()
