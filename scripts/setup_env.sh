#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs a pinned requirement set into it.
#   scripts/setup_env.sh runtime   # ROS 2 Jazzy wheels, numpy, OpenCV, ONNX Runtime (the node)
#   scripts/setup_env.sh tools     # + rosbags (bag tools, the demo's sample drive)
#   scripts/setup_env.sh fleet     # + Ray (process-bags, compare-bags on many machines)
#   scripts/setup_env.sh dev       # + torch/torchvision, onnx, onnxscript, pytest, colcon
set -euo pipefail
cd "$(dirname "$0")/.."
set_name=${1:-runtime}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
"$VENV/bin/python" -m pip install -q -r "requirements/$set_name.txt"
if [ -f "requirements/$set_name-nodeps.txt" ]; then
  "$VENV/bin/python" -m pip install -q --no-deps -r "requirements/$set_name-nodeps.txt"
fi
# the package itself, editable, with its console scripts (camera_seg_node, seg-perception)
"$VENV/bin/python" -m pip install -q --no-deps -e .
