"""Side by side: DL-UM's ultrasound branch on expert boxes, on the lesion finder's boxes, and on
whole images, for the same rows (default: the public cohort's external split, BrEaST-Lesions-USG).

Usage: python scripts/finder_side_by_side.py [--cohort cache/public/cohort.csv]
           [--checkpoint checkpoints/dlum-public-v2] [--finder checkpoints/us-finder-v1]
           [--split external] [--out cache/side-by-side] [--update-card]

Writes three cohort tables into ``--out`` (the rows as given: ``expert.csv``; the same rows with
their ultrasound boxes removed: ``whole.csv``) and runs ``python -m dlum evaluate`` on them:
``expert`` (the datasets' boxes), ``found`` (``whole.csv`` with ``--find-lesions``: the finder's
boxes) and ``whole`` (``whole.csv`` as it is: whole images, no box). Prints a Markdown table of
the AUC (DeLong 95% CI) of ``p_us_head`` (and ``p_dlum``) each way, DeLong's paired test of found
against expert boxes, and how the found boxes overlap the expert ones; writes ``side_by_side.json``
and, with ``--update-card``, the same into the finder's card (``side_by_side``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

WAYS = ("expert", "found", "whole")
TITLES = {"expert": "expert boxes (the datasets' masks)", "found": "lesion finder's boxes",
          "whole": "whole images, no box"}


def _auc(frame: pd.DataFrame, column: str) -> dict:
    from dlum.stats.roc import roc_auc_ci

    r = roc_auc_ci(frame["label"].to_numpy(), frame[column].to_numpy())
    return {"auc": round(r.auc, 4), "ci": [round(r.ci_low, 4), round(r.ci_high, 4)]}


def compare(predictions: dict[str, pd.DataFrame], expert_boxes: np.ndarray, min_score: float) -> dict:
    """AUCs each way, DeLong's paired test (found against expert) and the found boxes' overlap
    with the expert boxes."""
    from dlum.localize import box_iou
    from dlum.stats.roc import delong_test

    expert, found = predictions["expert"], predictions["found"]
    assert (expert["case_id"].to_numpy() == found["case_id"].to_numpy()).all()
    out = {"rows": int(len(expert)), "malignant": int(expert["label"].sum()),
           **{way: {c: _auc(predictions[way], c) for c in ("p_us_head", "p_dlum")} for way in WAYS}}
    test = delong_test(expert["label"].to_numpy(), found["p_us_head"].to_numpy(),
                       expert["p_us_head"].to_numpy())
    out["found_minus_expert_p_us_head"] = {"diff": round(test.diff, 4),
                                           "ci": [round(test.ci_low, 4), round(test.ci_high, 4)],
                                           "p_value": round(test.p_value, 4)}
    boxes = [None if not s else tuple(int(v) for v in s.split(",")) for s in found["us_roi"].fillna("")]
    ious = np.array([box_iou(b, tuple(e)) for b, e in zip(boxes, expert_boxes)])
    scores = found["us_find_score"].to_numpy(float)
    out["found_boxes"] = {
        "sources": {k: int(v) for k, v in found["us_roi_source"].value_counts().items()},
        "iou_with_expert_median": round(float(np.median(ious)), 4),
        "iou_with_expert_at_least_0.5": round(float(np.mean(ious >= 0.5)), 4),
        "low_confidence": int(np.sum(scores < min_score)),
        "min_score": min_score,
    }
    confident = scores >= min_score
    if confident.sum() > 10 and expert.loc[confident, "label"].nunique() == 2:
        out["found_confident_only"] = {"rows": int(confident.sum()),
                                       "found": _auc(found[confident], "p_us_head"),
                                       "expert": _auc(expert[confident], "p_us_head")}
    return out


def markdown(result: dict, split: str) -> str:
    lines = [f"| {split} split, {result['rows']} lesions ({result['malignant']} malignant) | "
             "AUC US branch (`p_us_head`), 95% CI | AUC DL-UM fused (`p_dlum`), 95% CI |",
             "|---|---|---|"]
    for way in WAYS:
        cells = [f"{result[way][c]['auc']:.3f} ({result[way][c]['ci'][0]:.3f}–"
                 f"{result[way][c]['ci'][1]:.3f})" for c in ("p_us_head", "p_dlum")]
        lines.append(f"| {TITLES[way]} | {cells[0]} | {cells[1]} |")
    d = result["found_minus_expert_p_us_head"]
    b = result["found_boxes"]
    lines += ["", f"Found − expert (US branch): {d['diff']:+.3f} (95% CI {d['ci'][0]:+.3f} to "
              f"{d['ci'][1]:+.3f}; DeLong p = {d['p_value']:.3f}). Found boxes: median IoU "
              f"{b['iou_with_expert_median']:.3f} with the expert box, "
              f"{100 * b['iou_with_expert_at_least_0.5']:.1f}% with IoU ≥ 0.5, {b['low_confidence']} "
              f"low-confidence (score < {b['min_score']:.2f}); sources {b['sources']}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    from dlum import cli
    from dlum.data.manifest import BOX_COLUMNS, read_cohort, write_cohort
    from dlum.localize import load_finder, save_finder
    from dlum.predictions import read_predictions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", default=str(REPO / "cache" / "public" / "cohort.csv"))
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"))
    parser.add_argument("--finder", default=str(REPO / "checkpoints" / "us-finder-v1"))
    parser.add_argument("--split", default="external")
    parser.add_argument("--out", default=str(REPO / "cache" / "side-by-side"))
    parser.add_argument("--update-card", action="store_true",
                        help="write the result into the finder's card (side_by_side)")
    args = parser.parse_args(argv)
    if not Path(args.cohort).is_file():
        print(f"{args.cohort} not found: run `python -m dlum prepare --out cache/public` first",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = read_cohort(args.cohort)
    rows = cohort[cohort["split"] == args.split].reset_index(drop=True)
    expert_boxes = rows[list(BOX_COLUMNS["us"])].to_numpy(float)
    write_cohort(rows, out / "expert.csv")
    whole = rows.copy()
    whole[list(BOX_COLUMNS["us"])] = np.nan
    write_cohort(whole, out / "whole.csv")
    base = ["evaluate", "--checkpoint", args.checkpoint, "--quiet", "--force"]
    runs = {"expert": ["--cohort", str(out / "expert.csv")],
            "found": ["--cohort", str(out / "whole.csv"), "--find-lesions", "--finder", args.finder],
            "whole": ["--cohort", str(out / "whole.csv")]}
    predictions = {}
    for way, extra in runs.items():
        path = out / f"{way}_predictions.csv"
        status = cli.main([*base, *extra, "--out", str(path)])
        if status:
            return status
        predictions[way] = pd.read_csv(path)
        read_predictions(path)  # each output is a valid predictions table
    finder = load_finder(args.finder)
    result = compare(predictions, expert_boxes, finder.min_score)
    result.update({"split": args.split, "checkpoint": Path(args.checkpoint).name,
                   "finder": finder.name, "script": "scripts/finder_side_by_side.py"})
    (out / "side_by_side.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result, args.split))
    if args.update_card:
        card = finder.card
        card["side_by_side"] = result
        save_finder(finder, args.finder, card, weights=False)  # the weights stay as they are
        print(f"updated {Path(args.finder) / 'card.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
