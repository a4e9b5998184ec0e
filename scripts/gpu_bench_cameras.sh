#!/bin/bash
# Issue #16's GPU benchmark on a GPU host that has no ROS and no internet access: four 1280x720
# cameras through one node (one torch CUDA model, the four frames as one batch) against four
# single-camera nodes (four models, batch 1 each), plus the network alone at batch 1 and 4.
#
# Such a host (here: a lent machine with torch, OpenCV and ONNX Runtime for Python 3.12) takes
# the checkout plus the ROS wheels, made here: `pack` builds them for Python 3.12 and stores them
# uncompressed in one xz tar (23 MiB instead of 43 MiB of zipped wheels).
#
# Here:        bash scripts/gpu_bench_cameras.sh pack          # -> .gpu/ros_wheels.tar.xz
# There:       the checkout with .gpu/ (git-ignored: copy it along), then
#                  bash scripts/gpu_bench_cameras.sh run OUT_DIR
#              (about 7 minutes; every step has its own time limit, so give it 8)
# Back here:   OUT_DIR/gpu_bench.log (everything printed), network.json (bench_backends),
#              cameras_torch.json and, on that host's CPU cores, cameras_onnxruntime.json
#              (bench cameras --json), node_logs.tar.gz (the nodes' own logs of the last pair:
#              backend, device, frames per run).
#
# Environment: PACK_PYTHON (python3.12: the host's Python), PYTHON (python3), DEVICE (cuda: refuse
# to run where torch sees no CUDA device; cpu: run anyway, torch then takes the CPU, as the CPU
# test does), CAMERAS (4), REPEAT (2 pairs with torch), PHASE_SECONDS (8), WARMUP (4),
# SATURATE_HZ (120), CPU_BENCH (1: also one pair with ONNX Runtime on the host's CPU cores),
# ITERS (50 timed runs a batch size for the network alone).
# Extra arguments after OUT_DIR go to every `bench cameras`.
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
tee_pid=$!
since=$(mktemp)  # the node logs of this run only: newer than this file
collect_logs() {  # the nodes' own start-up lines say backend, device and frames per run
    local logs
    logs=$(cd /tmp && find . -maxdepth 1 -name 'seg_bench_cameras_*.log' -newer "$since" -printf '%P\n' || true)
    [ -z "$logs" ] || tar -czf "$OUT/node_logs.tar.gz" -C /tmp $logs || true
}
finish() {  # the logs, then every line through tee before the script's exit
    collect_logs
    rm -rf "$since" "${own_log_dir:-}"
    exec >&- 2>&-
    wait "$tee_pid" 2>/dev/null || true
}
trap finish EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-61}
[ -n "${ROS_LOG_DIR:-}" ] || { ROS_LOG_DIR=$(mktemp -d); own_log_dir=$ROS_LOG_DIR; }
export ROS_LOG_DIR
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
# Fast DDS's shared memory takes 64 MiB a node process; in a small /dev/shm (Docker gives 64 MiB
# unless --shm-size) it falls back to UDP, which drops 720p frames, and the numbers mean little
shm_free_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}' || true)
echo "/dev/shm: ${shm_free_mb:-?} MiB free"
if [ -n "$shm_free_mb" ] && [ "$shm_free_mb" -lt 1024 ]; then
    mount -o remount,size=2G /dev/shm 2>/dev/null && echo "/dev/shm: remounted at 2 GiB" ||
        echo "WARNING: /dev/shm has under 1 GiB free: Fast DDS falls back to UDP and drops 720p frames"
fi

if ! "$PY" -c "import rclpy" 2>/dev/null; then
    [ -f "$WHEELS" ] || { echo "no rclpy here and no $WHEELS: run 'gpu_bench_cameras.sh pack' where pip reaches PyPI and copy .gpu/ along" >&2; exit 3; }
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
bench=(--cameras "${CAMERAS:-4}" --seconds "${PHASE_SECONDS:-8}" --warmup "${WARMUP:-4}"
       --saturate-hz "${SATURATE_HZ:-120}")

failed=()
step() {  # LIMIT_S NAME COMMAND...: a failing or hung step leaves the next ones to run
    local limit=$1 name=$2
    shift 2
    echo "== $name"
    # SIGINT at the limit: bench cameras then stops its node processes before it exits
    timeout -s INT -k 20 "$limit" "$@" || { echo "== $name: failed (exit $?; 124: over ${limit} s)"; failed+=("$name"); }
}

step 90 "the network alone: torch (CUDA where torch sees it), batch 1 and 4 of 1280x720 frames" \
    "$PY" -m seg_perception.tools.bench_backends "$PT" --backends torch --sizes 1280x720 \
    --batch-sizes 1 4 --iters "${ITERS:-50}" --json "$OUT/network.json"

step 270 "bench cameras: torch (CUDA where torch sees it; one node: the cameras as one batch; the single-camera nodes: batch 1)" \
    "$PY" -m seg_perception.tools.cli bench cameras "${bench[@]}" --repeat "${REPEAT:-2}" -p backend:=torch \
    -p "model:=$PT" --json "$OUT/cameras_torch.json" "$@"

if [ "${CPU_BENCH:-1}" = 1 ]; then
    step 150 "bench cameras: ONNX Runtime on this machine's CPU cores (several runs at once, one frame each)" \
        "$PY" -m seg_perception.tools.cli bench cameras "${bench[@]}" --repeat 1 -p backend:=onnxruntime \
        -p "model:=$ONNX" --json "$OUT/cameras_onnxruntime.json" "$@"
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_bench_cameras.sh: ${#failed[@]} step(s) failed: ${failed[*]}"
    exit 1
fi
echo "gpu_bench_cameras.sh: done"
