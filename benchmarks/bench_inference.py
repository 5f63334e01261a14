"""Benchmark of inference and CAMs on this machine: one pair end to end (decode → ROI → 224 →
DL-UM → probabilities) with the shipped checkpoint, fp32 vs bf16, and all 10 CAMs / one CAM.

Run:  python -m benchmarks.bench_inference   Prints a table, writes benchmarks/results/inference.json.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import format_table, timeit, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _pair_bytes() -> tuple[bytes, bytes]:
    """A phantom pair as PNG bytes, as an upload would arrive."""
    from PIL import Image

    from dlum.data.synthetic import make_phantom_case

    case = make_phantom_case(seed=7, malignant=True)
    out = []
    for key in ("us", "mg"):
        a = case[key]
        a = (255 * (a - a.min()) / (np.ptp(a) or 1)).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def main(argv=None) -> int:
    import torch

    from dlum.inference import Predictor
    from dlum.visualize.cam import compute_cams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v1"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    us, mg = _pair_bytes()
    rows = []
    for precision in ("fp32", "bf16"):
        predictor = Predictor(args.checkpoint, device="cpu", precision=precision)
        t = timeit(lambda: predictor.predict_pair(us=us, mg=mg), args.repeats, warmup=2)
        rows.append({"task": f"one pair → probabilities ({precision})", "median_s": t["median"],
                     "iqr_s": t["iqr"], "min_s": t["min"]})
    predictor = Predictor(args.checkpoint, device="cpu")
    from dlum.data.io import read_image

    x_us = predictor.preprocess(read_image(us))[None]
    x_mg = predictor.preprocess(read_image(mg))[None]
    t = timeit(lambda: compute_cams(predictor.model, x_us, x_mg), max(2, args.repeats // 2), warmup=1)
    rows.append({"task": "10 CAMs (Grad-CAM, both branches, fp32)", "median_s": t["median"],
                 "iqr_s": t["iqr"], "min_s": t["min"]})
    t = timeit(lambda: compute_cams(predictor.model, x_us, None, target="branch"),
               max(2, args.repeats // 2), warmup=1)
    rows.append({"task": "5 CAMs of one branch (one forward/backward)", "median_s": t["median"],
                 "iqr_s": t["iqr"], "min_s": t["min"]})
    print(format_table(rows, ["task", "median_s", "iqr_s", "min_s"]))
    print(f"threads: {torch.get_num_threads()}; default precision here: "
          f"{str(predictor.dtype).replace('torch.', '')}")
    print(f"wrote {write_results('inference', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
