#!/usr/bin/env bash
# Train the public checkpoint on the pseudo-paired public cohort, then write its card and results.
# Usage: scripts/train_public.sh COHORT_CSV CROPS_NPZ OUT_DIR [RECIPE] [EPOCHS_DLUM] [EPOCHS_SINGLE]
# COHORT_CSV and CROPS_NPZ come from `python -m dlum prepare --out DIR`: DIR/cohort.csv and
# DIR/crops.npz (exact crops, so the images need not be on the machine that trains).
# RECIPE: frozen-stacked (default, the shipped one: DL-UM, DL-U and DL-M at once, 20-60 min on a
# 2-core CPU) or paper (end to end, one run per model; use a GPU). The paper branch then predicts
# every split with all three models, judges the candidate on its validation rows only
# (`dlum verdict`, against $AGAINST, default the shipped checkpoint) and writes the card's test and
# external results only if it ships; exit status 1 means it does not. DLUM_ARGS adds DL-UM's
# training options, e.g. DLUM_ARGS="--modality-dropout 0.3 --redraw-pairs"; extra train options
# for all three (e.g. --input-size 64 for a smoke run) go in TRAIN_ARGS.
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
      --epochs "$epochs" --num-workers "${WORKERS:-8}" --quiet ${TRAIN_ARGS:-} $([ "$arch" = dlum ] && echo "${DLUM_ARGS:-}")
done
# Predictions of all three models on every split, beside the three checkpoints (report reads
# validation, test and external rows; the DL-UM run's own held_out_predictions.csv lacks p_dlu, p_dlm)
$py -m dlum evaluate --checkpoint "$out/dlum" --dlu "$out/dlu" --dlm "$out/dlm" \
    --cohort "$cohort" --crops "$crops" --out "$out/held_out_predictions.csv" --quiet --force
# The shipping rule on validation rows only (docs/training.md); test rows are read only if it holds.
# AGAINST: the checkpoint to beat (default the shipped one); its held_out_predictions.csv sets the bar.
status=0
$py -m dlum verdict --held-out "$out/held_out_predictions.csv" \
    --against "${AGAINST:-checkpoints/dlum-public-v2}" || status=$?
if [ "$status" = 0 ]; then
  $py -m dlum report --checkpoint "$out/dlum" --held-out "$out/held_out_predictions.csv"
fi
exit "$status"
