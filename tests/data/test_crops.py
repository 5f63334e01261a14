"""dlum.data.crops: a CropSet knows whether it belongs to a table, and bad files are clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlum.data.crops import CropSet
from dlum.errors import InputError


def small_set() -> CropSet:
    crops = {"us": [np.full((3, 4), i, np.uint8) for i in range(3)], "mg": [np.zeros((5, 2), np.uint8)]}
    index = {"us": np.array([0, 1, 2]), "mg": np.array([0, 0, 0])}
    exact = {"us": np.ones(3, bool), "mg": np.ones(1, bool)}
    return CropSet(crops, index, np.array([0, 1, 1]), exact)


def test_mismatch_names_rows_then_labels():
    crops = small_set()
    assert crops.mismatch(pd.DataFrame({"label": [0, 1, 1]})) is None
    assert "3 rows but the table has 2" in crops.mismatch(pd.DataFrame({"label": [0, 1]}))
    problem = crops.mismatch(pd.DataFrame({"label": [0, 0, 1]}))
    assert "labels differ" in problem and "1 of 3 rows" in problem and "data row 2" in problem


def test_subset_keeps_the_crops_of_the_chosen_rows(tmp_path):
    crops = CropSet.load(small_set().save(tmp_path / "crops.npz"))
    part = crops.subset([2, 0])
    assert len(part) == 2 and part.labels.tolist() == [1, 0]
    assert part.crop("us", 0)[0, 0] == 2 and part.crop("us", 1)[0, 0] == 0


@pytest.mark.parametrize("content", [None, b"not a zip at all", b"PK\x03\x04truncated"])
def test_unreadable_files_are_input_errors(tmp_path, content):
    path = tmp_path / "crops.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match="crops.npz"):
        CropSet.load(path)


def test_an_npz_without_crops_is_an_input_error(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(InputError, match="not a crop cache"):
        CropSet.load(tmp_path / "other.npz")


def test_crops_remember_what_they_were_cut_from(tmp_path):
    from dlum.data.crops import extract_crops
    from dlum.data.manifest import read_cohort
    from dlum.data.synthetic import make_phantom_cohort

    cohort = read_cohort(make_phantom_cohort(tmp_path / "ph", n=4, seed=3, size=64))
    crops = CropSet.load(extract_crops(cohort, progress=False).save(tmp_path / "crops.npz"))
    assert crops.keys is not None and crops.mismatch(cohort) is None
    assert crops.keys["us"][0].startswith(cohort["us_image"].map(lambda p: p.split("/")[-1])[0] + "|")
    moved = cohort.copy()
    moved.loc[2, "mg_x0"] = moved.loc[2, "mg_x0"] + 1  # same labels, another box
    problem = crops.mismatch(moved)
    assert "MG crops were cut from other images or boxes on 1 rows" in problem and "data row 3" in problem
    renamed = cohort.copy()
    renamed.loc[0, "us_image"] = renamed.loc[0, "us_image"].replace(".png", "-other.png")
    assert "US crops were cut from other images or boxes on 1 rows" in crops.mismatch(renamed)
    assert crops.subset([3, 1]).mismatch(cohort.iloc[[3, 1]].reset_index(drop=True)) is None


def test_sets_saved_without_keys_still_load():
    assert small_set().keys is None  # older files: rows and labels are all that can be checked
    assert small_set().mismatch(pd.DataFrame({"label": [0, 1, 1]})) is None


# ------------------------------------------------- crops keyed by the bytes of their image files
def _phantoms(tmp_path, n=4):
    from dlum.data.crops import extract_crops
    from dlum.data.manifest import read_cohort
    from dlum.data.synthetic import make_phantom_cohort

    table = make_phantom_cohort(tmp_path / "ph", n=n, seed=3, size=64)
    cohort = read_cohort(table)
    return table, cohort, CropSet.load(extract_crops(cohort, progress=False).save(tmp_path / "crops.npz"))


def test_crops_keep_the_sha256_of_each_image_file(tmp_path):
    import hashlib

    _, cohort, crops = _phantoms(tmp_path)
    with np.load(tmp_path / "crops.npz", allow_pickle=False) as z:
        assert z["us_sha256"].dtype == np.uint8 and z["us_sha256"].shape == (len(crops.crops["us"]), 32)
    for m in ("us", "mg"):
        for row, path in enumerate(cohort[f"{m}_image"]):
            with open(path, "rb") as f:
                assert crops.row_digests(m)[row] == hashlib.sha256(f.read()).hexdigest()
    assert crops.subset([2, 0]).row_digests("us").tolist() == crops.row_digests("us")[[2, 0]].tolist()


def test_a_crop_of_an_image_replaced_under_the_same_name_is_not_used(tmp_path):
    from PIL import Image

    _, cohort, crops = _phantoms(tmp_path)
    assert crops.mismatch(cohort) is None  # unchanged images: the crops are used
    target = cohort.loc[2, "mg_image"]
    pixels = np.asarray(Image.open(target)).copy()
    pixels[0, 0] ^= 1  # one pixel: another image, same name, same size
    Image.fromarray(pixels).save(target)
    problem = crops.mismatch(cohort)
    assert problem is not None and "MG crops were cut from other image bytes" in problem
    assert "on 1 rows" in problem and "data row 3" in problem
    assert target.split("/")[-1] in problem
    # the same set loaded again (another run) refuses it too
    assert CropSet.load(tmp_path / "crops.npz").mismatch(cohort) == problem


def test_crops_are_used_as_stored_when_the_images_are_absent(tmp_path):
    table, cohort, crops = _phantoms(tmp_path)
    for folder in ("us", "mg"):
        (table.parent / folder).rename(tmp_path / folder)
    assert crops.mismatch(cohort) is None


def test_a_set_without_hashes_is_refused_only_when_images_are_present(tmp_path):
    import dataclasses

    table, cohort, crops = _phantoms(tmp_path)
    old = CropSet.load(dataclasses.replace(crops, digests=None).save(tmp_path / "old.npz"))
    assert old.digests is None and old.keys is not None
    problem = old.mismatch(cohort)
    assert "holds no hashes of the image files" in problem and "data row 1" in problem
    for folder in ("us", "mg"):
        (table.parent / folder).rename(tmp_path / folder)
    assert old.mismatch(cohort) is None  # nothing to check against: used as stored


def test_file_digest_hashes_a_replaced_file_again(tmp_path):
    import hashlib

    from dlum.data.crops import file_digest

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 3_000_000)  # over one read chunk
    assert file_digest(path) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert file_digest(str(path)) == file_digest(path)
    path.write_bytes(b"b")
    assert file_digest(path) == hashlib.sha256(b"b").hexdigest()


def test_hashes_of_the_wrong_shape_are_an_input_error(tmp_path):
    path = small_set().save(tmp_path / "crops.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["us_sha256"] = np.zeros((2, 32), np.uint8)  # 3 US crops
    arrays["mg_sha256"] = np.zeros((1, 32), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="one 32-byte SHA-256 per crop"):
        CropSet.load(tmp_path / "bad.npz")
