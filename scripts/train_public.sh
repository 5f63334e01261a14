#!/usr/bin/env bash
# Train DL-UM, DL-U and DL-M on the pseudo-paired public cohort (GPU when present).
# Usage: scripts/train_public.sh COHORT_CSV CROPS_NPZ OUT_DIR [EPOCHS_DLUM] [EPOCHS_SINGLE]
# COHORT_CSV and CROPS_NPZ come from `python -m dlum prepare --out DIR`: DIR/cohort.csv and
# DIR/crops.npz (exact crops, so the images need not be on the GPU machine).
set -euo pipefail
cohort=$1; crops=$2; out=$3; e_dlum=${4:-25}; e_single=${5:-20}
py=${PYTHON:-python3}
for arch in dlum dlu dlm; do
  epochs=$e_single; [ "$arch" = dlum ] && epochs=$e_dlum
  $py -m dlum train --cohort "$cohort" --crops "$crops" --arch $arch --out "$out/$arch" \
      --epochs "$epochs" --num-workers "${WORKERS:-8}" --quiet
done
