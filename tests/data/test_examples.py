"""dlum.data.examples: phantoms, and public pseudo-pairs from the checkpoint's test split only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import MG, US
from dlum.data.examples import PHANTOM, PSEUDO_PAIR, example_catalogue, load_example

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "dlum-public-v2"


def test_phantoms_are_labelled_and_load():
    catalogue = example_catalogue(None, SHIPPED)
    assert catalogue and all(c.kind == PHANTOM and not c.split for c in catalogue)
    assert {c.label for c in catalogue} == {0, 1}
    loaded = load_example(catalogue[0])
    for m in (US, MG):
        assert loaded[m].ndim == 2 and loaded[m].dtype == np.float32


def test_public_examples_are_test_split_pairs_with_the_right_pathology(shared_data):
    cases = [c for c in example_catalogue(shared_data, SHIPPED) if c.kind == PSEUDO_PAIR]
    assert len(cases) == 4 and {c.label for c in cases} == {0, 1}
    test = pd.read_csv(SHIPPED / "predictions.csv").set_index("case_id")
    for case in cases:
        us_id, mg_id = case.key.removeprefix("pseudo-").split("-mdb")
        case_id = f"{us_id}+mdb{mg_id}"
        assert case_id in test.index and test.loc[case_id, "split"] == "test"
        assert int(test.loc[case_id, "label"]) == case.label
        assert case.split == "test" and "test split" in case.title
        assert "DIFFERENT women" in case.description
        loaded = load_example(case)
        h, w = loaded[MG].shape
        x0, y0, x1, y1 = case.mg_box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_without_the_checkpoints_predictions_only_phantoms(tmp_path, shared_data):
    assert all(c.kind == PHANTOM for c in example_catalogue(shared_data, tmp_path))
