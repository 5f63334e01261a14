"""dlum.data.manifest: the cohort table's schema, validation (all problems at once) and writing."""
from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dlum.data.manifest import (
    COHORT_SCHEMA,
    COLUMNS,
    REQUIRED_COLUMNS,
    case_box,
    cohort_schema_markdown,
    derive_subgroup,
    parse_birads,
    parse_label,
    read_cohort,
    write_cohort,
)
from dlum.errors import CohortError
from dlum.tables import MAX_PROBLEMS, Problem

HEADER = ",".join(COLUMNS)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A folder with a 100x80 (w x h) US image and a 200x150 MG image."""
    Image.fromarray(np.full((80, 100), 90, np.uint8)).save(tmp_path / "us.png")
    Image.fromarray(np.full((150, 200), 40, np.uint8)).save(tmp_path / "mg.png")
    return tmp_path


def write(folder: Path, text: str, name: str = "cohort.csv") -> Path:
    path = folder / name
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def row(case="c1", patient="p1", us="us.png", mg="mg.png", us_box="10,10,50,40",
        mg_box="20,20,120,100", label="malignant", us_birads="4", mg_birads="3",
        us_src="reported", mg_src="reported", pairing="same_patient", source="clinic",
        split="test") -> str:
    return ",".join([case, patient, us, mg, us_box, mg_box, label, us_birads, mg_birads,
                     us_src, mg_src, pairing, source, split])


def test_columns_are_the_documented_schema():
    assert COLUMNS == (
        "case_id", "patient_id", "us_image", "mg_image", "us_x0", "us_y0", "us_x1", "us_y1",
        "mg_x0", "mg_y0", "mg_x1", "mg_y1", "label", "us_birads", "mg_birads",
        "us_birads_source", "mg_birads_source", "pairing", "source", "split",
    )
    assert set(REQUIRED_COLUMNS) <= set(COLUMNS)
    assert tuple(c.name for c in COHORT_SCHEMA.columns) == COLUMNS
    assert COHORT_SCHEMA.required == list(REQUIRED_COLUMNS)
    assert all(c.doc for c in COHORT_SCHEMA.columns)
    text = cohort_schema_markdown()
    assert all(f"`{c}`" in text for c in COLUMNS) and "external" in text


def test_valid_table_is_read_resolved_and_typed(images):
    path = write(images, "\n".join([
        HEADER,
        row(),
        row(case="c2", patient="p2", us_box=",,,", label="0", us_birads="4b", mg_birads="5"),
        row(case="c3", patient="p3", label="benign", us_birads="", split="validation"),
    ]))
    df = read_cohort(path)
    assert list(df.columns) == list(COLUMNS) + ["subgroup"]
    assert df["label"].tolist() == [1, 0, 0]
    assert df["label"].dtype == np.int64
    assert Path(df.loc[0, "us_image"]).is_absolute()
    assert Path(df.loc[0, "us_image"]) == (images / "us.png").resolve()
    assert df.loc[1, "us_birads"] == 4  # 4b read as 4
    assert math.isnan(df.loc[1, "us_x0"])  # empty ROI = whole image
    assert case_box(df.loc[1], "us") is None
    assert case_box(df.loc[0], "us") == (10, 10, 50, 40)
    assert df["subgroup"].tolist() == ["discordant", "concordant", "undetermined"]
    assert df.attrs["excluded"] == 0


def test_minimal_hand_written_table_gets_defaults(images):
    path = write(images, "case_id,patient_id,us_image,mg_image,label\nA,P,us.png,mg.png,malignant")
    df = read_cohort(path)
    assert df.loc[0, "split"] == "test"
    assert df.loc[0, "pairing"] == "same_patient"
    assert df.loc[0, "subgroup"] == "undetermined"
    assert math.isnan(df.loc[0, "mg_x1"])
    assert df.loc[0, "us_birads_source"] == ""


def test_header_case_and_spaces_and_aliases_are_tolerated(images):
    path = write(images, "Case_ID , Patient ID,US_Image,MG_Image,Label,Split,US_BIRADS,MG_BIRADS\n"
                         "A,P,us.png,mg.png,MALIGNANT,val,BI-RADS 4,2")
    df = read_cohort(path)
    assert df.loc[0, "split"] == "validation"
    assert df.loc[0, "label"] == 1
    assert df.loc[0, "subgroup"] == "discordant"
    assert df.loc[0, "us_birads_source"] == "reported"


def test_malformed_table_reports_every_fault_at_once(images):
    path = write(images, "\n".join([
        HEADER,
        row(case="c1"),
        row(case="c1", patient="p2"),  # duplicate case_id
        row(case="c3", label="maybe"),  # bad label
        row(case="c4", us_birads="7"),  # BI-RADS out of range
        row(case="c5", mg="nowhere.png"),  # missing image
        row(case="c6", us_box="10,10,500,40"),  # ROI outside the 100-px-wide image
        row(case="c7", mg_box="abc,20,120,100"),  # non-numeric ROI
        row(case="c8", split="holdout"),  # unknown split
        row(case="c9", pairing="cousins"),  # unknown pairing
        row(case="c10", us_box="30,10,20,40"),  # inverted ROI
        row(case="c11", patient=""),  # empty patient
    ]))
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    problems = info.value.problems
    message = str(info.value)
    expected = [
        ("data row 2", "'case_id', value 'c1': repeats data row 1"),
        ("data row 3", "'label'"),
        ("data row 4", "'us_birads'"),
        ("data row 5", "'mg_image', value 'nowhere.png': file not found"),
        ("data row 6", "us_x1"),
        ("data row 7", "'mg_x0', value 'abc'"),
        ("data row 8", "'split'"),
        ("data row 9", "'pairing'"),
        ("data row 10", "us_x0"),
        ("data row 11", "'patient_id'"),
    ]
    assert len(problems) == len(expected), message
    for where, column in expected:
        hits = [p for p in problems if where in p and (column is None or column in p)]
        assert hits, f"no problem naming {where} / {column} in:\n{message}"
    assert "file line 4" in message  # data row 3 is the 4th line of the file
    assert "outside the image" in message and "nowhere.png" in message


def test_missing_columns_are_all_listed(images):
    path = write(images, "case_id,us_image,us_x0,us_y0\nc1,us.png,1,2")
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    missing, fours = info.value.problems
    assert missing.startswith("missing required column(s) 'patient_id', 'mg_image', 'label'")
    assert "us_x1, us_y1 absent or empty" in fours  # ROI columns come in fours


def test_partial_roi_on_one_row_names_the_empty_cells(images):
    path = write(images, "\n".join([HEADER, row(), row(case="c2", us_box="10,10,,40")]))
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    assert info.value.problems == [
        "data row 2 (file line 3): us_x1 empty while the rest of the US ROI is given "
        "(leave all four empty for the whole image)"]


def test_external_split_validates(images):
    path = write(images, "\n".join([HEADER, row(), row(case="c2", split="External")]))
    assert read_cohort(path)["split"].tolist() == ["test", "external"]


def test_label_typo_is_an_error_naming_row_column_and_value(images):
    path = write(images, "\n".join([HEADER, row(), row(case="c2", label="malignnat")]))
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    assert info.value.records == [Problem("not benign/malignant/0/1", 2, "label", "malignnat")]
    assert info.value.problems == [
        "data row 2 (file line 3), column 'label', value 'malignnat': not benign/malignant/0/1"]


def test_extra_cell_on_the_first_row_is_reported_as_such(images):
    path = write(images, "\n".join([HEADER, row() + ",stray", row(case="c2")]))
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    (problem,) = info.value.records
    assert (problem.row, problem.value) == (1, "stray")
    assert "cells but the header has" in problem.what


def test_many_bad_rows_are_listed_up_to_the_bound_and_counted(tmp_path):
    rows = 5000
    path = write(tmp_path, "case_id,patient_id,us_image,mg_image,label\n" + "\n".join(
        f"c{i},p{i},us{i}.png,mg{i}.png,benign" for i in range(rows)))
    start = time.perf_counter()
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    assert time.perf_counter() - start < 5  # about 0.1 s; a quadratic check would show here
    assert len(info.value.problems) == MAX_PROBLEMS
    assert info.value.more == 2 * rows - MAX_PROBLEMS  # both images of every row
    assert info.value.count == 2 * rows
    assert "file not found" in info.value.problems[0]
    assert f"and {2 * rows - 20} more" in str(info.value)


def test_birads_0_1_6_rows_are_excluded_with_a_count(images):
    path = write(images, "\n".join([
        HEADER,
        row(case="a", us_birads="0"),
        row(case="b"),
        row(case="c", mg_birads="6"),
        row(case="d", us_birads="1", mg="missing-but-excluded.png"),
    ]))
    with pytest.warns(UserWarning, match="3 row"):
        df = read_cohort(path)
    assert df["case_id"].tolist() == ["b"]
    assert df.attrs["excluded"] == 3
    assert df.attrs["excluded_rows"] == [1, 3, 4]


def test_check_images_off_skips_files_and_roi_bounds(images):
    path = write(images, HEADER + "\n" + row(us="elsewhere.png", us_box="0,0,5000,5000"))
    df = read_cohort(path, check_images=False)
    assert df.loc[0, "us_x1"] == 5000
    with pytest.raises(CohortError, match="file not found"):
        read_cohort(path)


def test_buffer_with_base_dir(images):
    text = HEADER + "\n" + row()
    df = read_cohort(io.StringIO(text), base_dir=images)
    assert Path(df.loc[0, "mg_image"]) == (images / "mg.png").resolve()


@pytest.mark.parametrize("text", ["", "not,a\n\"broken", "case_id,patient_id,us_image,mg_image,label\n"])
def test_unreadable_or_empty_tables_raise_cohort_error(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(CohortError):
        read_cohort(path)


def test_missing_table_file(tmp_path):
    with pytest.raises(CohortError, match="not found"):
        read_cohort(tmp_path / "absent.csv")


def test_typed_subgroup_column_is_ignored(images):
    path = write(images, "case_id,patient_id,us_image,mg_image,label,us_birads,mg_birads,subgroup\n"
                         "A,P,us.png,mg.png,1,5,5,discordant")
    with pytest.warns(UserWarning, match="derived"):
        df = read_cohort(path)
    assert df.loc[0, "subgroup"] == "concordant"


def test_synthetic_and_real_rows_may_not_share_a_table(images):
    path = write(images, "\n".join([HEADER, row(case="a", source="synthetic-phantom"), row(case="b")]))
    with pytest.raises(CohortError, match="synthetic"):
        read_cohort(path)


def test_write_then_read_round_trips_with_relative_paths(images, tmp_path):
    df = read_cohort(write(images, "\n".join([
        HEADER, row(), row(case="c2", mg_box=",,,", label="benign", us_birads="2", mg_birads=""),
    ])))
    out = write_cohort(df, images / "copy.csv")
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(COLUMNS)
    assert written.loc[0, "us_image"] == "us.png"  # under the table's folder: relative
    assert written.loc[0, "label"] == "malignant"
    assert written.loc[0, "us_x0"] == "10" and written.loc[1, "mg_x0"] == ""
    again = read_cohort(out)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), df.reset_index(drop=True), check_like=False)

    elsewhere = tmp_path / "other" / "t.csv"
    write_cohort(df, elsewhere)
    assert Path(pd.read_csv(elsewhere)["us_image"][0]).is_absolute()


@pytest.mark.parametrize(
    "us, mg, expected",
    [
        (4, 3, "discordant"), (2, 5, "discordant"), ("4c", "2", "discordant"),
        (4, 5, "concordant"), (2, 3, "concordant"), (5, "4a", "concordant"),
        (None, 4, "undetermined"), (3, float("nan"), "undetermined"), (0, 4, "undetermined"),
    ],
)
def test_derive_subgroup(us, mg, expected):
    assert derive_subgroup(us, mg) == expected


def test_derive_subgroup_vectorised_keeps_index():
    us = pd.Series([4, 2, np.nan], index=[7, 8, 9])
    out = derive_subgroup(us, [2, 3, 4])
    assert out.tolist() == ["discordant", "concordant", "undetermined"]
    assert out.index.tolist() == [7, 8, 9]
    with pytest.raises(ValueError):
        derive_subgroup([4, 5], [3])


@pytest.mark.parametrize("value, expected", [("benign", 0), ("Malignant", 1), ("0", 0), (1, 1), ("1.0", 1),
                                             (np.int64(1), 1), (np.bool_(False), 0), (0.0, 0)])
def test_parse_label(value, expected):
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", ["B", "2", "", None, 0.5])
def test_parse_label_refuses(value):
    with pytest.raises(ValueError):
        parse_label(value)


@pytest.mark.parametrize(
    "value, expected",
    [("4a", 4), ("4B", 4), (" 5 ", 5), (3.0, 3), ("2.0", 2), ("BI-RADS 4", 4), ("", None), (0, 0), ("6", 6)],
)
def test_parse_birads(value, expected):
    assert parse_birads(value) == expected


@pytest.mark.parametrize("value", ["7", "3a", "four", 4.5, -1])
def test_parse_birads_refuses(value):
    with pytest.raises(ValueError):
        parse_birads(value)


# ------------------------------------------------------- no patient or image in two splits
def overlap_table(rows) -> pd.DataFrame:
    """A validated-looking cohort: (case, patient, us image, mg image, split[, pairing])."""
    frame = pd.DataFrame([r + ("same_patient",) * (6 - len(r)) for r in rows],
                         columns=["case_id", "patient_id", "us_image", "mg_image", "split",
                                  "pairing"])
    return frame.assign(label=0)


def test_a_clean_table_has_no_split_overlap():
    from dlum.data.manifest import check_split_overlap, split_overlaps

    table = overlap_table([("c1", "p1", "/d/u1.png", "/d/m1.png", "train"),
                           ("c2", "p1", "/d/u2.png", "/d/m1.png", "train"),  # one woman, two lesions
                           ("c3", "p2", "/d/u3.png", "/d/m3.png", "validation"),
                           ("c4", "p3", "/d/u4.png", "/d/m4.png", "test")])
    assert not split_overlaps(table)
    assert len(check_split_overlap(table)) == 0


def test_a_patient_in_train_and_validation_is_named_with_both_splits():
    from dlum.data.manifest import SplitOverlapError, check_split_overlap, split_overlaps

    table = overlap_table([("c1", "p1", "/d/u1.png", "/d/m1.png", "train"),
                           ("c2", "p2", "/d/u2.png", "/d/m2.png", "train"),
                           ("c3", "p1", "/d/u3.png", "/d/m3.png", "validation")])
    found = split_overlaps(table)
    assert [str(p) for p in found.items] == [
        "column 'patient_id', value 'p1': patient in 2 splits: train (1 row: case_id c1) and "
        "validation (1 row: case_id c3)"]
    with pytest.raises(SplitOverlapError) as caught:
        check_split_overlap(table, source="cohort.csv")
    text = str(caught.value)
    assert text.startswith("cohort.csv: 1 problem(s) in the table:")
    assert "'p1'" in text and "train" in text and "validation" in text
    assert "--allow-split-overlap" in text and isinstance(caught.value, CohortError)
    assert len(check_split_overlap(table, allow=True)) == 1  # allowed: returned, not raised


def test_pseudo_pairs_name_the_us_patient_and_the_mg_woman_apart():
    from dlum.data.manifest import row_people, split_overlaps

    table = overlap_table([("a+x", "busbra:1+mias:1", "/d/a.png", "/d/x.png", "train", "pseudo"),
                           ("b+y", "busbra:2+mias:1", "/d/b.png", "/d/y.png", "test", "pseudo"),
                           ("c+z", "busbra:1+mias:2", "/d/c.png", "/d/z.png", "validation", "pseudo")])
    assert row_people(table)["us"].tolist() == ["busbra:1", "busbra:2", "busbra:1"]
    assert row_people(table)["mg"].tolist() == ["mias:1", "mias:1", "mias:2"]
    found = [str(p) for p in split_overlaps(table).items]
    assert found == [
        "column 'patient_id', value 'busbra:1': US patient in 2 splits: train (1 row: case_id a+x) "
        "and validation (1 row: case_id c+z)",
        "column 'patient_id', value 'mias:1': MG woman in 2 splits: train (1 row: case_id a+x) "
        "and test (1 row: case_id b+y)"]
    # a '+' in a same-patient id is part of the name, not two people
    same = table.assign(pairing="same_patient")
    assert row_people(same)["us"].tolist() == same["patient_id"].tolist()


def test_test_and_external_may_share_an_mg_lesion_nothing_else_may():
    from dlum.data.manifest import split_overlaps

    shared = overlap_table([("a+x", "u1+w1", "/d/a.png", "/d/x.png", "test", "pseudo"),
                            ("b+x", "u2+w1", "/d/b.png", "/d/x.png", "external", "pseudo")])
    assert not split_overlaps(shared)  # the public cohort's design: both held out
    leaked = pd.concat([shared, overlap_table([("c+x", "u3+w1", "/d/c.png", "/d/x.png", "train",
                                                "pseudo")])], ignore_index=True)
    found = [str(p) for p in split_overlaps(leaked).items]
    assert len(found) == 2
    assert found[0].startswith("column 'patient_id', value 'w1': MG woman in 3 splits: train")
    assert found[1].startswith("column 'mg_image', value 'x.png': image in 3 splits: train (1 row: "
                               "case_id c+x), test (1 row: case_id a+x) and external")


def test_the_same_image_bytes_under_two_names_are_one_image():
    from dlum.data.manifest import split_overlaps

    table = overlap_table([("c1", "p1", "/d/u1.png", "/d/m1.png", "train"),
                           ("c2", "p2", "/e/copy.png", "/d/m2.png", "validation")])
    assert not split_overlaps(table)  # by path: two files
    digests = {"us": np.array(["aa", "aa"], dtype=object), "mg": np.array(["b1", "b2"], dtype=object)}
    found = [str(p) for p in split_overlaps(table, digests=digests).items]
    assert found == ["column 'us_image', value 'copy.png': one image (same bytes) as copy.png, "
                     "u1.png in 2 splits: train (1 row: case_id c1) and validation (1 row: "
                     "case_id c2)"]


def test_split_overlaps_are_listed_up_to_a_bound_then_counted():
    from dlum.data.manifest import SplitOverlapError, check_split_overlap, split_overlaps

    rows = [(f"t{i}", f"p{i}", f"/d/u{i}.png", f"/d/m{i}.png", "train") for i in range(30)]
    rows += [(f"v{i}", f"p{i}", f"/d/v{i}.png", f"/d/n{i}.png", "validation") for i in range(30)]
    found = split_overlaps(overlap_table(rows), limit=10)
    assert len(found.items) == 10 and found.more == 20
    with pytest.raises(SplitOverlapError) as caught:
        check_split_overlap(overlap_table(rows))
    assert caught.value.count == 30 and "… and 10 more" in str(caught.value)


def test_folds_can_replace_the_split_column():
    from dlum.data.manifest import split_overlaps

    table = overlap_table([("c1", "p1", "/d/u1.png", "/d/m1.png", "train"),
                           ("c2", "p1", "/d/u2.png", "/d/m2.png", "train")])
    found = split_overlaps(table, splits=["training folds", "validation fold 0"])
    assert "patient in 2 splits: training folds (1 row: case_id c1) and validation fold 0" in \
        str(found.items[0])
