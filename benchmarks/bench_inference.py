"""Benchmark of inference and CAMs: one pair end to end (decode → ROI → 224 → DL-UM → probabilities)
with the shipped checkpoint (NCHW vs channels_last, eager vs ``torch.compile``, fp32 vs bf16),
batched cohort inference in pairs/s, and CAMs (all 10 maps of a pair; one map).

On a GPU (``--device cuda``, torch 2.11 or newer, no internet needed) batched inference runs in
bf16 at batch 16…256, eager and compiled, with the fraction of the dense bf16 roofline reached
(dual VGG19 at 224² ≈ 78 GFLOP per pair).

Run:  python -m benchmarks.bench_inference [--device cuda]
Prints a table, writes benchmarks/results/inference[-cuda].json.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import device_label, format_table, readme_row, timeit, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Forward FLOPs of DL-UM per pair: two VGG19 feature stacks at 224² (2 × 19.6 GMAC) ≈ 78 GFLOP.
GFLOP_PER_PAIR = 78.0
#: Acceptance targets of issue 7 on the project's CPU (seconds).
TARGET_PAIR_S, TARGET_CAMS_S = 0.5, 8.0


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


def _row(task: str, t: dict, **extra) -> dict:
    return {"task": task, "median_s": t["median"], "iqr_s": t["iqr"], "min_s": t["min"], **extra}


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


_LABEL = {"fp32": "fp32", "bf16": "bf16 autocast"}


def one_pair_rows(checkpoint: str, device, repeats: int, compile_: bool, bf16: bool,
                  warmup: int = 2) -> list[dict]:
    """One uploaded pair → probabilities: precisions, layouts, compile.

    The README row with the target is the default path (``precision="auto"``: bf16 where the
    device computes it natively, else fp32, channels_last); the others say what the rest cost.
    Each row other than the first records how far its P(malignant) is from fp32 NCHW's.
    """
    import time

    import torch

    from dlum.inference import Predictor
    from dlum.runtime import cpu_bf16_kind, fast_dtype

    us, mg = _pair_bytes()
    kind = device.type
    target = TARGET_PAIR_S if kind == "cpu" else None
    default = "bf16" if fast_dtype(device) == torch.bfloat16 else "fp32"
    native = kind == "cuda" or bool(cpu_bf16_kind())
    precisions = ["fp32"] + (["bf16"] if bf16 or default == "bf16" else [])  # fp32 first: the reference
    rows, reference = [], None
    for prec in precisions:
        predictor = Predictor(checkpoint, device=device, precision=prec)
        emulated = prec == "bf16" and not native
        layouts = [("channels_last", torch.channels_last)]
        if not emulated:
            layouts.insert(0, ("NCHW", torch.contiguous_format))
        for name, fmt in layouts:
            predictor.use_memory_format(fmt)
            reps = max(2, repeats // 2) if emulated else repeats
            t = timeit(lambda: predictor.predict_pair(us=us, mg=mg), reps,
                       warmup=min(1, warmup) if emulated else warmup)
            p_dlum = predictor.predict_pair(us=us, mg=mg).p_dlum
            row = _row(f"one pair → probabilities ({_LABEL[prec]}, {name}, eager)", t)
            if reference is None:
                reference = p_dlum
            else:
                row["max_abs_diff"] = abs(p_dlum - reference)
            if name == "channels_last":
                if prec == default:
                    why = f" ({cpu_bf16_kind()} on this CPU)" if kind == "cpu" and prec == "bf16" else ""
                    readme_row(row, "one pair → probabilities, warm (decode → ROI → 224 → DL-UM), "
                               f"default: {_LABEL[prec]}{why}, channels_last", target_s=target, device=kind)
                elif prec == "fp32":
                    readme_row(row, "same in fp32 (what CAMs run in; the default where bf16 is not "
                               "native)", device=kind)
                else:
                    readme_row(row, "same, bf16 autocast (no native bf16 here: emulated, so fp32 is "
                               "the default)", device=kind)
            rows.append(row)
        if compile_ and prec == default:
            predictor.use_memory_format(torch.channels_last)
            start = time.perf_counter()
            ok = predictor.compile_pair_path()
            compile_s = time.perf_counter() - start
            if ok:
                t = timeit(lambda: predictor.predict_pair(us=us, mg=mg), repeats, warmup=warmup)
                got = predictor.predict_pair(us=us, mg=mg).p_dlum
                row = _row(f"one pair → probabilities ({_LABEL[prec]}, channels_last, torch.compile)", t,
                           compile_s=compile_s, max_abs_diff=abs(got - reference))
                readme_row(row, f"same as the default, torch.compile (inductor, frozen weights; "
                           f"compiling took {compile_s:.0f} s; opt-in in the dashboard with "
                           "DLUM_COMPILE=1)", target_s=target, device=kind)
                rows.append(row)
            else:
                rows.append({"task": "one pair, torch.compile", "note": "compile failed (see log)"})
    # The default path first in the table (a stable sort keeps the rest in measuring order).
    rows.sort(key=lambda r: not r["task"].startswith(f"one pair → probabilities ({_LABEL[default]},"))
    return rows


def batch_rows(checkpoint: str, device, batches: list[int], repeats: int, compile_: bool,
               precision: str, warmup: int = 2) -> list[dict]:
    """Cohort inference throughput: network input tensors already decoded, pairs/s per batch size."""
    import torch

    from dlum.inference import Predictor

    predictor = Predictor(checkpoint, device=device, precision=precision)
    prec = str(predictor.dtype).replace("torch.", "")
    peak = device_label(device).get("bf16_peak_tflops")
    rows = []
    from dlum.inference import _PairLogits

    variants = [("eager", _PairLogits(predictor.model))]
    if compile_:
        variants.append(("torch.compile", torch.compile(_PairLogits(predictor.model))))
    for name, model in variants:
        for b in batches:
            x = torch.randn(b, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)

            def run():
                with torch.inference_mode():
                    from dlum.runtime import autocast

                    with autocast(device, predictor.dtype):
                        model(x, x)[0].float().sum().item()

            t = timeit(run, repeats, warmup=warmup)
            rate = b / t["median"]
            tflops = rate * GFLOP_PER_PAIR / 1e3
            row = _row(f"batched inference, batch {b} ({prec}, channels_last, {name})", t,
                       batch=b, pairs_per_s=rate, tflop_per_s=tflops)
            if peak and prec == "bfloat16":
                row["roofline_fraction"] = tflops / peak
            rows.append(row)
    best = max(rows, key=lambda r: r["pairs_per_s"])
    figure = f"{best['pairs_per_s']:,.1f} pairs/s ≈ {best['tflop_per_s']:.3g} TFLOP/s"
    if "roofline_fraction" in best:
        figure += f" ≈ {100 * best['roofline_fraction']:.0f}% of the {peak:.0f} TFLOP/s dense bf16 peak"
    readme_row(best, f"DL-UM batched inference, {best['task'].split(', ', 1)[1]}, best of batch "
               f"{'/'.join(map(str, batches))}", figure, device=device.type)
    best["task"] += " (best)"
    return rows


def cam_rows(checkpoint: str, device, repeats: int, warmup: int = 1) -> list[dict]:
    """All 10 Grad-CAM maps of a pair (fp32, with gradients), and one map."""
    from dlum.data.io import read_image
    from dlum.inference import Predictor
    from dlum.visualize.cam import compute_cams

    us, mg = _pair_bytes()
    predictor = Predictor(checkpoint, device=device, precision="fp32")
    x_us = predictor.preprocess(read_image(us))[None]
    x_mg = predictor.preprocess(read_image(mg))[None]
    t = timeit(lambda: compute_cams(predictor.model, x_us, x_mg), repeats, warmup=warmup)
    row = _row("10 CAMs (Grad-CAM, both branches, fp32)", t)
    readme_row(row, "all 10 CAMs of a pair (Grad-CAM, fp32, one forward/backward per branch)",
               target_s=TARGET_CAMS_S if device.type == "cpu" else None, device=device.type)
    rows = [row]
    t = timeit(lambda: compute_cams(predictor.model, x_us, None, target="branch"), repeats,
               warmup=warmup)
    rows.append(_row("one CAM (one branch's forward/backward; its other 4 blocks come free)", t))
    return rows


def main(argv=None) -> int:
    import torch

    from dlum.runtime import fast_dtype, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes (default 16 on CPU, 16,64,128,256 on GPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 one-pair rows where bf16 is not the default")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs before each timing (default 2, 1 for CAMs and emulated bf16)")
    args = parser.parse_args(argv)
    warm = {} if args.warmup is None else {"warmup": args.warmup}
    few = max(1, args.repeats // 2)  # batches and CAMs take longer: half the repeats
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    batches = [int(b) for b in (args.batches or ("16,64,128,256" if gpu else "16")).split(",")]

    rows = one_pair_rows(args.checkpoint, device, args.repeats, not args.no_compile, not args.no_bf16,
                         **warm)
    rows += batch_rows(args.checkpoint, device, batches, few, compile_=gpu and not args.no_compile,
                       precision="auto", **warm)
    # What bf16 buys: fp32 at the largest batch, wherever bf16 is the default (on a GPU cuDNN's
    # convolutions may use TF32). Where fp32 is the default, emulated bf16 batches take minutes.
    if fast_dtype(device) == torch.bfloat16:
        rows += batch_rows(args.checkpoint, device, batches[-1:], few, compile_=False,
                           precision="fp32", **warm)
    rows += cam_rows(args.checkpoint, device, few, **warm)
    _sync(device)
    print(format_table(rows, ["task", "median_s", "iqr_s", "min_s", "pairs_per_s", "tflop_per_s"]))
    print(f"threads: {torch.get_num_threads()}; device: {device_label(device)['name']}")
    name = "inference" if not gpu else "inference-cuda"
    print(f"wrote {write_results(name, rows, {'device': device_label(device)})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
