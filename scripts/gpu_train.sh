#!/bin/bash
# Train the default model (or its fast variant) on a lent GPU machine from a compact copy of the
# data (issues #13, #33).
#
# Here (CPU):  python -m seg_perception.core.training.pack pack --data ../shared/data/camvid \
#                  --out runs/camvid_pack.tar                  # 39 MiB, under the 64 MiB a run carries
#              seg-perception import-espnetv2 ../shared/models/espnetv2_cityscapes --out runs/pretrained
#                                                              # the authors' weights, 3.5 MB
# There:       the device tool runs, carrying runs/camvid_pack.tar and runs/pretrained:
#                  RECIPE=default bash scripts/gpu_train.sh runs/camvid_pack.tar "$OUT"
#                  RECIPE=fast    bash scripts/gpu_train.sh runs/camvid_pack.tar "$OUT"
# Back here:   the run directory comes back as $OUT/run (last.pt, best.pt, train.log); export it on
#              the CPU with the same recipe (the loop is done, so it only evaluates and exports):
#                  seg-perception train --data ../shared/data/camvid --run-dir <files_at>/run ... \
#                      --resume --export runs/gpu/cityscapes_parking_espnetv2.onnx
#
# RECIPE: default (ESPNetv2 s2.0 at 1024x512 from the authors' Cityscapes weights, INIT, which are
# also the TEACHER for CamVid's partial labels) or fast (LR-ASPP MobileNetV3 at 480x360 from INIT,
# default: the shipped fast model, labels refined by TEACHER, default: the shipped default).
# Environment: DEVICE (cuda), MINUTES of optimisation (8), WORKERS (all cores but two). Extra
# arguments go to `seg-perception train` after the recipe, so they override it (the CPU test runs
# this script with DEVICE=cpu, a tiny model and a few steps). Needs python3 with torch,
# torchvision, OpenCV, numpy and PyYAML on that machine; the project comes with the working tree.
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
# The CPU recipes (docs/model_card.md) at full-resolution crops and batch 16: the GPU affords
# them, and the time budget, not the epoch count, ends the run.
RECIPE=${RECIPE:-default}
case "$RECIPE" in
  default)
    INIT=${INIT:-runs/pretrained/espnetv2_s2.0_cityscapes_1024x512.pt}
    TEACHER=${TEACHER:-$INIT}
    MODEL_ARGS=(--architecture espnetv2_s2.0 --input-size 512x1024 --crop 512x1024 --lr 2e-4 --freeze-bn);;
  fast)
    INIT=${INIT:-seg_perception/data/models/cityscapes_parking_lraspp.pt}
    TEACHER=${TEACHER:-seg_perception/data/models/cityscapes_parking_espnetv2.pt}
    MODEL_ARGS=(--architecture lraspp_mobilenet_v3_large --input-size 360x480 --crop 360x480 --lr 1e-3);;
  *) echo "gpu_train.sh: RECIPE is default or fast, not $RECIPE" >&2; exit 2;;
esac
for f in "$INIT" "$TEACHER"; do
    [ -f "$f" ] || { echo "gpu_train.sh: $f is missing (carry it, or set INIT / TEACHER)" >&2; exit 3; }
done
"$PY" -m seg_perception.tools.cli train --data "$DATA" --run-dir "$OUT/run" \
    --device "$DEVICE" --workers "$WORKERS" --threads 4 \
    --train-splits "train,val[:76]" --val-split "val[76:]" --test-split test \
    --classes cityscapes_parking --teacher "$TEACHER" --init-from "$INIT" "${MODEL_ARGS[@]}" \
    --epochs 400 --time-budget "$MINUTES" --batch-size 16 --scale 0.5 1.75 \
    --aspect 0.75 1.33 --warmup-epochs 1 --weight-decay 1e-2 --class-weighting isqrt --max-class-weight 10 \
    --paint-parking 0.35 --kerb-parking 0.35 --parked-cars 0.5 --paint-markings 0.5 \
    --photometric 1 --ema 0.998 --val-every 5 "$@" 2>&1 | tee "$OUT/gpu_train.log"
