"""dlum.localize: the ultrasound lesion finder, its checkpoint, and `locate`, `predict --us-roi
auto`, `evaluate --find-lesions` on the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dlum import cli
from dlum.card import CardError
from dlum.errors import CheckpointError, InputError
from dlum.localize import (FINDER_ARCH, Finding, box_iou, confidence, dice,
                           finding_from_probability, largest_component_box, load_finder, mask_box,
                           new_finder, save_finder)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "us-finder-v1"
#: Input side of the random test finder: small, so that CPU tests stay fast.
SIZE = 32


@pytest.fixture(scope="module")
def random_finder():
    return new_finder(pretrained=False, input_size=SIZE)


@pytest.fixture(scope="module")
def saved(random_finder, tmp_path_factory):
    """The random finder saved as a checkpoint folder."""
    return save_finder(random_finder, tmp_path_factory.mktemp("finder") / "f", {"name": "random"})


def _saved_with(random_finder, folder: Path, **sections) -> Path:
    return save_finder(random_finder, folder, {"name": folder.name, **sections})


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _noise(height=48, width=64, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width)) * 255).astype(np.float32)


# ------------------------------------------------------------------------ boxes and confidence
def test_largest_component_box_keeps_the_biggest_8_connected_region():
    mask = np.zeros((20, 30), bool)
    mask[2:5, 3:6] = True  # 9 pixels
    mask[10:18, 12:20] = True  # 64 pixels
    mask[18, 20] = True  # touches the big one diagonally: 8-connected
    box, component = largest_component_box(mask)
    assert box == (12, 10, 21, 19)
    assert component.sum() == 65 and not component[2:5, 3:6].any()
    assert largest_component_box(np.zeros((4, 4), bool)) is None
    assert mask_box(mask) == (3, 2, 21, 19) and mask_box(np.zeros((3, 3))) is None


def test_a_probability_map_becomes_a_box_in_image_pixels_with_its_score():
    p = np.zeros((16, 16), np.float32)
    p[4:8, 2:7] = 0.9
    finding = finding_from_probability(p, (32, 64), mask_threshold=0.5, min_score=0.5,
                                       plausible_area=(0.01, 0.5))
    assert finding.box == (8, 8, 28, 16)  # cells scale by 4 across, 2 down
    assert finding.score == pytest.approx(0.9) and finding.reason is None
    assert not finding.low_confidence
    # a second region as strong halves the dominance; the note says the score is low
    p[10:14, 10:15] = 0.9
    p[10, 15] = 0.9  # one pixel more: the largest
    two = finding_from_probability(p, (16, 16), mask_threshold=0.5, min_score=0.5,
                                   plausible_area=(0.01, 0.5))
    assert two.box == (10, 10, 16, 14) and two.score == pytest.approx(0.9 * 21 / 41, abs=1e-4)
    assert two.low_confidence and "low confidence" in two.reason
    # nothing above the threshold: no box, a reason, score 0
    none = finding_from_probability(np.full((8, 8), 0.2), (10, 10), mask_threshold=0.5)
    assert none.box is None and none.score == 0 and "threshold" in none.reason
    assert none.as_dict() == {"box": None, "score": 0.0, "reason": none.reason}


def test_confidence_falls_for_implausible_sizes():
    p = np.full((10, 10), 0.8, np.float32)
    everything = np.ones((10, 10), bool)
    assert confidence(p, everything, everything, (0.01, 0.5)) == pytest.approx(0.8 * 0.5)
    one = np.zeros((10, 10), bool)
    one[0, 0] = True
    assert confidence(p, one, one, (0.02, 0.5)) == pytest.approx(0.8 * 0.5)


def test_dice_and_box_iou():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1 and dice(a, ~a) == 0 and dice(np.zeros(3), np.zeros(3)) == 1
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou(None, (0, 0, 1, 1)) == 0


# -------------------------------------------------------------------------------------- the API
def test_a_random_finder_gives_a_box_inside_the_image(random_finder):
    for shape in ((48, 64), (70, 33)):
        finding = random_finder.find(_noise(*shape))
        assert isinstance(finding, Finding) and 0.0 <= finding.score <= 1.0
        assert finding.min_score == random_finder.min_score
        assert finding.low_confidence == (finding.box is None or finding.score < finding.min_score)
        if finding.box is not None:
            x0, y0, x1, y1 = finding.box
            assert all(isinstance(v, int) for v in finding.box)
            assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
        d = finding.as_dict()
        assert set(d) == {"box", "score", "reason"} and json.dumps(d)
    assert random_finder.input_size == SIZE and random_finder.card["arch"] == FINDER_ARCH


def test_nothing_found_says_why(random_finder, tmp_path):
    blank = random_finder.find(np.full((20, 20), 7.0))
    assert blank.box is None and blank.low_confidence and "blank" in blank.reason
    strict = load_finder(_saved_with(random_finder, tmp_path / "strict",
                                     postprocess={"mask_threshold": 1.0}))
    finding = strict.find(_noise())
    assert finding.box is None and finding.score == 0 and "threshold" in finding.reason


def test_the_finder_refuses_what_is_not_a_grey_image(random_finder):
    for bad in (np.zeros((4, 4, 3)), np.zeros((0, 5)), np.array([[1.0, np.nan]])):
        with pytest.raises(InputError):
            random_finder.find(bad)


def test_save_and_load_round_trip_through_safetensors(random_finder, saved, monkeypatch):
    from safetensors import safe_open

    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("encoder.") for k in keys)  # the encoder is not stored
    assert (saved / "model.safetensors").stat().st_size < 2_000_000
    loaded = load_finder(saved)
    image = _noise(seed=3)
    assert np.array_equal(loaded.probability(image), random_finder.probability(image))
    assert loaded.find(image) == random_finder.find(image)
    assert loaded.card["name"] == "random" and loaded.min_score == random_finder.min_score
    monkeypatch.setenv("DLUM_FINDER", str(saved))
    assert load_finder().name == "random"


def test_a_card_only_save_leaves_the_weights_file_untouched(random_finder, tmp_path):
    """What scripts/finder_side_by_side.py --update-card does: the card changes, the weights'
    bytes do not."""
    folder = _saved_with(random_finder, tmp_path / "f")
    before = (folder / "model.safetensors").read_bytes()
    finder = load_finder(folder)
    save_finder(finder, folder, {**finder.card, "side_by_side": {"rows": 3}}, weights=False)
    assert (folder / "model.safetensors").read_bytes() == before
    assert load_finder(folder).card["side_by_side"] == {"rows": 3}


def test_a_damaged_or_missing_finder_is_a_checkpoint_error(saved, tmp_path):
    import shutil

    with pytest.raises(CheckpointError, match="not found"):
        load_finder(tmp_path / "nowhere")
    truncated = Path(shutil.copytree(saved, tmp_path / "truncated"))
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_finder(truncated)
    no_weights = Path(shutil.copytree(saved, tmp_path / "no-weights"))
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_finder(no_weights)
    for name, edit, message in (("arch", {"arch": "dlum"}, "not 'us-lesion-finder'"),
                                ("size", {"input": {"size": 30}}, "multiple of 16"),
                                ("score", {"confidence": {"min_score": 2}}, "min_score")):
        bad = Path(shutil.copytree(saved, tmp_path / name))
        card = json.loads((bad / "card.json").read_text())
        card.update(edit)
        (bad / "card.json").write_text(json.dumps(card))
        with pytest.raises(CardError, match=message):
            load_finder(bad)
    (bad / "card.json").write_text("{")
    with pytest.raises(CardError, match="JSON"):
        load_finder(bad)
    wider = Path(shutil.copytree(saved, tmp_path / "wider"))
    card = json.loads((wider / "card.json").read_text())
    card["model"]["decoder_widths"] = [8, 8, 8]
    (wider / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_finder(wider)


# ------------------------------------------------------------------------------ the command line
def test_locate_prints_one_json_line_per_file_and_fails_after_a_bad_one(saved, tmp_path, capsys):
    good = _png(tmp_path / "us.png", _noise())
    blank = _png(tmp_path / "blank.png", np.full((30, 30), 90))
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert cli.main(["locate", "--us", str(good), str(bad), str(blank), "--finder", str(saved)]) == 2
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(bad), str(blank)]
    assert set(lines[0]) >= {"box", "score", "low_confidence"}
    assert "error" in lines[1] and "notes.txt" in lines[1]["error"]
    assert lines[2]["box"] is None and "blank" in lines[2]["reason"]
    assert "1 of 3" in err
    assert cli.main(["locate", "--us", str(good), "--finder", str(tmp_path / "none")]) == 2
    assert "lesion finder folder not found" in capsys.readouterr().err


def test_predict_us_roi_auto_refuses_a_low_confidence_box(random_finder, tmp_path, capsys):
    from tests.checkpoints import write_test_checkpoint

    ckpt = write_test_checkpoint(tmp_path / "ckpt")
    unsure = _saved_with(random_finder, tmp_path / "unsure", confidence={"min_score": 1.0})
    us = _png(tmp_path / "us.png", _noise())
    assert cli.main(["predict", "--checkpoint", str(ckpt), "--us", str(us), "--us-roi", "auto",
                     "--finder", str(unsure), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "--us-roi x0,y0,x1,y1" in err and ("not confident" in err or "found no lesion" in err)
    assert cli.main(["predict", "--checkpoint", str(ckpt), "--mg", str(us), "--us-roi", "auto"]) == 2
    assert "give --us FILE" in capsys.readouterr().err


def test_evaluate_find_lesions_records_where_each_box_came_from(random_finder, tmp_path, capsys):
    from dlum.data.manifest import read_cohort, write_cohort
    from dlum.data.synthetic import make_phantom_cohort
    from tests.checkpoints import write_test_checkpoint

    table = make_phantom_cohort(tmp_path / "cohort", n=3, seed=1, size=64)
    cohort = read_cohort(table)
    blank = _png(tmp_path / "cohort" / "blank.png", np.full((64, 64), 50))
    cohort.loc[1:, ["us_x0", "us_y0", "us_x1", "us_y1"]] = np.nan
    cohort.loc[2, "us_image"] = str(blank)
    write_cohort(cohort, table)
    finder = _saved_with(random_finder, tmp_path / "open", postprocess={"mask_threshold": 0.0})
    ckpt = write_test_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "p.csv"
    args = ["evaluate", "--checkpoint", str(ckpt), "--cohort", str(table), "--out", str(out),
            "--find-lesions", "--finder", str(finder), "--precision", "fp32", "--quiet"]
    assert cli.main(args) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame["us_roi_source"].tolist() == ["expert", "found", "whole"]
    assert frame.loc[0, "us_find_score"] == "" and 0 <= float(frame.loc[1, "us_find_score"]) <= 1
    assert frame.loc[1, "us_roi"] == "0,0,64,64" and frame.loc[2, "us_roi"] == ""
    assert "found by open: 1" in capsys.readouterr().out
    assert cli.main(args) == 2  # the output exists: --force is needed
    assert "--force" in capsys.readouterr().err
    assert cli.main([*args, "--force", "--crops", str(tmp_path / "x.npz")]) == 2
    assert "leave out --crops" in capsys.readouterr().err


# ------------------------------------------------------------------------- the shipped finder
def test_the_shipped_finder_is_small_and_its_card_meets_the_acceptance():
    card = json.loads((SHIPPED / "card.json").read_text())
    assert (SHIPPED / "model.safetensors").stat().st_size < 5_000_000
    for split in ("test", "external"):
        assert card["results"][split]["box_iou_median"] >= 0.6, split
    assert card["training"]["seconds"] < 45 * 60
    assert 0 < card["confidence"]["min_score"] < 1


def test_predict_us_roi_auto_finds_a_real_lesion(shared_data, capsys):
    from dlum.data.public import read_busbra, tumour_mask_path
    from dlum.finder_training import read_mask

    from dlum.data.pairing import split_patients

    busbra = read_busbra(shared_data)
    busbra["split"] = split_patients(busbra, 0, strata=("dataset",))  # as the public cohort
    row = busbra[busbra["split"] == "test"].sort_values("lesion_id").iloc[0]
    truth = mask_box(read_mask(tumour_mask_path("BUS-BRA", row["image"])))
    assert cli.main(["predict", "--checkpoint", str(REPO / "checkpoints" / "dlum-public-v2"),
                     "--us", row["image"], "--us-roi", "auto"]) == 0
    out = json.loads(capsys.readouterr().out)
    found = out["us_roi_found"]
    assert out["us_roi"] == found["box"] and found["finder"] == "us-finder-v1"
    assert box_iou(found["box"], truth) >= 0.5 and 0 < found["score"] <= 1
    assert out["p_us_head"] is not None and out["whole_image"] == []


# ---------------------------------------------------------------------------------- training
def test_the_low_confidence_threshold_separates_good_from_poor_boxes():
    from dlum.finder_training import calibrate_min_score

    scores = [0.2, 0.3, 0.6, 0.8, 0.9, 0.95]
    ious = [0.1, 0.6, 0.2, 0.7, 0.8, 0.9]
    c = calibrate_min_score(scores, ious)
    assert c["min_score"] == 0.8 and c["poor_flagged"] == 1.0 and c["good_flagged"] == 0.25
    assert c["validation_good"] == 4 and c["validation_poor"] == 2
    assert calibrate_min_score([0.5, 0.9], [0.8, 0.9])["min_score"] == 0.0  # nothing poor


def test_augmentation_moves_image_and_mask_together():
    import torch

    from dlum.finder_training import FinderTrainConfig, _Augment

    mask = np.zeros((64, 64), np.float32)
    mask[10:30, 20:50] = 1
    augment = _Augment(FinderTrainConfig(), torch.Generator().manual_seed(0))
    for _ in range(5):
        unit, moved = augment(mask.copy(), mask.copy())
        assert moved.shape == mask.shape and 0 <= unit.min() and unit.max() <= 1
        assert np.mean((unit > 0.5) != (moved > 0.5)) < 0.01  # the same geometry for both


def test_the_finder_uses_the_public_cohorts_splits(shared_data):
    from dlum.data.pairing import build_public_cohort
    from dlum.finder_training import finder_lesions

    lesions = finder_lesions(shared_data)
    cohort = build_public_cohort(shared_data)
    split_of = dict(zip(cohort["us_lesion_id"], cohort["split"]))
    assert all(split_of[i] == s for i, s in zip(lesions["lesion_id"], lesions["split"]))
    assert lesions.groupby("split")["patient_id"].nunique().sum() == lesions["patient_id"].nunique()
    assert (lesions["split"] == "external").sum() == 252 and lesions["mask"].map(Path).map(Path.is_file).all()
