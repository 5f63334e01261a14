"""benchmarks.bench_app: one quick pass over every dashboard page with the small test checkpoint."""
from __future__ import annotations

import json
import math

import pytest

import benchmarks._common
from benchmarks import bench_app
from tests.app.conftest import app_checkpoint  # noqa: F401  (the small test checkpoint fixture)

pytestmark = pytest.mark.slow


def test_bench_app_times_every_page(app_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(benchmarks._common, "RESULTS_DIR", tmp_path)  # not benchmarks/results
    assert bench_app.main(["--repeats", "1", "--warmup", "0",
                           "--checkpoint", str(app_checkpoint)]) == 0
    result = json.loads((tmp_path / "app.json").read_text())
    assert result["benchmark"] == "app" and result["repeats"] == 1
    rows = {r["task"]: r for r in result["rows"]}
    pages = [name for name, _ in bench_app.PAGES]
    assert [f"first render: {name}" for name in pages] == list(rows)[:len(pages)]
    assert len(rows) == len(pages) + 1  # and the example case with a live inference
    for row in rows.values():
        assert math.isfinite(row["median_s"]) and row["median_s"] > 0
        assert row["readme"]["what"].startswith("dashboard first render")
    assert math.isfinite(result["model_load_first_render_s"])


def test_bench_app_refuses_a_page_that_fails(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    monkeypatch.setattr(benchmarks._common, "RESULTS_DIR", tmp_path / "results")
    assert bench_app.main(["--repeats", "1", "--warmup", "0", "--checkpoint", str(broken)]) == 1
    assert "showed an error" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
