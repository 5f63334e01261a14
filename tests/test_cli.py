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


def test_an_unexpected_exception_is_one_line_and_a_log_not_a_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    def run(args):
        raise KeyError("an internal slip")

    cli.register(cli.Command("dummy-bug", "a command with a bug", lambda p: None, run))
    try:
        assert cli.main(["dummy-bug"]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "a bug in dlum" in err
        logs = list(tmp_path.glob("dlum-dummy-bug-*.log"))
        assert len(logs) == 1 and logs[0].name in err
        text = logs[0].read_text()
        assert "Traceback" in text and "an internal slip" in text and "dummy-bug" in text
    finally:
        cli.COMMANDS.pop("dummy-bug")


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
    development = cohort[cohort["split"] != "external"]  # external rows reuse test MG lesions
    for modality in ("us", "mg"):
        assert (development.groupby(f"{modality}_image")["split"].nunique() == 1).all()
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

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    shutil.copy(shipped / "card.json", checkpoint / "card.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n{README_START}\nstale\n{README_END}\nafter\n")
    assert cli.main(["report", "--checkpoint", str(checkpoint), "--readme", str(readme)]) == 0
    printed = capsys.readouterr().out.strip()
    text = readme.read_text()
    assert "stale" not in text and printed in text and text.endswith(f"{README_END}\nafter\n")
    entry = json.loads((checkpoint / "card.json").read_text())["metrics"]["test"]["all"]
    auc = entry["p_dlum"]["auc"]
    assert f"| all ({entry['malignant']}/{entry['benign']}) | DL-UM | {auc:.3f} [" in printed

    card = json.loads((checkpoint / "card.json").read_text())
    del card["metrics"]
    (checkpoint / "card.json").write_text(json.dumps(card))
    assert cli.main(["report", "--checkpoint", str(checkpoint)]) == 2
    assert "no held-out metrics" in capsys.readouterr().err


def test_report_draws_the_reliability_diagrams_and_the_brier_column(tmp_path, capsys):
    import shutil

    from dlum.card import read_card
    from dlum.visualize.readme_figures import readme_svgs

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(shipped, checkpoint, ignore=shutil.ignore_patterns("model.safetensors"))
    figures = tmp_path / "docs" / "figures"
    assert cli.main(["report", "--checkpoint", str(checkpoint), "--figures", str(figures)]) == 0
    printed = capsys.readouterr().out
    entry = json.loads((checkpoint / "card.json").read_text())["metrics"]["test"]["all"]["p_dlum"]
    assert f"| {entry['ece']:.3f} | {entry['brier']:.3f} |  |" in printed
    want = readme_svgs(pd.read_csv(shipped / "predictions.csv"),
                       {"test": "Test split", "external": "External split (a second centre)"},
                       read_card(checkpoint).operating_point.thresholds)
    assert set(want) == {f"{kind}_{split}.svg" for kind in ("roc", "reliability")
                         for split in ("test", "external")}
    assert {p.name: p.read_text() for p in figures.iterdir()} == want
    assert f"wrote {figures / 'reliability_test.svg'}" in printed

    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    blocker = tmp_path / "a-file"
    blocker.write_text("keep")
    assert cli.main(["report", "--checkpoint", str(checkpoint), "--held-out",
                     str(shipped / "held_out_predictions.csv"), "--figures", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err and blocker.read_text() == "keep"
    (checkpoint / "predictions.csv").unlink()
    assert cli.main(["report", "--checkpoint", str(checkpoint), "--figures", str(tmp_path / "f")]) == 2
    assert "run python -m dlum report --held-out first" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    del before["predictions.csv"]
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before


def test_report_with_unusable_held_out_predictions_changes_nothing(tmp_path, capsys):
    import shutil

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(shipped, checkpoint, ignore=shutil.ignore_patterns("model.safetensors"))
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    held = pd.read_csv(shipped / "held_out_predictions.csv")
    for name, frame in (("no_validation.csv", held[held.split == "test"]),
                        ("one_class.csv", held[(held.split == "test") | (held.label == 0)]),
                        ("no_split.csv", held.drop(columns="split"))):
        frame.to_csv(tmp_path / name, index=False)
        assert cli.main(["report", "--checkpoint", str(checkpoint), "--held-out",
                         str(tmp_path / name)]) == 2
        assert "error:" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before


def test_report_regenerates_the_shipped_card_and_predictions_exactly(tmp_path, capsys):
    import shutil

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(shipped, checkpoint, ignore=shutil.ignore_patterns("model.safetensors"))
    assert cli.main(["report", "--checkpoint", str(checkpoint), "--held-out",
                     str(shipped / "held_out_predictions.csv")]) == 0
    assert (checkpoint / "predictions.csv").read_bytes() == (shipped / "predictions.csv").read_bytes()
    # the card's statistics to the last few bits: CPUs with and without AVX-512 sum in another
    # order, which moves e.g. a DeLong interval by one unit in the last place
    _assert_same_json(json.loads((checkpoint / "card.json").read_text()),
                      json.loads((shipped / "card.json").read_text()))


def _assert_same_json(got, want, where="card"):
    if isinstance(want, float) and isinstance(got, (int, float)):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _assert_same_json(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_json(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


# ------------------------------------------------------------------------------ predict: one rule
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = {"us": REPO / "examples" / "phantom-12-us.png", "mg": REPO / "examples" / "phantom-12-mg.png",
           "us_roi": "98,45,192,179", "mg_roi": "49,88,141,186"}


def _predict(capsys, *args) -> dict:
    assert cli.main(["predict", "--checkpoint", str(REPO / "checkpoints" / "dlum-public-v2"),
                     "--precision", "fp32", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_shipped_example_images_are_the_generated_phantom(tmp_path):
    from dlum.data.examples import write_phantom_pair

    made = write_phantom_pair(tmp_path)
    for m in ("us", "mg"):
        assert made[m].read_bytes() == EXAMPLE[m].read_bytes()
        assert ",".join(map(str, made[f"{m}_box"])) == EXAMPLE[f"{m}_roi"]


def test_readme_shows_the_predict_example_exactly_as_the_command_prints_it():
    from dlum.reporting import PREDICT_END, PREDICT_START, predict_example_markdown

    readme = (REPO / "README.md").read_text()
    block = readme.split(PREDICT_START)[1].split(PREDICT_END)[0].strip()
    assert block == predict_example_markdown(REPO)
    assert '"label": "Biopsy recommended"' in block or '"label": "Follow-up"' in block


def test_predict_judges_each_mode_at_its_own_threshold_and_withholds_whole_images(capsys):
    from dlum.card import read_card

    card = read_card(REPO / "checkpoints" / "dlum-public-v2")
    pair = _predict(capsys, "--us", str(EXAMPLE["us"]), "--us-roi", EXAMPLE["us_roi"],
                    "--mg", str(EXAMPLE["mg"]), "--mg-roi", EXAMPLE["mg_roi"])
    us = _predict(capsys, "--us", str(EXAMPLE["us"]), "--us-roi", EXAMPLE["us_roi"])
    mg = _predict(capsys, "--mg", str(EXAMPLE["mg"]), "--mg-roi", EXAMPLE["mg_roi"])
    for out, column in ((pair, "p_dlum"), (us, "p_us_head"), (mg, "p_mg_head")):
        d = out["decision"]
        assert d["output"] == column and d["threshold"] == round(card.threshold_for(column), 4)
        assert d["biopsy_recommended"] == (out[column] >= card.threshold_for(column))
    assert us["p_us_head"] == pytest.approx(pair["p_us_head"], abs=1e-4)
    whole = _predict(capsys, "--us", str(EXAMPLE["us"]))
    assert whole["whole_image"] == ["us"] and whole["decision"]["biopsy_recommended"] is None
    assert whole["decision"]["label"].startswith("No call")
    confirmed = _predict(capsys, "--us", str(EXAMPLE["us"]), "--whole-image", "--timing")
    assert confirmed["decision"]["biopsy_recommended"] is not None and confirmed["run"]["seconds"] > 0


def test_predict_refuses_a_card_with_a_bad_threshold_and_nan_weights(tmp_path, capsys):
    import shutil

    shipped = REPO / "checkpoints" / "dlum-public-v2"
    bad = tmp_path / "bad"
    shutil.copytree(shipped, bad)
    card = json.loads((bad / "card.json").read_text())
    card["operating_point"]["thresholds_per_model"]["p_us_head"] = "high"
    (bad / "card.json").write_text(json.dumps(card))
    args = ["predict", "--checkpoint", str(bad), "--us", str(EXAMPLE["us"]), "--us-roi", EXAMPLE["us_roi"]]
    assert cli.main(args) == 2
    assert "operating_point.thresholds_per_model.p_us_head: 'high' is not a number" in capsys.readouterr().err

    from tests.checkpoints import copy_with_nan_weights

    nan = copy_with_nan_weights(shipped, tmp_path / "nan", "us")
    assert cli.main(["predict", "--checkpoint", str(nan), "--us", str(EXAMPLE["us"]),
                     "--us-roi", EXAMPLE["us_roi"]]) == 2
    err = capsys.readouterr().err
    assert "not a probability" in err and "p_us_head" in err and "Traceback" not in err


def test_a_dlum_checkpoint_given_as_dlu_is_refused(capsys, tmp_path):
    shipped = str(REPO / "checkpoints" / "dlum-public-v2")
    (tmp_path / "c.csv").write_text("case_id,patient_id,us_image,mg_image,label\n"
                                    f"c,p,{EXAMPLE['us']},{EXAMPLE['mg']},1\n")
    assert cli.main(["evaluate", "--checkpoint", shipped, "--cohort", str(tmp_path / "c.csv"),
                     "--out", str(tmp_path / "o.csv"), "--dlu", shipped, "--quiet"]) == 2
    assert "needs a DL-U checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------- an external split end to end
def test_an_external_split_validates_evaluates_reports_and_shows_in_cohort_roc(tmp_path, capsys):
    import torch
    from streamlit.testing.v1 import AppTest

    from dlum.checkpoint import save_checkpoint
    from dlum.data.manifest import read_cohort, write_cohort
    from dlum.data.synthetic import make_phantom_cohort
    from dlum.networks import DLUM

    table = make_phantom_cohort(tmp_path / "cohort", n=16, seed=3, size=64)
    cohort = read_cohort(table)
    cohort["split"] = ["validation", "test", "external", "external"] * 4
    for split in ("validation", "test", "external"):  # both classes in every split
        labels = cohort.loc[cohort.split == split, "label"]
        assert labels.nunique() == 2, split
    write_cohort(cohort, table)
    assert set(read_cohort(table)["split"]) == {"validation", "test", "external"}

    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt", model, {
        "name": "tiny", "arch": "dlum", "model": model.config(), "data": {"pairing": "same_patient"},
        "input": {"size": 64, "imagenet_normalisation": False}})
    held = tmp_path / "held_out.csv"
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--cohort", str(table), "--out", str(held),
                     "--precision", "fp32", "--quiet"]) == 0
    external = tmp_path / "external.csv"
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--cohort", str(table), "--out",
                     str(external), "--split", "external", "--precision", "fp32", "--quiet"]) == 0
    assert set(pd.read_csv(external)["split"]) == {"external"}
    capsys.readouterr()
    assert cli.main(["report", "--checkpoint", str(ckpt), "--held-out", str(held)]) == 0
    printed = capsys.readouterr().out
    assert "**Test split**" in printed and "**External split (a second centre)**" in printed
    card = json.loads((ckpt / "card.json").read_text())
    assert set(card["metrics"]) == {"test", "external"}
    assert set(pd.read_csv(ckpt / "predictions.csv")["split"]) == {"test", "external"}

    def page():
        import os

        import streamlit as st

        st.session_state.setdefault("_", None)
        os.environ["DLUM_CHECKPOINT"] = str(os.environ["TEST_CKPT"])
        exec(open(os.environ["TEST_PAGE"]).read(), {"__name__": "__main__"})

    import os

    os.environ["TEST_CKPT"] = str(ckpt)
    os.environ["TEST_PAGE"] = str(REPO / "pages" / "2_Cohort_ROC.py")
    old = os.environ.get("DLUM_CHECKPOINT")
    os.environ["DLUM_CHECKPOINT"] = str(ckpt)
    try:
        at = AppTest.from_file(str(REPO / "pages" / "2_Cohort_ROC.py"), default_timeout=120).run()
        assert not at.exception and not at.error
        assert "external" in at.selectbox(key="split").options
        at.selectbox(key="split").set_value("external").run()
        assert not at.exception and not at.error
        assert any("0.5" in str(e.value) or "validation" in str(e.value) for e in at.dataframe)
    finally:
        for k in ("TEST_CKPT", "TEST_PAGE"):
            os.environ.pop(k, None)
        if old is None:
            os.environ.pop("DLUM_CHECKPOINT", None)
        else:
            os.environ["DLUM_CHECKPOINT"] = old


# --------------------------------------------------------------- nothing saved is overwritten
def test_outputs_that_would_lose_data_are_refused(tmp_path, capsys):
    shipped = str(REPO / "checkpoints" / "dlum-public-v2")
    table = tmp_path / "c.csv"
    table.write_text("case_id,patient_id,us_image,mg_image,label\n"
                     f"c,p,{EXAMPLE['us']},{EXAMPLE['mg']},1\n")
    before = table.read_bytes()
    base = ["evaluate", "--checkpoint", shipped, "--cohort", str(table), "--quiet", "--out"]
    for out, message in ((str(table), "also an input"), (str(tmp_path), "is a folder"),
                         (f"{shipped}/predictions.csv", "also an input"),
                         (str(tmp_path / "nowhere" / "p.csv"), "does not exist")):
        assert cli.main([*base, out]) == 2
        assert message in capsys.readouterr().err
    assert table.read_bytes() == before
    existing = tmp_path / "p.csv"
    existing.write_text("keep me")
    assert cli.main([*base, str(existing)]) == 2
    assert "--force" in capsys.readouterr().err and existing.read_text() == "keep me"
    # train into an existing checkpoint, prepare into a prepared folder: refused without --force
    assert cli.main(["train", "--cohort", str(table), "--out", shipped]) == 2
    assert "already holds model.safetensors, card.json" in capsys.readouterr().err
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "cohort.csv").write_text("keep")
    assert cli.main(["prepare", "--data", str(tmp_path), "--out", str(tmp_path / "prep")]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["prepare", "--data", str(tmp_path), "--out", str(table)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
