#!/bin/bash
# Train the default model on a lent GPU machine (issue #13) from a compact copy of the data.
#
# Here (CPU):  python -m seg_perception.core.training.pack pack --data ../shared/data/camvid \
#                  --out runs/camvid_pack.tar                  # 39 MiB, under the 64 MiB a run carries
# There:       the device tool runs, carrying runs/camvid_pack.tar:
#                  bash scripts/gpu_train.sh runs/camvid_pack.tar "$OUT"
# Back here:   the run directory comes back as $OUT/run (last.pt, best.pt, train.log); export it on
#              the CPU with the same recipe (the loop is done, so it only evaluates and exports):
#                  seg-perception train --data ../shared/data/camvid --run-dir <files_at>/run ... \
#                      --resume --export runs/gpu/camvid_parking_lraspp.onnx
#
# Environment: DEVICE (cuda), MINUTES of optimisation (8), WORKERS (all cores but two). Extra
# arguments go to `seg-perception train` after the recipe, so they override it (the CPU test runs
# this script with DEVICE=cpu and a few steps). Needs python3 with torch, torchvision, OpenCV,
# numpy and PyYAML on that machine; the project itself comes with the working tree.
set -euo pipefail
PACK=${1:?usage: gpu_train.sh PACK.tar OUT_DIR [train arguments...]}
OUT=${2:?usage: gpu_train.sh PACK.tar OUT_DIR [train arguments...]}
shift 2
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-8}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

missing=$("$PY" - <<'PYEOF'
import importlib.util
print(" ".join(m for m in ("torch", "torchvision", "cv2", "numpy", "yaml")
               if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "gpu_train.sh: this machine's python lacks: $missing" >&2
    exit 3
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
"$PY" -m seg_perception.core.training.pack unpack "$PACK" --out "$DATA"
mkdir -p "$OUT"
# The CPU recipe (runs/README in docs/model_card.md) at full-resolution crops and batch 16:
# the GPU affords them, and the time budget, not the epoch count, ends the run.
"$PY" -m seg_perception.tools.cli train --data "$DATA" --run-dir "$OUT/run" \
    --device "$DEVICE" --workers "$WORKERS" --threads 4 \
    --train-splits "train,val[:76]" --val-split "val[76:]" --test-split test \
    --init-from seg_perception/data/models/camvid_parking_lraspp.pt \
    --epochs 400 --time-budget "$MINUTES" --batch-size 16 --crop 360x480 --scale 0.5 2.0 \
    --aspect 0.75 1.33 --lr 1e-3 --warmup-epochs 1 --weight-decay 1e-2 --class-weighting isqrt \
    --paint-parking 0.35 --kerb-parking 0.35 --parked-cars 0.5 --paint-markings 0.5 \
    --photometric 1 --ema 0.998 --val-every 5 "$@" 2>&1 | tee "$OUT/gpu_train.log"
