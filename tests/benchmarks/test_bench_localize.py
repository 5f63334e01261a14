"""benchmarks.bench_localize runs end to end on a small random finder and writes its results with
the machine they came from (speed itself is measured by the script, not tested)."""
from __future__ import annotations

import json

import benchmarks._common
from benchmarks import bench_localize
from dlum.localize import new_finder, save_finder


def test_localize_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks._common, "RESULTS_DIR", tmp_path)  # not benchmarks/results
    finder = save_finder(new_finder(pretrained=False, input_size=32), tmp_path / "f", {"name": "f"})
    assert bench_localize.main(["--finder", str(finder), "--repeats", "1"]) == 0
    payload = json.loads((tmp_path / "localize.json").read_text())
    assert payload["benchmark"] == "localize" and payload["machine"]["cpu_usable"] >= 1
    marked = [r for r in payload["rows"] if "readme" in r]
    assert len(marked) == 1 and marked[0]["readme"]["target_s"] == bench_localize.TARGET_FIND_S
    assert all(r["median_s"] > 0 for r in payload["rows"])
