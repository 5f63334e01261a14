"""The statistics, inference and training benchmarks run end to end at toy sizes and write their
results with the machine they came from (speed itself is measured by the scripts, not tested)."""
from __future__ import annotations

import json
import math

import pytest
import torch

import benchmarks._common
from benchmarks import bench_inference, bench_precision, bench_stats, bench_training
from dlum.checkpoint import save_checkpoint
from dlum.networks import DLUM
from dlum.runtime import fast_dtype


@pytest.fixture()
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks._common, "RESULTS_DIR", tmp_path)  # not benchmarks/results
    return tmp_path


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    card = {"name": "small", "model": model.config(), "arch": "dlum",
            "input": {"size": 64, "imagenet_normalisation": False},
            "training": {"train_rows": 40}}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "small", model, card)


def _load(folder, name):
    payload = json.loads((folder / f"{name}.json").read_text())
    assert payload["benchmark"] == name and payload["machine"]["cpu_usable"] >= 1
    return payload


def test_stats_benchmark(results):
    assert bench_stats.main(["--repeats", "1", "--warmup", "0", "--max-exp", "4"]) == 0
    rows = _load(results, "stats")["rows"]
    delong = [r for r in rows if r["task"].startswith("roc_auc_ci")]
    assert [r["n"] for r in delong] == [1000, 10000]
    assert delong[-1]["readme"]["target_s"] == bench_stats.TARGET_DELONG_S
    assert all(r["median_s"] > 0 for r in rows)


@pytest.mark.slow
def test_inference_benchmark(results, small_checkpoint):
    assert bench_inference.main(["--checkpoint", str(small_checkpoint), "--repeats", "1",
                                 "--warmup", "0", "--batches", "2", "--no-compile"]) == 0
    payload = _load(results, "inference")
    rows = {r["task"]: r for r in payload["rows"]}
    assert payload["device"]["type"] == "cpu"
    for layout in ("NCHW", "channels_last"):
        assert rows[f"one pair → probabilities (fp32, {layout}, eager)"]["median_s"] > 0
    bf16 = rows["one pair → probabilities (bf16 autocast, channels_last, eager)"]
    assert bf16["max_abs_diff"] < 0.05  # bf16 agrees with fp32 to its precision
    batched = [r for r in payload["rows"] if r["task"].startswith("batched")]
    bf16_default = fast_dtype(torch.device("cpu")) == torch.bfloat16  # then fp32 is compared too
    assert len(batched) == (2 if bf16_default else 1)
    assert [("float32" in r["task"]) for r in batched] == ([False, True] if bf16_default else [True])
    for r in batched:
        assert math.isclose(r["pairs_per_s"], 2 / r["median_s"])
        assert "readme" in r and "pairs/s" in r["readme"]["figure"]
    cams = rows["10 CAMs (Grad-CAM, both branches, fp32)"]
    assert cams["readme"]["target_s"] == bench_inference.TARGET_CAMS_S


def test_training_benchmark(results, small_checkpoint):
    assert bench_training.main(["--batch-size", "2", "--size", "32", "--repeats", "1",
                                "--warmup", "0", "--checkpoint", str(small_checkpoint)]) == 0
    (row,) = _load(results, "training")["rows"]
    assert row["device"] == "cpu" and row["pairs_per_s"] == pytest.approx(2 / row["median_s"])
    assert row["epoch_pairs"] == 40 and row["epoch_s"] == pytest.approx(20 * row["median_s"])
    assert "readme" not in row  # toy sizes never reach the README table


def test_train_step_learns(small_checkpoint):
    """The benchmarked step is the real one: a few steps on one batch lower its loss."""
    from dlum.training import TrainConfig, _build, loss_and_optimizer, train_step

    config = TrainConfig(pretrained=False, lr=1e-3, device="cpu", precision="fp32", input_size=32)
    torch.manual_seed(0)
    model = _build(config).train()
    criterion, optimizer = loss_and_optimizer(model, config)
    us, mg = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    kw = dict(device=torch.device("cpu"), dtype=torch.float32)
    first = train_step(model, "dlum", criterion, optimizer, us, mg, y, **kw).total.item()
    for _ in range(5):
        last = train_step(model, "dlum", criterion, optimizer, us, mg, y, **kw).total.item()
    assert last < first


@pytest.mark.slow
def test_precision_benchmark_compares_bf16_with_fp32(results, small_checkpoint, tmp_path):
    from dlum.data.synthetic import make_phantom_cohort

    table = make_phantom_cohort(tmp_path / "cohort", n=30, seed=2, size=64)
    assert bench_precision.main(["--checkpoint", str(small_checkpoint), "--cohort", str(table),
                                 "--precision", "bf16", "--batch-size", "4"]) == 0
    agree, speed = _load(results, "precision")["rows"]
    assert agree["reference"] == "computed here"  # the small checkpoint ships no predictions.csv
    assert agree["n"] >= 1 and 0 <= agree["median_abs_diff"] <= agree["max_abs_diff"] < 0.05
    assert 0 <= agree["decisions_differ"] <= agree["n"] and 0 <= agree["delong_p"] <= 1
    assert speed["pairs_per_s"] == pytest.approx(agree["n"] / speed["median_s"])
    assert "readme" not in agree  # only the public cohort's test split reaches the README


def test_precision_benchmark_skips_without_a_cohort_or_native_bf16(results, small_checkpoint,
                                                                   tmp_path, monkeypatch, capsys):
    missing = ["--checkpoint", str(small_checkpoint), "--cohort", str(tmp_path / "none.csv")]
    assert bench_precision.main([*missing, "--precision", "bf16"]) == 0
    assert "no prepared cohort" in capsys.readouterr().out
    monkeypatch.setattr("dlum.runtime.fast_dtype", lambda device, requested="auto": torch.float32)
    assert bench_precision.main(missing) == 0
    assert "bf16 is not the default" in capsys.readouterr().out
    assert not (results / "precision.json").exists()
