"""ONNX Runtime backend: CUDA execution provider when present, else CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from ..model_info import METADATA_KEY, ModelInfo
from ..segmenter import Backend, SegmenterError


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path: str, num_threads: int = 0, providers: Any = None,
                 **options: Any) -> None:
        super().__init__(model_path, **options)
        self.num_threads = int(num_threads)
        self.providers = providers
        self.session = None

    def load(self) -> None:
        so = ort.SessionOptions()
        if self.num_threads > 0:
            so.intra_op_num_threads = self.num_threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = self.providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                       if p in available]
        try:
            self.session = ort.InferenceSession(self.model_path, sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise SegmenterError(f"ONNX Runtime cannot load {self.model_path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise SegmenterError(f"{self.model_path} carries no '{METADATA_KEY}' metadata")
        self.info = ModelInfo.from_json(meta)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def infer(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise SegmenterError(f"expected uint8 [N,H,W,3], got {images.dtype} {images.shape}")
        out = self.session.run([self._output], {self._input: images})[0]
        return out if out.dtype == np.uint8 else out.astype(np.uint8)

    def release(self) -> None:
        self.session = None

    def describe(self) -> str:
        threads = self.num_threads or "default"
        return f"onnxruntime {ort.__version__} on {self.device} (threads: {threads})"
