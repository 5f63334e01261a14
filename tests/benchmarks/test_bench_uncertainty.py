"""benchmarks.bench_uncertainty runs end to end on the small test checkpoint and writes its results
with the machine they came from (speed itself is measured by the script, not tested); the README
table can be refreshed from one benchmark without losing the others' rows."""
from __future__ import annotations

import json

import benchmarks._common
from benchmarks import bench_uncertainty, readme
from benchmarks._common import readme_row
from dlum.uncertainty import DEFAULT_VIEWS
from tests.checkpoints import write_test_checkpoint


def test_uncertainty_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks._common, "RESULTS_DIR", tmp_path)  # not benchmarks/results
    checkpoint = write_test_checkpoint(tmp_path / "ckpt")
    assert bench_uncertainty.main(["--checkpoint", str(checkpoint), "--repeats", "1",
                                   "--views", "1", str(DEFAULT_VIEWS)]) == 0
    payload = json.loads((tmp_path / "uncertainty.json").read_text())
    assert payload["benchmark"] == "uncertainty" and payload["machine"]["cpu_usable"] >= 1
    rows = payload["rows"]
    assert [r.get("views") for r in rows] == [None, 1, DEFAULT_VIEWS]
    marked = [r for r in rows if "readme" in r]
    assert len(marked) == 1 and marked[0]["views"] == DEFAULT_VIEWS
    assert marked[0]["readme"]["target_s"] == bench_uncertainty.TARGET_EXTRA_S
    what = marked[0]["readme"]["what"]  # the default level is the views' range
    assert what.startswith("per-case uncertainty: TTA range ") and "same range: yes" in what
    assert "%" not in what and "interval" not in what
    assert all(r["median_s"] > 0 and r.get("reproducible", True) for r in rows)
    assert all(r["low"] <= r["high"] for r in rows[1:])


def test_keep_absent_keeps_the_rows_of_benchmarks_not_run_here(tmp_path):
    machine = {"cpu_model": "CPU", "cpu_usable": 2, "versions": {"torch": "9"}, "date": "2026-01-02"}
    page = tmp_path / "README.md"
    page.write_text(f"x\n{readme.START}\n| what | figure | target | machine |\n|---|---|---|---|\n"
                    "| one pair | 0.3 s |  | old |\n| finder | 0.1 s |  | old |\n"
                    f"| DeLong | 0.2 s |  | old |\n{readme.END}\ny\n")
    fresh = [{"benchmark": "x", "machine": machine, "rows": [
        readme_row({"task": "a", "median_s": 0.05}, "finder"),
        readme_row({"task": "b", "median_s": 1.2}, "TTA range", target_s=1.5)]}]
    assert readme.update_readme(page, fresh, keep_absent=True)
    rows = [r for r in page.read_text().splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == ["one pair", "finder", "TTA range", "DeLong"]
    assert "| finder | 0.05 s |" in rows[1] and "old" in rows[0] and "met (target 1.5 s)" in rows[2]
    readme.update_readme(page, fresh)  # without it, the table holds this run's rows only
    assert "one pair" not in page.read_text() and "DeLong" not in page.read_text()
