"""Benchmark of dlum.stats: DeLong AUC variance from 10^3 to 10^6 cases (O(n log n)), a 2,000-replicate
stratified bootstrap CI on 1,000 cases, and subgroup_summary on a 1,000-case table.

Run:  python benchmarks/bench_stats.py   (or python -m benchmarks.bench_stats)
Prints a table and writes benchmarks/results/stats.json.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import format_table, readme_row, timeit, write_results  # noqa: E402
from dlum.stats import bootstrap_auc_ci, delong_test, roc_auc_ci, subgroup_summary  # noqa: E402


#: Issue 7's target for DeLong on 10^6 cases on the project's CPU (seconds).
TARGET_DELONG_S = 2.0


def _cases(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = rng.normal(size=n) + 1.2 * y
    other = 0.6 * score + rng.normal(size=n)
    return y, score, other


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--max-exp", type=int, default=6, help="largest DeLong size 10^k (default 6)")
    args = parser.parse_args(argv)

    rows = []
    for exp in range(3, args.max_exp + 1):
        n = 10**exp
        y, s, o = _cases(n)
        t = timeit(lambda: roc_auc_ci(y, s), args.repeats, args.warmup)
        rows.append({"task": "roc_auc_ci (DeLong)", "n": n, **t,
                     "ns_per_nlogn": 1e9 * t["median"] / (n * math.log2(n))})
        if exp in (3, args.max_exp):
            t = timeit(lambda: delong_test(y, s, o), args.repeats, args.warmup)
            rows.append({"task": "delong_test (paired)", "n": n, **t,
                         "ns_per_nlogn": 1e9 * t["median"] / (n * math.log2(n))})

    y, s, _ = _cases(1000, seed=1)
    t = timeit(lambda: bootstrap_auc_ci(y, s, n_boot=2000), args.repeats, args.warmup)
    rows.append({"task": "bootstrap_auc_ci (2000 replicates)", "n": 1000, **t})

    y, s, o = _cases(1000, seed=2)
    rng = np.random.default_rng(12345)
    frame = pd.DataFrame({"label": y, "subgroup": rng.choice(["concordant", "discordant"], 1000),
                          "p_dlum": 1 / (1 + np.exp(-s)), "p_dlu": 1 / (1 + np.exp(-o)),
                          "p_dlm": 1 / (1 + np.exp(-(s + rng.normal(size=1000))))})
    t = timeit(lambda: subgroup_summary(frame, ["p_dlum", "p_dlu", "p_dlm"]), args.repeats, args.warmup)
    rows.append({"task": "subgroup_summary (3 raters x 3 subgroups)", "n": 1000, **t})

    out = [{(f"{k}_s" if k in ("median", "iqr", "min", "max", "mean") else k): v for k, v in r.items()}
           for r in rows]
    for r in out:
        if r["task"].startswith("roc_auc_ci") and r["n"] == 10**args.max_exp:
            readme_row(r, f"DeLong AUC + 95% CI, {r['n']:,} cases", target_s=TARGET_DELONG_S)
        elif r["task"].startswith("bootstrap"):
            readme_row(r, "bootstrap AUC CI, 2,000 replicates × 1,000 cases")
        elif r["task"].startswith("subgroup_summary"):
            readme_row(r, "subgroup summary (3 models × all/concordant/discordant, 1,000 cases)")
    print(format_table(out, ["task", "n", "median_s", "iqr_s", "min_s", "max_s", "ns_per_nlogn"]))
    path = write_results("stats", out, {"repeats": args.repeats, "warmup": args.warmup})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
