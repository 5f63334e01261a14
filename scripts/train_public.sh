#!/usr/bin/env bash
# Train the public checkpoint on the pseudo-paired public cohort, then write its card and results.
# Usage: scripts/train_public.sh COHORT_CSV CROPS_NPZ OUT_DIR [RECIPE] [EPOCHS_DLUM] [EPOCHS_SINGLE]
# COHORT_CSV and CROPS_NPZ come from `python -m dlum prepare --out DIR`: DIR/cohort.csv and
# DIR/crops.npz (exact crops, so the images need not be on the machine that trains).
# RECIPE: frozen-stacked (default, the shipped one: DL-UM, DL-U and DL-M at once, 20-60 min on a
# 2-core CPU) or paper (end to end, one run per model; use a GPU).
set -euo pipefail
cohort=$1; crops=$2; out=$3; recipe=${4:-frozen-stacked}; e_dlum=${5:-25}; e_single=${6:-20}
py=${PYTHON:-python3}
if [ "$recipe" = frozen-stacked ]; then
  $py -m dlum train --cohort "$cohort" --crops "$crops" --recipe frozen-stacked --out "$out" --quiet
  $py -m dlum report --checkpoint "$out" --held-out "$out/held_out_predictions.csv"
  exit 0
fi
for arch in dlum dlu dlm; do
  epochs=$e_single; [ "$arch" = dlum ] && epochs=$e_dlum
  $py -m dlum train --cohort "$cohort" --crops "$crops" --arch $arch --out "$out/$arch" \
      --epochs "$epochs" --num-workers "${WORKERS:-8}" --quiet
done
