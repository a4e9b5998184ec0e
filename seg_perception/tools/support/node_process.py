"""camera_seg_node as a process of its own, as users start it: its console script, a params
file, -p overrides and remaps, its log in a file, stopped with SIGINT (the node's clean
shutdown). The demo, the node benchmarks and the DDS tests all start the node this way."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import List, Mapping, Optional, Sequence, Union

ParamValue = Union[str, bool, int, float, Sequence[float]]


MODULES = {"camera_seg_node": "seg_perception.ros.node",
           "camera_seg_lifecycle_node": "seg_perception.ros.lifecycle_node"}


def node_command(executable: str = "camera_seg_node") -> List[str]:
    """The installed console script beside this Python (or on PATH), else the module; a path to
    a .py file: that script with this Python."""
    if executable.endswith(".py"):
        return [sys.executable, executable]
    exe = os.path.join(os.path.dirname(sys.executable), executable)
    if not os.path.exists(exe):
        exe = shutil.which(executable) or ""
    return [exe] if exe else [sys.executable, "-m", MODULES[executable]]


def shipped_params_file(path: Optional[str] = None) -> str:
    """``path``, else config/camera_seg.yaml of this checkout, else of the installed package."""
    if path:
        return path
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    candidates = [os.path.join(here, "config", "camera_seg.yaml")]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(os.path.join(get_package_share_directory("seg_perception"), "config",
                                       "camera_seg.yaml"))
    except Exception:  # not installed through colcon
        pass
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise SystemExit("cannot find config/camera_seg.yaml; pass --params-file")


def param_text(value: ParamValue) -> str:
    """A value as ``--ros-args -p name:=VALUE`` reads it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return str(value)


class NodeProcess:
    """``params``: name -> value, or already formatted 'name:=value' strings; ``env``: added to
    this process's environment."""

    def __init__(self, params_file: Optional[str] = None,
                 params: Union[Mapping[str, ParamValue], Sequence[str], None] = None,
                 remaps: Optional[Mapping[str, str]] = None, env: Optional[Mapping[str, str]] = None,
                 log_path: str = "", executable: str = "camera_seg_node") -> None:
        self.cmd = node_command(executable) + ["--ros-args", "--params-file", shipped_params_file(params_file)]
        items = ([f"{k}:={param_text(v)}" for k, v in params.items()] if isinstance(params, Mapping)
                 else list(params or []))
        for item in items:
            self.cmd += ["-p", item]
        for k, v in (remaps or {}).items():
            self.cmd += ["-r", f"{k}:={v}"]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log_path = log_path or f"/tmp/camera_seg_node_{os.getpid()}_{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def thread_niceness(self) -> List[int]:
        """The niceness of each of the node's threads (Linux, /proc/<pid>/task/*/stat)."""
        values = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread ended meanwhile
            values.append(int(fields[16]))  # field 19 of stat; the split starts at field 3
        return values

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> Optional[int]:
        """Signal, wait, kill after ``timeout``: the exit code, or None when it had to be killed."""
        code: Optional[int] = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._log.close()
                return None
        code = self.proc.returncode
        self._log.close()
        return code
