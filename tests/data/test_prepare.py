"""dlum.data.prepare: the cohort tables and their exact crops (crops.npz) in one folder.

`prepare` on the real public data is tested in tests/test_cli.py (slow); here it runs on a few
fake lesions standing in for the public readers.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dlum.data import pairing
from dlum.data.crops import CropSet
from dlum.data.io import read_image
from dlum.data.manifest import case_box, read_cohort
from dlum.data.prepare import CROPS_FILE, crops_beside, format_summary, prepare
from dlum.data.roi import crop_roi
from dlum.errors import InputError


def fake_lesions(folder) -> pd.DataFrame:
    """6 US lesions (own images) and 3 MG lesions on 2 films (one whole-film ROI), 8-bit PNGs."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        path = folder / "us" / f"us{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (60, 80), dtype=np.uint8)).save(path)
        rows.append({"modality": "us", "dataset": "US-fake", "lesion_id": f"u{i}",
                     "patient_id": f"US-fake:{i}", "image": str(path),
                     "x0": 10 + i, "y0": 8, "x1": 40 + i, "y1": 30, "label": i % 2,
                     "birads": 4.0 if i % 2 else 3.0, "birads_source": "reported",
                     "kind": "mass", "split": "train" if i < 4 else "test"})
    films = []
    for k in range(2):
        path = folder / "mg" / f"film{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (90, 70), dtype=np.uint8)).save(path)
        films.append(str(path))
    mg = [  # two lesions on one film (train), the whole of another film (test)
        ("m0", films[0], (5, 5, 30, 30), 0, "train"),
        ("m1", films[0], (35, 40, 65, 80), 1, "train"),
        ("m2", films[1], (np.nan,) * 4, 0, "test"),
        ("m3", films[1], (20, 20, 50, 50), 1, "test"),
    ]
    for lesion_id, image, box, label, split in mg:
        rows.append({"modality": "mg", "dataset": "MG-fake", "lesion_id": lesion_id,
                     "patient_id": f"MG-fake:{image[-5]}", "image": image,
                     **dict(zip(("x0", "y0", "x1", "y1"), box)), "label": label,
                     "birads": 5.0 if label else 2.0, "birads_source": "simulated:cbis-ddsm",
                     "kind": "mass", "split": split})
    lesions = pd.DataFrame(rows)
    lesions["note"] = ""
    return lesions


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    lesions = fake_lesions(data)
    monkeypatch.setattr(pairing, "public_lesions", lambda data_dir, seed=0: lesions.copy())
    return data


def test_prepare_writes_tables_and_exact_crops(fake_data, tmp_path):
    out = tmp_path / "out"
    summary = prepare(fake_data, out, progress=False)
    assert {p.name for p in out.iterdir()} == {
        "cohort.csv", "lesions.csv", CROPS_FILE, "prepare_summary.json"}
    cohort = read_cohort(out / "cohort.csv")
    crops = CropSet.load(out / CROPS_FILE)
    assert crops.mismatch(cohort) is None
    assert len(crops.crops["us"]) == 6 and len(crops.crops["mg"]) == 4  # each lesion once
    for m in ("us", "mg"):
        assert crops.exact[m].all()
        for row in range(len(cohort)):
            r = cohort.iloc[row]
            expected = crop_roi(read_image(r[f"{m}_image"]), case_box(r, m))
            np.testing.assert_array_equal(crops.crop(m, row), expected.astype(np.uint8))
    # lesions.csv's `crop` is the lesion's crop number in crops.npz
    lesions = pd.read_csv(out / "lesions.csv")
    ids = cohort["case_id"].str.split("+", expand=True)
    for m, column in (("us", 0), ("mg", 1)):
        crop_of = lesions[lesions["modality"] == m].set_index("lesion_id")["crop"]
        np.testing.assert_array_equal(crop_of.loc[ids[column]].to_numpy(), crops.index[m])
    cache = json.loads((out / "prepare_summary.json").read_text())["cache"]
    assert cache == summary["cache"]
    assert cache["file"] == CROPS_FILE and cache["rows"] == len(cohort) == 6
    assert cache["counts"] == {"us": 6, "mg": 4} and cache["not_exact"] == {"us": 0, "mg": 0}
    assert cache["bytes"] == (out / CROPS_FILE).stat().st_size and cache["roi_expansion"] == 0.3
    assert "exact native-resolution" in cache["format"] and "npz" in cache["format"]
    text = format_summary(summary)
    assert "Crops: 6 US + 4 MG exact native-resolution expanded-ROI crops (uint8) in crops.npz" in text
    assert not list(out.glob(".*"))  # no partial file left behind


def test_prepare_without_crops_writes_the_same_tables_and_drops_a_stale_file(fake_data, tmp_path):
    out, bare = tmp_path / "out", tmp_path / "bare"
    prepare(fake_data, out, progress=False)
    bare.mkdir()
    (bare / CROPS_FILE).write_bytes(b"stale")
    summary = prepare(fake_data, bare, crops=False, progress=False)
    assert not (bare / CROPS_FILE).exists()
    for name in ("cohort.csv", "lesions.csv"):
        assert (bare / name).read_bytes() == (out / name).read_bytes()
    assert summary["cache"]["file"] is None and summary["cache"]["bytes"] == 0
    assert "Crops:" not in format_summary(summary)


def test_prepare_on_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="data folder not found"):
        prepare(tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_crops_beside_the_table_are_used_only_when_they_match(fake_data, tmp_path):
    out = tmp_path / "out"
    prepare(fake_data, out, progress=False)
    table = out / "cohort.csv"
    cohort = read_cohort(table)
    crops, problem = crops_beside(table, cohort)
    assert problem is None and crops is not None and crops.mismatch(cohort) is None
    crops, problem = crops_beside(table, cohort.iloc[:-1])  # a table with one row fewer
    assert crops is None and problem
    (out / CROPS_FILE).write_bytes(b"not an npz")
    crops, problem = crops_beside(table, cohort)
    assert crops is None and problem
    (out / CROPS_FILE).unlink()
    assert crops_beside(table, cohort) == (None, None)


def test_prepare_checks_no_patient_or_image_is_in_two_splits(fake_data, tmp_path, monkeypatch):
    from dlum.data.manifest import SplitOverlapError

    summary = prepare(fake_data, tmp_path / "out", progress=False)
    assert summary["split_overlap"] == {"found": 0, "compared": "bytes",
                                        "may_share": ["external", "test"]}
    lesions = pairing.public_lesions(fake_data)
    lesions.loc[lesions["lesion_id"] == "u4", "patient_id"] = "US-fake:0"  # test, and train's u0
    monkeypatch.setattr(pairing, "public_lesions", lambda data_dir, seed=0: lesions.copy())
    with pytest.raises(SplitOverlapError, match="'US-fake:0': US patient in 2 splits: train"):
        prepare(fake_data, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "cohort.csv").exists()
