"""PyTorch backend: a torchvision architecture rebuilt from a checkpoint, wrapped with the same
normalisation and argmax as the exported ONNX graph. Only imported when chosen, so the vehicle
needs no torch for TensorRT or ONNX Runtime.

Runs under ``torch.inference_mode`` with weights in channels_last memory format (the NHWC uint8
input permuted to NCHW is already channels_last in memory, so no layout conversion happens per
frame; on CPU it was faster here too). CUDA when present (``device: auto``), with cuDNN's
autotuner on since the input size never changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ..model_info import ModelInfo
from .base import BATCH_ANY, Backend, SegmenterError


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model_path: str, num_threads: int = 0, device: str = "auto",
                 channels_last: bool = True, **options: Any) -> None:
        super().__init__(model_path, **options)
        self.num_threads = int(num_threads)
        self.requested_device = device
        self.channels_last = bool(channels_last)
        self.module = None

    @classmethod
    def options_for(cls, model, runs: int = 1, progress=None):
        """Its CPU threads: ``num_threads``, or every core but one shared among ``runs``."""
        from ..threads import inference_threads

        return {"num_threads": inference_threads(model.num_threads, runs)}

    def load(self) -> None:
        from ..torch_models import build_wrapped_model  # torch-only module

        try:
            ckpt = torch.load(self.model_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SegmenterError(f"PyTorch cannot load {self.model_path}: {exc}") from exc
        if not isinstance(ckpt, dict) or "metadata" not in ckpt or "state_dict" not in ckpt:
            raise SegmenterError(f"{self.model_path} is not a seg_perception checkpoint "
                                 "(needs 'metadata' and 'state_dict')")
        from ..export import CONFIDENCE_OUTPUT

        # The graph is rebuilt here with both outputs, as an export of these weights would be.
        self.info = dataclasses.replace(ModelInfo.from_dict(ckpt["metadata"]),
                                        confidence_name=CONFIDENCE_OUTPUT)
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        dev = self.requested_device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        elif dev.startswith("cuda") and not torch.cuda.is_available():
            raise SegmenterError(f"device {dev!r} requested but torch sees no CUDA device")
        self.device = dev
        wrapped = build_wrapped_model(self.info)
        try:
            wrapped.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:  # wrong architecture or class count for these weights
            raise SegmenterError(f"{self.model_path}: weights do not fit {self.info.architecture} "
                                 f"with {self.info.num_classes} classes: {exc}") from exc
        wrapped.eval().to(dev)
        if self.channels_last:
            wrapped = wrapped.to(memory_format=torch.channels_last)
        if dev.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed input size: tune once
        self.module = wrapped
        self.has_confidence = True  # the graph is rebuilt here, with both outputs
        self.max_batch = BATCH_ANY

    def _infer(self, images: np.ndarray):
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images))
            if self.device != "cpu":
                x = x.pin_memory().to(self.device, non_blocking=True)
            # only the uint8 class and confidence maps leave the device
            ids, conf = self.module.with_confidence(x)
            return ids.cpu().numpy(), conf.cpu().numpy()

    def _release(self) -> None:
        self.module = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def describe(self) -> str:
        layout = ", channels_last" if self.channels_last else ""
        return f"torch {torch.__version__} on {self.device}{layout}"
