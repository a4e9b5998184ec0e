"""The camera_seg node with faults a test switches from outside the process (tests only; the
product has no fault hooks). The file named by SEG_TEST_FAULT_FILE says what fails:

  fail                 every inference of the 'faulty' backend (ONNX Runtime) raises, as a
                       backend error would (start the node with backend:=faulty)
  crash <thread>       that worker thread of the frame runtime fails outside its per-frame
  crash-once <thread>  handling (a bug, as the runtime sees it), every time or once (the file is
                       then emptied); thread: prepare, inference, outputs

    python test/fault_node.py --ros-args -p backend:=faulty ...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_perception.core.backends.base import SegmenterError  # noqa: E402
from seg_perception.core.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from seg_perception.core.backends.registry import register_backend  # noqa: E402
from seg_perception.core.runtime.runtime import FrameRuntime  # noqa: E402

FAULT_FILE = os.environ.get("SEG_TEST_FAULT_FILE", "")


class InjectedFault(RuntimeError):
    """A worker failure injected by a test."""


def _command():
    try:
        with open(FAULT_FILE, "r", encoding="utf-8") as f:
            return f.read().split()
    except (FileNotFoundError, OSError):
        return []


class FaultyBackend(OnnxRuntimeBackend):
    name = "faulty"

    def _infer(self, images):
        if _command() == ["fail"]:
            raise SegmenterError(f"injected inference failure ({FAULT_FILE})")
        return super()._infer(images)


def _crashing(method, thread: str):
    def wrapped(self, *args, **kwargs):
        words = _command()
        if len(words) == 2 and words[0] in ("crash", "crash-once") and words[1] == thread:
            if words[0] == "crash-once":
                open(FAULT_FILE, "w").close()
            raise InjectedFault(f"injected crash of the {thread} thread ({FAULT_FILE})")
        return method(self, *args, **kwargs)
    return wrapped


register_backend("faulty", __name__, "FaultyBackend", (".onnx",))
# each thread's step outside its per-frame error handling
FrameRuntime._prepare_batch = _crashing(FrameRuntime._prepare_batch, "prepare")
FrameRuntime._infer = _crashing(FrameRuntime._infer, "inference")
FrameRuntime._deliver = _crashing(FrameRuntime._deliver, "outputs")

if __name__ == "__main__":
    from seg_perception.ros.node import main

    main()
