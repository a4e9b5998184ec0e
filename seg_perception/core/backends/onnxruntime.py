"""ONNX Runtime backend: CUDA execution provider when present, else CPU.

Threads: ``num_threads`` sets intra-op threads (0 = ONNX Runtime's default, one per core);
``inter_op_threads`` the inter-op pool (1: the graph is one chain, sequential execution).

IOBinding (default on with CUDA, optional on CPU): the input is bound from host memory (ONNX
Runtime copies it to the device once) and the output to a preallocated host OrtValue per batch
size, so only the uint8 class map comes back and no output array is allocated per frame.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import onnxruntime as ort

from ..model_info import METADATA_KEY, ModelInfo, contract_problems, wrap_hint
from .base import BATCH_ANY, Backend, SegmenterError


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path: str, num_threads: int = 0, providers: Any = None,
                 inter_op_threads: int = 1, io_binding: Optional[bool] = None,
                 device_id: int = 0, **options: Any) -> None:
        super().__init__(model_path, **options)
        self.num_threads = int(num_threads)
        self.inter_op_threads = int(inter_op_threads)
        self.providers = providers
        self.io_binding = io_binding   # None: on with CUDA, off on CPU
        self.device_id = int(device_id)
        self.session = None
        self._binding = None
        self._outputs: Dict[int, Any] = {}

    @classmethod
    def options_for(cls, model, runs: int = 1, progress=None):
        """Its CPU threads: ``num_threads``, or every core but one shared among ``runs``."""
        from ..threads import inference_threads

        return {"num_threads": inference_threads(model.num_threads, runs)}

    def load(self) -> None:
        so = ort.SessionOptions()
        if self.num_threads > 0:
            so.intra_op_num_threads = self.num_threads
        if self.inter_op_threads > 0:
            so.inter_op_num_threads = self.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        if self.providers:
            providers = list(self.providers)
            missing = [p if isinstance(p, str) else p[0] for p in providers
                       if (p if isinstance(p, str) else p[0]) not in available]
            if missing:
                raise SegmenterError(f"ONNX Runtime here lacks {missing}; available: {available}")
        else:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
            if "CUDAExecutionProvider" in providers:
                providers[0] = ("CUDAExecutionProvider", {"device_id": self.device_id})
        try:
            self.session = ort.InferenceSession(self.model_path, sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise SegmenterError(f"ONNX Runtime cannot load {self.model_path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise SegmenterError(f"{self.model_path} carries no '{METADATA_KEY}' metadata: it was not "
                                 f"exported or wrapped by seg_perception. A segmentation ONNX from "
                                 f"elsewhere: {wrap_hint(self.model_path)}")
        info = ModelInfo.from_json(meta)
        problems = contract_problems(info, [_io(i) for i in self.session.get_inputs()],
                                     [_io(o) for o in self.session.get_outputs()])
        if problems:
            raise SegmenterError(f"{self.model_path} does not meet the graph contract its metadata "
                                 f"declares: {'; '.join(problems)}. Wrap the original model: "
                                 f"{wrap_hint(self.model_path)}")
        self.info = info
        on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device = f"cuda:{self.device_id}" if on_cuda else "cpu"
        self._input = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else BATCH_ANY  # a name: dynamic
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = outputs[0]
        # A model exported before confidence existed has one output and keeps working.
        self._confidence = (self.info.confidence_name
                            if self.info.confidence_name and self.info.confidence_name in outputs
                            else None)
        self.has_confidence = self._confidence is not None
        self._names = [self._output] + ([self._confidence] if self._confidence else [])
        use_binding = on_cuda if self.io_binding is None else bool(self.io_binding)
        self._binding = self.session.io_binding() if use_binding else None
        # Session.run is thread-safe; one IOBinding (and its output buffers) is not
        self.concurrent_runs = self._binding is None
        self._outputs.clear()

    def _infer(self, images: np.ndarray):
        if self._binding is not None:
            outs = self._infer_bound(np.ascontiguousarray(images))
        else:
            outs = self.session.run(self._names, {self._input: images})
        outs = [o if o.dtype == np.uint8 else o.astype(np.uint8) for o in outs]
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def _infer_bound(self, images: np.ndarray):
        n = images.shape[0]
        outs = self._outputs.get(n)
        if outs is None:
            if len(self._outputs) > 8:  # batch sizes that keep changing must not grow this
                self._outputs.clear()
            outs = self._outputs[n] = [ort.OrtValue.ortvalue_from_shape_and_type(
                [n, images.shape[1], images.shape[2]], np.uint8, "cpu", 0) for _ in self._names]
        binding = self._binding
        binding.bind_cpu_input(self._input, images)
        for name, out in zip(self._names, outs):
            binding.bind_ortvalue_output(name, out)
        self.session.run_with_iobinding(binding)
        # The OrtValues are reused by the next call of this batch size: hand out copies.
        return [np.array(out.numpy(), copy=True) for out in outs]

    def _release(self) -> None:
        if self._binding is not None:
            self._binding.clear_binding_inputs()
            self._binding.clear_binding_outputs()
        self._binding = None
        self._outputs.clear()
        self.session = None

    def describe(self) -> str:
        threads = self.num_threads or "default"
        binding = ", IOBinding" if self._binding is not None else ""
        return f"onnxruntime {ort.__version__} on {self.device} (threads: {threads}{binding})"


def _io(arg) -> tuple:
    """(name, element type, shape) of an ONNX Runtime NodeArg: 'tensor(uint8)' -> 'uint8'."""
    dtype = arg.type[len("tensor("):-1] if arg.type.startswith("tensor(") else arg.type
    return arg.name, {"float": "float32", "double": "float64"}.get(dtype, dtype), list(arg.shape)
