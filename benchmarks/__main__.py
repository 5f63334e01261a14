"""Run every CPU benchmark and refresh the README's speed table: ``python -m benchmarks``.

Statistics, inference and CAMs, bf16's agreement with fp32 on the public test split (where bf16
is the default and ``python -m dlum prepare`` has run), the dashboard's first renders, and a
training step, in 4–8 minutes on the project's 2-core CPUs; ``--skip NAME`` leaves one out
(its last result, if any, stays in the table). GPU figures come from ``python -m benchmarks.bench_inference --device
cuda`` and ``python -m benchmarks.bench_training --device cuda`` on a GPU machine; copy their
JSON from ``benchmarks/results/`` into ``benchmarks/recorded/`` to keep them in the table.
"""
from __future__ import annotations

import argparse
import time

from benchmarks import (bench_app, bench_inference, bench_localize, bench_precision, bench_stats,
                        bench_training, bench_uncertainty, readme)

BENCHMARKS = {"stats": bench_stats, "inference": bench_inference, "uncertainty": bench_uncertainty,
              "localize": bench_localize,
              "precision": bench_precision, "app": bench_app, "training": bench_training}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[], choices=sorted(BENCHMARKS))
    parser.add_argument("--no-readme", action="store_true", help="do not refresh README.md")
    args = parser.parse_args(argv)
    status = 0
    for name, module in BENCHMARKS.items():
        if name in args.skip:
            continue
        start = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        status |= module.main([])
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    if not args.no_readme:
        status |= readme.main([])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
