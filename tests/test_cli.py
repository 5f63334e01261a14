"""dlum.cli: the command-line frame, and `python -m dlum prepare` on the public data."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlum import cli
from dlum.errors import InputError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ the frame
def test_help_lists_prepare(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "prepare" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_registered_command_runs_and_errors_become_messages(capsys):
    seen = {}

    def add(parser):
        parser.add_argument("--fail", action="store_true")

    def run(args):
        if args.fail:
            raise InputError("that file is no image", "x.png")
        seen["ran"] = True
        return 0

    cli.register(cli.Command("dummy-test", "a test command", add, run))
    try:
        assert cli.main(["dummy-test"]) == 0 and seen["ran"]
        assert cli.main(["dummy-test", "--fail"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "dlum dummy-test: error: x.png: that file is no image"
        assert "Traceback" not in err
    finally:
        cli.COMMANDS.pop("dummy-test")


def test_prepare_on_a_missing_folder_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dlum", "prepare", "--data", str(tmp_path / "nowhere"),
         "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "data folder not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------ prepare, real data
@pytest.fixture(scope="session")
def prepared(shared_data, tmp_path_factory):
    """Run the real `python -m dlum prepare` once (under a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("prepared")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dlum", "prepare", "--data", str(shared_data), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result, seconds


@pytest.mark.slow
def test_prepare_runs_in_time_and_prints_the_summary(prepared):
    out, result, seconds = prepared
    assert seconds < 600
    text = result.stdout
    assert "NOT same-patient pairs" in text
    assert "Cases by split x pathology x subgroup" in text
    for word in ("train", "validation", "test", "benign", "malignant", "concordant", "discordant",
                 "distinct US images", "distinct MG images"):
        assert word in text
    assert "Crops: 2127 US + 95 MG exact native-resolution expanded-ROI crops (uint8) in crops.npz" in text
    assert "crops" in result.stderr  # the progress bar


@pytest.mark.slow
def test_prepare_crops_are_small_and_load(prepared):
    from dlum.data.crops import CropSet
    from dlum.data.manifest import read_cohort

    out, _, _ = prepared
    total = sum(p.stat().st_size for p in out.iterdir())
    assert total < 60 * 2**20
    summary = json.loads((out / "prepare_summary.json").read_text())
    cohort = read_cohort(out / "cohort.csv", check_images=False)
    crops = CropSet.load(out / "crops.npz")
    assert len(cohort) == len(crops) == 2127
    np.testing.assert_array_equal(crops.labels, cohort["label"].to_numpy())
    assert len(crops.crops["us"]) == 2127 and len(crops.crops["mg"]) == 95
    assert sorted(crops.index["us"]) == list(range(2127))  # each US crop used once
    assert set(crops.index["mg"]) == set(range(95))  # every MG crop used, stored once
    assert all(c.dtype == np.uint8 for m in crops.crops for c in crops.crops[m])
    assert crops.exact["us"].all() and crops.exact["mg"].all()  # all public sources are 8-bit
    cache = summary["cache"]
    assert cache["file"] == "crops.npz" and cache["counts"] == {"us": 2127, "mg": 95}
    assert cache["bytes"] == (out / "crops.npz").stat().st_size and cache["roi_expansion"] == 0.3
    assert summary["cases"] == 2127 and summary["seed"] == 0
    assert summary["mg_lesion_reuse"]["max"] - summary["mg_lesion_reuse"]["min"] < 25


@pytest.mark.slow
def test_prepare_crops_match_the_original_images(prepared):
    from dlum.data.crops import CropSet
    from dlum.data.io import read_image
    from dlum.data.manifest import case_box, read_cohort
    from dlum.data.roi import crop_roi

    out, _, _ = prepared
    cohort = read_cohort(out / "cohort.csv")
    crops = CropSet.load(out / "crops.npz")
    lesions = pd.read_csv(out / "lesions.csv")
    for i in (0, 1000, len(cohort) - 1):
        row = cohort.iloc[i]
        for modality in ("us", "mg"):
            original = crop_roi(read_image(row[f"{modality}_image"]), case_box(row, modality))
            # an 8-bit source is stored as it is (dlum.data.crops): integers in 0..255
            assert np.array_equal(original, np.round(original)) and 0 <= original.min() <= original.max() <= 255
            np.testing.assert_array_equal(crops.crop(modality, i), original.astype(np.uint8))
            lesion = row["case_id"].split("+")[0 if modality == "us" else 1]
            crop = lesions.set_index(["modality", "lesion_id"]).loc[(modality, lesion), "crop"]
            assert crop == crops.index[modality][i]  # lesions.csv's crop number


@pytest.mark.slow
def test_prepared_table_is_valid_and_honest(prepared, shared_data):
    from dlum.data.manifest import COLUMNS, read_cohort

    out, _, _ = prepared
    assert list(pd.read_csv(out / "cohort.csv", nrows=1).columns) == list(COLUMNS)
    cohort = read_cohort(out / "cohort.csv")  # images and ROIs checked too
    assert (cohort["pairing"] == "pseudo").all()
    for modality in ("us", "mg"):
        assert (cohort.groupby(f"{modality}_image")["split"].nunique() == 1).all()
    lesions = pd.read_csv(out / "lesions.csv")
    assert (lesions.groupby(["modality", "patient_id"])["split"].nunique() == 1).all()
    label = lesions.set_index("lesion_id")["label"]
    us_id = cohort["case_id"].str.split("+").str[0]
    mg_id = cohort["case_id"].str.split("+").str[1]
    assert (label.loc[us_id].to_numpy() == cohort["label"].to_numpy()).all()
    assert (label.loc[mg_id].to_numpy() == cohort["label"].to_numpy()).all()


@pytest.mark.slow
def test_prepare_same_seed_same_table(prepared, shared_data, tmp_path):
    out, _, _ = prepared
    assert cli.main(["prepare", "--data", str(shared_data), "--out", str(tmp_path),
                     "--no-crops", "--quiet"]) == 0
    assert (tmp_path / "cohort.csv").read_bytes() == (out / "cohort.csv").read_bytes()
    assert (tmp_path / "lesions.csv").read_bytes() == (out / "lesions.csv").read_bytes()
    assert not (tmp_path / "crops.npz").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"cohort.csv", "lesions.csv", "prepare_summary.json"}


def test_report_prints_the_results_table_and_refreshes_the_readme(tmp_path, capsys):
    import shutil

    from dlum.reporting import README_END, README_START

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v1"
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    shutil.copy(shipped / "card.json", checkpoint / "card.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n{README_START}\nstale\n{README_END}\nafter\n")
    assert cli.main(["report", "--checkpoint", str(checkpoint), "--readme", str(readme)]) == 0
    printed = capsys.readouterr().out.strip()
    text = readme.read_text()
    assert "stale" not in text and printed in text and text.endswith(f"{README_END}\nafter\n")
    auc = json.loads((checkpoint / "card.json").read_text())["test_metrics"]["all"]["p_dlum"]["auc"]
    assert f"| all (140/286) | DL-UM | {auc:.3f} [" in printed  # the card's own test metrics

    card = json.loads((checkpoint / "card.json").read_text())
    del card["test_metrics"]
    (checkpoint / "card.json").write_text(json.dumps(card))
    assert cli.main(["report", "--checkpoint", str(checkpoint)]) == 2
    assert "no test metrics" in capsys.readouterr().err
