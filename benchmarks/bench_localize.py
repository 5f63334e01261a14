"""Benchmark of the ultrasound lesion finder: one image → suggested box (decode → 128² → frozen
VGG16 + decoder → largest component → box and score), warm, with the shipped finder, in the
default precision (bf16 where the CPU computes it natively, else fp32) and in fp32; and loading
the finder (reading the ImageNet encoder weights).

The image is a real BUS-BRA test-split image when the public data is present (``../shared/data``),
else the project's synthetic ultrasound phantom (512 px), as PNG bytes, as an upload arrives.

Run:  python -m benchmarks.bench_localize [--finder DIR]
Prints a table, writes benchmarks/results/localize.json.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import device_label, format_table, readme_row, timeit, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Acceptance target of the lesion-finder issue on the project's CPU (seconds per suggestion).
TARGET_FIND_S = 0.5


def _us_bytes() -> tuple[bytes, str]:
    """An ultrasound image as PNG bytes, and what it is."""
    from PIL import Image

    from dlum.data.public import default_data_dir

    data = default_data_dir()
    folder = data / "us" / "busbra" / "Images" if data else None
    if folder is not None and folder.is_dir():
        from dlum.data.pairing import split_patients
        from dlum.data.public import read_busbra

        busbra = read_busbra(data)
        busbra["split"] = split_patients(busbra, 0, strata=("dataset",))
        row = busbra[busbra["split"] == "test"].sort_values("lesion_id").iloc[0]
        image = Path(row["image"])
        return image.read_bytes(), f"BUS-BRA {image.stem} ({row['width']}×{row['height']})"
    from dlum.data.synthetic import make_phantom_case

    us = make_phantom_case(seed=7, malignant=True, size=512)["us"]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(us, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue(), "synthetic ultrasound phantom (512×512)"


def _row(task: str, t: dict, **extra) -> dict:
    return {"task": task, "median_s": t["median"], "iqr_s": t["iqr"], "min_s": t["min"], **extra}


def main(argv=None) -> int:
    import torch

    from dlum.data.io import read_image
    from dlum.localize import load_finder
    from dlum.runtime import cpu_bf16_kind, fast_dtype

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finder", default=None, help="finder folder (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    data, what = _us_bytes()
    default = "bf16" if fast_dtype(device) == torch.bfloat16 else "fp32"
    rows = []
    start = time.perf_counter()
    load_finder(args.finder)
    rows.append({"task": "load the finder (card, decoder, ImageNet encoder)",
                 "median_s": time.perf_counter() - start})
    reference = None
    for precision in dict.fromkeys([default, "fp32"]):
        finder = load_finder(args.finder, precision=precision)
        t = timeit(lambda: finder.find(read_image(data)), args.repeats, warmup=2)
        finding = finder.find(read_image(data))
        row = _row(f"one ultrasound image → suggested box ({precision})", t,
                   box=list(finding.box) if finding.box else None, score=round(finding.score, 4))
        if reference is None:
            reference = finding
            why = f", {cpu_bf16_kind()} on this CPU" if precision == "bf16" else ""
            readme_row(row, f"lesion finder: one ultrasound image → suggested box, warm (decode → "
                       f"{finder.input_size}² → VGG16 + decoder → box), default {precision}{why}",
                       target_s=TARGET_FIND_S)
        rows.append(row)
    print(f"image: {what}")
    print(format_table(rows, ["task", "median_s", "iqr_s", "min_s", "score"]))
    print(f"threads: {torch.get_num_threads()}; device: {device_label(device)['name']}")
    print(f"wrote {write_results('localize', rows, {'device': device_label(device), 'image': what})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
