"""TensorRT backend (TensorRT 10.x and 11.x Python API, cuda-python), in Polygraphy's parts:
``loader`` (finding TensorRT, cuda-python and the GPU), ``builder`` (ONNX -> engine, cached) and
``runtime`` (TensorRTBackend). Importing this package imports neither library.

NOT RUN in this project's development environment: no TensorRT could be installed there and no
GPU was available. Everything here that touches ``tensorrt`` or a CUDA device was written against
the documented API and has never executed; it is type-checked (test_typecheck) against
tensorrt-stubs and, through loader.CudaRuntime, against cuda-python's runtime module (stubs made
from its embedded signatures), and the pure helpers (I/O contract check, parser error formatting,
progress reporting, cuda error unwrapping) and the engine cache are tested.
"""

from .builder import (DEFAULT_WORKSPACE_MB, PRECISIONS, BuildProgress, EngineBuildError,  # noqa: F401
                      build_serialized_engine, ensure_engine, format_parser_errors, onnx_for_precision,
                      onnx_precision)
from .loader import CudaError, cuda_call, cuda_runtime, gpu_identity, tensorrt_installed, tensorrt_usable, trt_major  # noqa: F401
from .runtime import TensorRTBackend, check_io  # noqa: F401
