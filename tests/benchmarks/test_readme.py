"""benchmarks.readme: the README speed table is built from result files, never typed in."""
from __future__ import annotations

import json

import pytest

from benchmarks import readme
from benchmarks._common import readme_row

MACHINE = {"cpu_model": "Test CPU", "cpu_usable": 2, "versions": {"torch": "9.9"},
           "date": "2026-01-02T03:04:05+00:00"}


def _payload(name, rows, **extra):
    return {"benchmark": name, "machine": MACHINE, "rows": rows, **extra}


def test_table_rows_targets_and_machines():
    fast = readme_row({"task": "a", "median_s": 0.25}, "one pair", target_s=0.5)
    slow = readme_row({"task": "b", "median_s": 9.5}, "10 CAMs", target_s=8.0)
    gpu = readme_row({"task": "c", "median_s": 0.1, "pairs_per_s": 3000.0}, "batched",
                     "3,000 pairs/s", device="cuda")
    unmarked = {"task": "d", "median_s": 1.0}
    table = readme.speed_table([
        _payload("inference", [fast, slow, unmarked]),
        _payload("inference-cuda", [gpu], device={"name": "NVIDIA H100 80GB HBM3", "torch": "2.11.0"}),
    ])
    lines = table.splitlines()
    assert len(lines) == 2 + 3  # header, rule, the three marked rows
    assert "| one pair | 0.25 s | met (target 0.5 s) | Test CPU, 2 cores; torch 9.9; 2026-01-02 |" in lines
    assert "missed by 1.50 s" in lines[3] and "10 CAMs" in lines[3]
    assert lines[4].startswith("| batched | 3,000 pairs/s |  | NVIDIA H100 80GB HBM3; torch 2.11.0")
    assert "no benchmark results yet" in readme.speed_table([])


def test_machine_names_the_cpu_features_that_decide_speed():
    from benchmarks._common import cpu_features

    assert cpu_features({"avx2", "fma"}) == "AVX2"
    assert cpu_features({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512, AVX512-BF16"
    assert cpu_features({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) == "AVX-512, AVX512-BF16, AMX"
    assert cpu_features(set()) == ""
    payload = {"machine": {**MACHINE, "cpu_features": "AVX2"}}
    assert readme.machine_text(payload, "cpu") == "Test CPU (AVX2), 2 cores; torch 9.9; 2026-01-02"


def test_results_override_recorded_and_bad_files_are_skipped(tmp_path):
    results, recorded = tmp_path / "results", tmp_path / "recorded"
    results.mkdir()
    recorded.mkdir()
    (recorded / "inference.json").write_text(json.dumps(_payload("inference", [{"task": "old"}])))
    (recorded / "training-cuda.json").write_text(json.dumps(_payload("training-cuda", [])))
    (results / "inference.json").write_text(json.dumps(_payload("inference", [{"task": "new"}])))
    (results / "stats.json").write_text(json.dumps(_payload("stats", [])))
    (results / "half.json").write_text("{")
    found = readme.load_results(results, recorded)
    assert [p["benchmark"] for p in found] == ["inference", "stats", "training-cuda"]
    assert found[0]["rows"] == [{"task": "new"}]


def test_update_readme_rewrites_only_between_the_markers(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(f"# T\n\nbefore\n{readme.START}\nstale\n{readme.END}\nafter\n")
    row = readme_row({"task": "a", "median_s": 1.0}, "thing")
    assert readme.update_readme(page, [_payload("stats", [row])]) is True
    text = page.read_text()
    assert "stale" not in text and "| thing | 1 s |" in text
    assert text.startswith("# T\n\nbefore\n") and text.endswith(f"{readme.END}\nafter\n")
    assert readme.update_readme(page, [_payload("stats", [row])]) is False  # unchanged
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="speed:start"):
        readme.update_readme(page, [])
    assert page.read_text() == "# no markers\n"


def test_the_project_readme_has_a_speed_section():
    text = (readme.REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(readme.START, 1)[1].split(readme.END, 1)[0]
    assert section.strip().startswith("| what | figure | target | machine |")
