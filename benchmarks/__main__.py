"""Run every CPU benchmark: ``python -m benchmarks`` (statistics, inference and CAMs)."""
from __future__ import annotations

from benchmarks import bench_inference, bench_stats

if __name__ == "__main__":
    status = bench_stats.main([])
    status |= bench_inference.main([])
    raise SystemExit(status)
