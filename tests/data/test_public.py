"""dlum.data.public: readers of BUS-BRA, BrEaST-Lesions-USG, mini-MIAS and CBIS-DDSM labels."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dlum.data.public import (
    KINDS,
    LESION_COLUMNS,
    MIAS_MIN_BOX,
    cbis_kind,
    read_breast_lesions_usg,
    read_busbra,
    read_cbis_ddsm_labels,
    read_mias,
)
from dlum.errors import InputError


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


# ------------------------------------------------------------------------- tiny fake datasets
def test_busbra_bbox_is_xywh(tmp_path):
    folder = tmp_path / "us" / "busbra"
    png(folder / "Images" / "bus_0001-l.png", np.zeros((60, 80)))
    png(folder / "Images" / "bus_0002-r.png", np.zeros((60, 80)))
    pd.DataFrame({
        "ID": ["bus_0001-l", "bus_0002-r"], "Case": [1, 2], "Histology": ["fibroadenoma", "idc"],
        "Pathology": ["benign", "malignant"], "BIRADS": [3, 5], "Device": ["x", "y"],
        "Width": [80, 80], "Height": [60, 60], "Side": ["left", "right"],
        "BBOX": ["[10,20,30,15]", "[0,0,80,60]"],
    }).to_csv(folder / "bus_data.csv", index=False)
    df = read_busbra(tmp_path)
    assert list(df.columns[: len(LESION_COLUMNS)]) == list(LESION_COLUMNS)
    assert df.loc[0, ["x0", "y0", "x1", "y1"]].tolist() == [10, 20, 40, 35]
    assert df["label"].tolist() == [0, 1]
    assert df["patient_id"].tolist() == ["busbra:1", "busbra:2"]
    assert (df["modality"] == "us").all()
    # the dataset folder itself is accepted too
    assert len(read_busbra(folder)) == 2


def test_busbra_missing_image_is_an_input_error(tmp_path):
    folder = tmp_path / "us" / "busbra"
    folder.mkdir(parents=True)
    pd.DataFrame({
        "ID": ["bus_0001-l"], "Case": [1], "Histology": ["x"], "Pathology": ["benign"],
        "BIRADS": [3], "Width": [8], "Height": [6], "BBOX": ["[1,1,2,2]"],
    }).to_csv(folder / "bus_data.csv", index=False)
    with pytest.raises(InputError, match="missing"):
        read_busbra(tmp_path)


def test_breast_lesions_box_from_mask_and_normals_dropped(tmp_path):
    folder = tmp_path / "us" / "breast_lesions_usg"
    mask = np.zeros((50, 70), np.uint8)
    mask[12:30, 5:41] = 255
    png(folder / "images" / "case001.png", np.full((50, 70), 100))
    png(folder / "images" / "case001_tumor.png", mask)
    png(folder / "images" / "case002.png", np.full((50, 70), 100))
    pd.DataFrame({
        "CaseID": [1, 2], "Image_filename": ["case001.png", "case002.png"],
        "Mask_tumor_filename": ["case001_tumor.png", None], "BIRADS": ["4c", "1"],
        "Classification": ["malignant", "normal"],
    }).to_csv(folder / "clinical_data.csv", index=False)
    df = read_breast_lesions_usg(tmp_path)
    assert len(df) == 1 and df.attrs["dropped_normal"] == 1
    assert df.loc[0, ["x0", "y0", "x1", "y1"]].tolist() == [5, 12, 41, 30]
    assert df.loc[0, "birads"] == 4 and df.loc[0, "birads_reported"] == "4c"


def test_mias_y_from_bottom_widening_clamping_and_skips(tmp_path):
    folder = tmp_path / "mg" / "mias"
    png(folder / "images" / "mdb001.png", np.zeros((1024, 1024)))
    png(folder / "images" / "mdb002.png", np.zeros((1024, 1024)))
    png(folder / "images" / "mdb003.png", np.zeros((1024, 1024)))
    pd.DataFrame({
        "refnum": ["mdb001", "mdb001", "mdb002", "mdb003", "mdb002"],
        "woman": [1, 1, 1, 2, 1],
        "tissue": ["F", "F", "F", "D", "F"],
        "abnormality": ["CIRC", "CALC", "SPIC", "CALC", "CIRC"],
        "severity": ["B", "M", "M", "M", "B"],
        "x": ["500", "100", "20", "*NOTE", None],
        "y_bottom_origin": ["200", "900", "1000", "3*", None],
        "radius": [50, 3, 60, None, None],
        "image": ["images/mdb001.png", "images/mdb001.png", "images/mdb002.png",
                  "images/mdb003.png", "images/mdb002.png"],
    }).to_csv(folder / "lesions.csv", index=False)
    df = read_mias(tmp_path).set_index("lesion_id")
    assert df.loc["mdb001-1", ["x0", "y0", "x1", "y1"]].tolist() == [450, 774, 550, 874]  # row 824
    half = MIAS_MIN_BOX / 2
    assert df.loc["mdb001-2", ["x0", "x1"]].tolist() == [100 - half, 100 + half]  # widened
    assert df.loc["mdb002-1", ["x0", "y0"]].tolist() == [0, 0]  # clamped at the corner
    assert df.loc["mdb002-1", ["x1", "y1"]].tolist() == [80, 84]
    assert math.isnan(df.loc["mdb003-1", "x0"])  # diffuse calcifications: whole film
    assert df.attrs["skipped_no_coordinates"] == ["mdb002"]
    assert df.attrs["whole_image"] == ["mdb003-1"]
    assert df.attrs["widened"] == ["mdb001-2"]
    assert df.attrs["clamped"] == ["mdb002-1"]
    assert df.loc["mdb002-1", "kind"] == "spiculated_mass" and df.loc["mdb002-1", "label"] == 1
    assert set(df["patient_id"]) == {"mias:1", "mias:2"}


@pytest.mark.parametrize(
    "kind, shape, margins, expected",
    [
        ("calcification", None, None, "calcification"),
        ("mass", "OVAL", "CIRCUMSCRIBED", "circumscribed_mass"),
        ("mass", "OVAL", "CIRCUMSCRIBED-OBSCURED", "circumscribed_mass"),
        ("mass", "IRREGULAR", "ILL_DEFINED-SPICULATED", "spiculated_mass"),
        ("mass", "LOBULATED", "MICROLOBULATED", "ill_defined_mass"),
        ("mass", "IRREGULAR-ARCHITECTURAL_DISTORTION", "SPICULATED", "architectural_distortion"),
        ("mass", "FOCAL_ASYMMETRIC_DENSITY", "N/A", "asymmetry"),
        ("mass", "ASYMMETRIC_BREAST_TISSUE", None, "asymmetry"),
        ("mass", "OVAL", None, None),
    ],
)
def test_cbis_kind(kind, shape, margins, expected):
    assert cbis_kind(kind, shape, margins) == expected


# ------------------------------------------------------------------------------- the real data
def test_busbra_counts(shared_data):
    df = read_busbra(shared_data)
    assert len(df) == 1875
    assert df["patient_id"].nunique() == 1064
    assert df["label"].value_counts().to_dict() == {0: 1268, 1: 607}
    assert df.groupby("label")["birads"].value_counts().to_dict() == {
        (0, 2): 552, (0, 3): 432, (0, 4): 280, (0, 5): 4,
        (1, 2): 10, (1, 3): 31, (1, 4): 413, (1, 5): 153,
    }
    assert (df["x1"] <= df["width"]).all() and (df["y1"] <= df["height"]).all()


def test_breast_lesions_counts(shared_data):
    df = read_breast_lesions_usg(shared_data)
    assert len(df) == 252
    assert df["label"].value_counts().to_dict() == {0: 154, 1: 98}
    assert df.attrs["dropped_normal"] == 4
    assert set(df["birads"]) <= {2, 3, 4, 5}
    assert (df["x1"] > df["x0"]).all() and (df["y1"] > df["y0"]).all()


def test_mias_counts(shared_data):
    df = read_mias(shared_data)
    assert len(df) == 96 - 1  # mdb059 has no coordinates
    assert df.attrs["skipped_no_coordinates"] == ["mdb059"]
    assert df["film"].nunique() == 88 and df["patient_id"].nunique() == 82
    assert set(df["kind"]) <= set(KINDS)
    located = df.dropna(subset=["x0"])
    assert len(located) == 95 - len(df.attrs["whole_image"])
    assert (located[["x0", "y0"]] >= 0).all().all() and (located[["x1", "y1"]] <= 1024).all().all()
    assert "background" in df.set_index("lesion_id").loc["mdb212-1", "note"]  # flagged, kept


def test_cbis_labels(shared_data):
    df = read_cbis_ddsm_labels(shared_data)
    assert len(df) == 3568
    assert set(df["assessment"].dropna()) <= {0, 1, 2, 3, 4, 5}
    assert set(df["kind"].dropna()) == set(KINDS)
    assert df.loc[df["pathology"] == "BENIGN_WITHOUT_CALLBACK", "label"].eq(0).all()
