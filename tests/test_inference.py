"""Predictor on a small checkpoint, and the shipped checkpoint against its predictions.csv."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlum.checkpoint import save_checkpoint
from dlum.data.manifest import read_cohort
from dlum.data.synthetic import make_phantom_cohort
from dlum.decision import decide
from dlum.errors import CheckpointError, InputError
from dlum.inference import PREDICTION_COLUMNS, Predictor
from dlum.networks import DLUM

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "dlum-public-v2"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    folder = tmp_path_factory.mktemp("ckpt")
    card = {"name": "small", "model": model.config(), "arch": "dlum",
            "input": {"size": 64, "imagenet_normalisation": False},
            "operating_point": {"threshold": 0.4}}
    save_checkpoint(folder, model, card)
    return folder


@pytest.fixture(scope="module")
def phantom_table(tmp_path_factory):
    return make_phantom_cohort(tmp_path_factory.mktemp("ph"), n=6, seed=1, size=64)


def test_pair_one_modality_and_cohort(small_checkpoint, phantom_table):
    predictor = Predictor(small_checkpoint, device="cpu")
    cohort = read_cohort(phantom_table)
    row = cohort.iloc[0]
    from dlum.data.crops import row_box

    boxes = {"us_box": row_box(row, "us"), "mg_box": row_box(row, "mg")}
    pair = predictor.predict_pair(us=row["us_image"], mg=row["mg_image"], **boxes)
    assert pair.mode == "pair" and 0 <= pair.p_dlum <= 1 and len(pair.p_us_blocks) == 5
    assert pair.whole_image == ()
    decision = decide(pair, predictor.card)
    assert decision.threshold == 0.4 and decision.biopsy_recommended == (pair.p_dlum >= 0.4)
    us_only = predictor.predict_pair(us=row["us_image"], us_box=boxes["us_box"])
    assert us_only.mode == "us-only" and us_only.p_dlum is None
    assert us_only.p_us_head == pytest.approx(pair.p_us_head, abs=1e-6)
    whole = predictor.predict_pair(us=row["us_image"])
    assert whole.whole_image == ("us",) and not decide(whole, predictor.card).made
    frame = predictor.predict_cohort(cohort, progress=False)
    assert list(frame.columns) == PREDICTION_COLUMNS and len(frame) == len(cohort)
    assert frame.loc[0, "p_dlum"] == pytest.approx(pair.p_dlum, abs=1e-5)
    # bytes in, the same answer out (uploads stay in memory)
    data = Path(row["us_image"]).read_bytes()
    assert predictor.predict_pair(us=data, us_box=boxes["us_box"]).p_us_head == pytest.approx(us_only.p_us_head, abs=1e-6)


def _compiler_present() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _compiler_present(), reason="torch.compile (inductor) needs a C++ compiler")
def test_compiled_pair_path_agrees_with_eager(small_checkpoint, phantom_table):
    """At the precision this machine serves with (bf16 where the CPU has it natively, else fp32):
    one compile, the one the app would make here. Compiled kernels (batch norm folded into the
    convolutions) round differently: within fp32's precision in fp32, within bf16's in bf16."""
    from dlum.runtime import fast_dtype

    precision = "bf16" if fast_dtype(torch.device("cpu")) == torch.bfloat16 else "fp32"
    tol = {"fp32": 1e-5, "bf16": 2e-3}[precision]
    cohort = read_cohort(phantom_table)
    row = cohort.iloc[1]
    eager = Predictor(small_checkpoint, device="cpu", precision=precision)
    fast = Predictor(small_checkpoint, device="cpu", precision=precision)
    assert not fast.compiled and fast.wait_compiled() is False  # nothing started yet
    fast.compile_in_background()
    assert fast.wait_compiled(timeout=300) and fast.compiled
    a = eager.predict_pair(us=row["us_image"], mg=row["mg_image"])
    b = fast.predict_pair(us=row["us_image"], mg=row["mg_image"])
    assert b.p_dlum == pytest.approx(a.p_dlum, abs=tol)
    assert np.allclose(b.p_us_blocks, a.p_us_blocks, atol=tol)
    assert np.allclose(b.p_mg_blocks, a.p_mg_blocks, atol=tol)
    # batches and single branches keep to the eager model
    assert fast.predict_pair(us=row["us_image"]).mode == "us-only"


def test_failed_compile_keeps_the_eager_model(small_checkpoint, phantom_table, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    predictor = Predictor(small_checkpoint, device="cpu")
    assert predictor.compile_pair_path() is False and not predictor.compiled
    assert "no C++ compiler found" in caplog.text
    row = read_cohort(phantom_table).iloc[0]
    assert 0 <= predictor.predict_pair(us=row["us_image"], mg=row["mg_image"]).p_dlum <= 1


def test_bad_inputs(small_checkpoint, tmp_path):
    predictor = Predictor(small_checkpoint, device="cpu")
    with pytest.raises(InputError):
        predictor.predict_pair()
    bad = tmp_path / "scan.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="scan.png"):
        predictor.predict_pair(us=str(bad))
    with pytest.raises(CheckpointError):
        Predictor(tmp_path, device="cpu")


def test_predict_cli_prints_one_json_object(small_checkpoint, phantom_table, tmp_path):
    cohort = read_cohort(phantom_table)
    row = cohort.iloc[1]
    cmd = [sys.executable, "-m", "dlum", "predict", "--checkpoint", str(small_checkpoint),
           "--us", row["us_image"], "--mg", row["mg_image"], "--us-roi", "4,4,50,50",
           "--cam", str(tmp_path / "cams")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert 0 <= out["p_dlum"] <= 1 and out["us_roi"] == [4, 4, 50, 50]
    assert len(out["cam_files"]) == 10 and all(Path(p).is_file() for p in out["cam_files"])
    bad = subprocess.run([sys.executable, "-m", "dlum", "predict", "--checkpoint",
                          str(small_checkpoint), "--us", str(tmp_path / "missing.png")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "missing.png" in bad.stderr


def test_evaluate_from_the_crops_beside_the_table_equals_evaluate_from_the_images(
        small_checkpoint, tmp_path, capsys):
    from dlum import cli
    from dlum.data.crops import extract_crops

    table = make_phantom_cohort(tmp_path / "cohort", n=6, seed=1, size=64)
    run = ["evaluate", "--checkpoint", str(small_checkpoint), "--cohort", str(table),
           "--device", "cpu"]
    assert cli.main([*run, "--out", str(tmp_path / "images.csv"), "--quiet"]) == 0
    assert cli.main([*run, "--out", str(tmp_path / "images_test.csv"), "--split", "test", "--quiet"]) == 0
    extract_crops(read_cohort(table), progress=False).save(table.parent / "crops.npz")
    for folder in ("us", "mg"):  # the images are not needed any more
        (table.parent / folder).rename(tmp_path / folder)
    capsys.readouterr()
    assert cli.main([*run, "--out", str(tmp_path / "crops.csv")]) == 0
    assert "using the crops in" in capsys.readouterr().err
    assert cli.main([*run, "--out", str(tmp_path / "crops_test.csv"), "--split", "test", "--quiet"]) == 0
    for a, b in (("images.csv", "crops.csv"), ("images_test.csv", "crops_test.csv")):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / a), pd.read_csv(tmp_path / b),
                                      check_exact=True)
    assert 0 < len(pd.read_csv(tmp_path / "crops_test.csv")) < 6


@pytest.mark.slow
def test_shipped_checkpoint_reproduces_its_predictions(shared_data):
    """`evaluate` (from the original images) agrees with the shipped predictions.csv to 1e-3."""
    from dlum.data.pairing import build_public_cohort

    shipped = pd.read_csv(SHIPPED / "predictions.csv")
    card = json.loads((SHIPPED / "card.json").read_text())
    assert card["data"]["pairing"] == "pseudo"
    assert sum(card["metrics"][s]["all"]["n"] for s in card["metrics"]) == len(shipped)
    cohort = build_public_cohort(shared_data, seed=0)
    sample = shipped.sample(8, random_state=0)
    rows = cohort[cohort["case_id"].isin(sample["case_id"])]
    assert len(rows) == 8 and set(rows["split"]) <= {"test", "external"}
    predictor = Predictor(SHIPPED, device="cpu", precision="fp32")
    ours = predictor.predict_cohort(rows, progress=False).set_index("case_id")
    theirs = sample.set_index("case_id").loc[ours.index]
    for column in ("p_dlum", "p_us_head", "p_mg_head"):
        np.testing.assert_allclose(ours[column], theirs[column], atol=1e-3)


@pytest.mark.parametrize("value", [0, 255])
def test_a_constant_image_or_box_is_refused_with_a_message(small_checkpoint, value):
    predictor = Predictor(small_checkpoint, device="cpu")
    blank = np.full((80, 90), value, dtype=np.uint8)
    with pytest.raises(InputError, match="ultrasound image is constant"):
        predictor.predict_pair(us=blank)
    textured = np.add.outer(np.arange(80), np.arange(90)).astype(np.uint8)
    textured[10:30, 10:40] = 7
    with pytest.raises(InputError, match="mammography image inside the lesion box is constant"):
        predictor.predict_pair(mg=textured, mg_box=(10, 10, 40, 30))
    assert predictor.predict_pair(mg=textured, mg_box=(5, 5, 60, 50)).p_mg_head is not None
