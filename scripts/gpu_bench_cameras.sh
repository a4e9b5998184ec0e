#!/bin/bash
# Issue #16's GPU benchmark on a lent machine, in one device call: four 1280x720 cameras through
# one node (one torch CUDA model, the four frames as one batch) against four single-camera nodes
# (four models, batch 1 each), plus the network alone at batch 1 and 4.
#
# The device has torch, OpenCV and ONNX Runtime for its Python 3.12 but no ROS, and reaches no
# registry; the ROS wheels (43 MiB zipped) and the repository (29 MiB) do not fit one call's
# 64 MiB together, so `pack` stores them uncompressed in one xz tar (about 24 MiB).
#
# Here (CPU):  bash scripts/gpu_bench_cameras.sh pack          # -> .gpu/ros_wheels.tar.xz
# There:       the device tool runs, carrying .gpu (timeout_s 540):
#                  bash scripts/gpu_bench_cameras.sh run "$OUT"
# Back here:   gpu_bench.log (everything printed), network.json (bench_backends), cameras_torch.json
#              and, on the CPU of the same machine, cameras_onnxruntime.json (bench cameras --json),
#              node_logs.tar.gz (the nodes' own logs: backend, device, frames per run).
#
# Environment: PACK_PYTHON (python3.12: the device's Python), PYTHON (python3), DEVICE (cuda; cpu
# runs the same steps on a machine without a GPU, as the CPU test does), CAMERAS (4), REPEAT
# (2 pairs with torch), PHASE_SECONDS (10), WARMUP (5), SATURATE_HZ (120), CPU_BENCH (1: also one
# pair with ONNX Runtime on that machine's CPU cores). Extra arguments after OUT_DIR go to every
# `bench cameras`. About 6 minutes on a 16-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu/ros_wheels.tar.xz
cmd=${1:?usage: gpu_bench_cameras.sh pack | run OUT_DIR [bench cameras arguments...]}
shift

if [ "$cmd" = pack ]; then
    PY=${PACK_PYTHON:-python3.12}
    "$PY" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null || {
        echo "pack needs the device's Python, 3.12: set PACK_PYTHON (pyenv: ~/.pyenv/versions/3.12.*/bin/python)" >&2; exit 3; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m venv "$tmp/venv"
    grep '^ros-' requirements/runtime.txt | sed 's/ *#.*//' >"$tmp/ros.txt"
    # pip wheel also builds the few sdist-only helpers (empy) into wheels: the device has no pip index
    "$tmp/venv/bin/python" -m pip wheel -q -r "$tmp/ros.txt" -w "$tmp/wheels"
    # the device has its own numpy, PyYAML and setuptools: one version of each
    rm -f "$tmp"/wheels/numpy-* "$tmp"/wheels/pyyaml-* "$tmp"/wheels/PyYAML-* "$tmp"/wheels/setuptools-*
    # stored, not deflated, so xz compresses the native libraries across files
    "$tmp/venv/bin/python" - "$tmp/wheels" <<'PYEOF'
import os, sys, zipfile
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    src, dst = os.path.join(d, name), os.path.join(d, name + ".stored")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename), compress_type=zipfile.ZIP_STORED)
    os.replace(dst, src)
PYEOF
    mkdir -p .gpu
    tar -cJf "$WHEELS" -C "$tmp/wheels" .
    echo "$WHEELS: $(ls "$tmp/wheels" | wc -l) wheels for $("$PY" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])'), $(du -h "$WHEELS" | cut -f1)"
    exit 0
fi

[ "$cmd" = run ] || { echo "gpu_bench_cameras.sh: unknown command $cmd (pack | run)" >&2; exit 2; }
OUT=${1:?usage: gpu_bench_cameras.sh run OUT_DIR [bench cameras arguments...]}
shift
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_bench.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-61}
export ROS_LOG_DIR=${ROS_LOG_DIR:-$(mktemp -d)}
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
# Fast DDS shared memory (64 MiB a process here) falls back to UDP, which drops 720p frames, if small
df -h /dev/shm | tail -1 | awk '{print "/dev/shm: " $2 " (" $4 " free)"}'

if ! "$PY" -c "import rclpy" 2>/dev/null; then
    [ -f "$WHEELS" ] || { echo "no rclpy here and no $WHEELS: run 'gpu_bench_cameras.sh pack' here first and carry .gpu" >&2; exit 3; }
    w=$(mktemp -d)
    # Python's tarfile, not tar: the device image may lack xz
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$WHEELS" "$w"
    # into this Python's own environment: the ROS wheels' .pth sets their library path at start
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check "$w"/*.whl
    rm -rf "$w"
fi
missing=$("$PY" - <<'PYEOF'
import importlib.util
print(" ".join(m for m in ("rclpy", "sensor_msgs", "nav_msgs", "diagnostic_msgs", "cv2", "numpy",
                           "yaml", "onnxruntime", "torch", "torchvision")
               if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "gpu_bench_cameras.sh: this machine's python lacks: $missing" >&2
    exit 3
fi
"$PY" - "$DEVICE" <<'PYEOF'
import sys, platform, cv2, numpy, onnxruntime, rclpy, torch
print(f"Python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}, "
      f"ONNX Runtime {onnxruntime.__version__}, numpy {numpy.__version__}, {platform.machine()}, "
      f"{__import__('os').cpu_count()} CPU cores")
if sys.argv[1].startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("torch sees no CUDA device: DEVICE=cpu runs the CPU version of these steps")
    print("CUDA device:", torch.cuda.get_device_name(0))
PYEOF

PT=seg_perception/data/models/camvid_parking_lraspp.pt
ONNX=seg_perception/data/models/camvid_parking_lraspp.onnx
# 120 Hz a camera in the capacity phase: a GPU takes far more than the CPU's 30 Hz default
bench=(--cameras "${CAMERAS:-4}" --seconds "${PHASE_SECONDS:-10}" --warmup "${WARMUP:-5}"
       --saturate-hz "${SATURATE_HZ:-120}")
since=$(mktemp)  # the node logs of this run only: newer than this file
collect_logs() {  # the nodes' own start-up lines say backend, device and frames per run
    local logs
    logs=$(cd /tmp && find . -maxdepth 1 -name 'seg_bench_cameras_*.log' -newer "$since" -printf '%P\n')
    [ -z "$logs" ] || tar -czf "$OUT/node_logs.tar.gz" -C /tmp $logs
}
trap collect_logs EXIT

failed=()
step() {  # one step's failure leaves the next ones to run: a device call is scarce
    local name=$1
    shift
    echo "== $name"
    "$@" || { echo "== $name: failed (exit $?)"; failed+=("$name"); }
}

step "the network alone: torch (CUDA where torch sees it), batch 1 and 4 of 1280x720 frames" \
    "$PY" -m seg_perception.tools.bench_backends "$PT" --backends torch --sizes 1280x720 \
    --batch-sizes 1 4 --iters 50 --json "$OUT/network.json"

step "bench cameras: torch (CUDA where torch sees it; one node: the cameras as one batch; the single-camera nodes: batch 1)" \
    "$PY" -m seg_perception.tools.cli bench cameras "${bench[@]}" --repeat "${REPEAT:-2}" -p backend:=torch \
    -p "model:=$PT" --json "$OUT/cameras_torch.json" "$@"

if [ "${CPU_BENCH:-1}" = 1 ]; then
    step "bench cameras: ONNX Runtime on this machine's CPU cores (several runs at once, one frame each)" \
        "$PY" -m seg_perception.tools.cli bench cameras "${bench[@]}" --repeat 1 -p backend:=onnxruntime \
        -p "model:=$ONNX" --json "$OUT/cameras_onnxruntime.json" "$@"
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_bench_cameras.sh: ${#failed[@]} step(s) failed: ${failed[*]}"
    exit 1
fi
echo "gpu_bench_cameras.sh: done"
