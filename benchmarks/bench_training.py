"""Benchmark of DL-UM training: pairs/s of one optimisation step at batch 16, and the time per epoch
of the public cohort that this implies.

The step is :func:`dlum.training.train_step`, exactly what ``python -m dlum train`` runs (autocast
forward of both VGG19 branches, focal loss + deep supervision + consistency, backward, Adam), on
random 224 × 224 inputs already in memory: data loading and augmentation are not timed (training
keeps the crops in memory and augments them on the CPU while the accelerator works). Time per epoch
= training pairs of the shipped checkpoint's cohort ÷ pairs/s.

Runs on CPU here and on a GPU (``--device cuda``) under torch 2.11 or newer, with no internet
(random initialisation: the ImageNet weights do not change the cost of a step).

Run:  python -m benchmarks.bench_training [--device cuda]
Prints a table, writes benchmarks/results/training[-cuda].json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import device_label, format_table, readme_row, timeit, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Forward + backward ≈ 3 × the forward's 78 GFLOP per pair (two VGG19 branches at 224²).
TRAIN_GFLOP_PER_PAIR = 3 * 78.0


def train_pairs(checkpoint: Path) -> int | None:
    """Training pairs of the cohort the checkpoint was trained on (its card), or None."""
    from dlum.card import read_card
    from dlum.errors import DLUMError

    try:
        return int(read_card(checkpoint).training["train_rows"])
    except (DLUMError, KeyError, TypeError, ValueError):
        return None


def main(argv=None) -> int:
    import torch

    from dlum.runtime import fast_dtype, resolve_device
    from dlum.training import TrainConfig, _build, loss_and_optimizer, train_step

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (default auto)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"))
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    config = TrainConfig(arch="dlum", batch_size=args.batch_size, pretrained=False,
                         device=str(device), precision=args.precision, input_size=args.size)
    dtype = fast_dtype(device, config.precision)
    torch.manual_seed(0)
    model = _build(config).to(device).to(memory_format=torch.channels_last).train()
    criterion, optimizer = loss_and_optimizer(model, config)
    b, s = args.batch_size, args.size
    us, mg = torch.randn(b, 3, s, s), torch.randn(b, 3, s, s)
    y = torch.arange(b, dtype=torch.float32) % 2

    def step():
        parts = train_step(model, "dlum", criterion, optimizer, us, mg, y, device=device, dtype=dtype)
        parts.total.item()  # waits for the device

    t = timeit(step, args.repeats, args.warmup)
    rate = b / t["median"]
    precision = str(dtype).replace("torch.", "")
    row = {"task": f"training step, batch {b}, {precision}, channels_last", "device": str(device),
           "median_s": t["median"], "iqr_s": t["iqr"], "min_s": t["min"], "pairs_per_s": rate,
           "tflop_per_s": rate * TRAIN_GFLOP_PER_PAIR * (s / 224) ** 2 / 1e3}
    rows = [row]
    n = train_pairs(Path(args.checkpoint))
    figure = f"{rate:,.1f} pairs/s"
    if n:
        steps = -(-n // b)
        row["epoch_pairs"] = n
        row["epoch_s"] = steps * t["median"]
        figure += f" ({row['epoch_s']:,.1f} s per epoch of {n:,} pairs)"
    if s == 224:
        readme_row(row, f"DL-UM training step, batch {b}, {precision}", figure, device=device.type)
    print(format_table(rows, ["task", "device", "median_s", "iqr_s", "pairs_per_s", "tflop_per_s",
                              "epoch_s"]))
    name = "training" if device.type == "cpu" else f"training-{device.type}"
    print(f"wrote {write_results(name, rows, {'device': device_label(device)})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
