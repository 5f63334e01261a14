"""dlum.predictions: the predictions-table contract (columns, names, read / write, thresholds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlum.card import read_card
from dlum.errors import CohortError
from dlum.predictions import (
    model_columns,
    read_predictions,
    thresholds_for,
    write_predictions,
)

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"


def test_types_names_and_a_users_own_model_column():
    frame = read_predictions(b"case_id,label,p_dlum,p_resnet_2024,split\n"
                             b"a,malignant,0.9,0.8,external\nb,0,0.1,0.3,test\n")
    assert frame["label"].tolist() == [1, 0] and frame["p_resnet_2024"].dtype == float
    assert model_columns(frame) == {"DL-UM": "p_dlum", "resnet_2024": "p_resnet_2024"}
    assert frame["subgroup"].tolist() == ["undetermined"] * 2  # absent: the default
    assert frame["split"].tolist() == ["external", "test"]


def test_every_problem_names_row_column_and_value():
    text = (b"case_id,label,p_dlum,subgroup,split\n"
            b"c1,maybe,0.5,concordant,test\n"       # row 1: label
            b"c2,0,1.4,concordant,test\n"           # row 2: outside [0, 1]
            b"c1,1,nan,unknown,holdout\n")          # row 3: repeat, NaN, subgroup, split
    with pytest.raises(CohortError) as info:
        read_predictions(text, name="p.csv")
    problems = info.value.problems
    assert len(problems) == 6, problems
    assert "data row 1 (file line 2), column 'label', value 'maybe': not benign/malignant/0/1" in problems
    assert any("row 2" in p and "'p_dlum'" in p and "outside [0, 1]" in p for p in problems)
    assert any("row 3" in p and "repeats data row 1" in p for p in problems)
    assert any("row 3" in p and "not a finite number" in p for p in problems)
    assert any("'holdout'" in p and "external" in p for p in problems)


def test_a_first_row_with_an_extra_cell_is_reported_as_such():
    with pytest.raises(CohortError) as info:
        read_predictions(b"case_id,label,p_dlum\n1,a,0,0.5\n2,b,1,0.6\n")
    assert "data row 1 (file line 2)" in info.value.problems[0]
    assert "has 4 cells but the header has 3" in info.value.problems[0]
    assert not any("more than once" in p or "repeats" in p for p in info.value.problems)


def test_no_model_column_or_missing_required_columns():
    with pytest.raises(CohortError) as info:
        read_predictions(b"id,truth,prob\na,1,0.5\n", name="wrong.csv")
    message = str(info.value)
    assert "'case_id', 'label'" in message and "no column matching 'p_[a-z0-9_]+'" in message
    assert "found: id, truth, prob" in message


@pytest.mark.parametrize("data, expected", [(b"", "empty"), (b"case_id,label,p_dlum\n", "no rows"),
                                            (b"\xff\xfe\x00garbage", "not UTF-8")])
def test_unreadable_or_empty(data, expected):
    with pytest.raises(CohortError, match=expected):
        read_predictions(data)


def test_write_escapes_formulas_and_replaces_atomically(tmp_path):
    frame = pd.DataFrame({"case_id": ["=cmd|' /C calc'!A0", "@SUM(1)", "-0.5", "ok"],
                          "label": [0, 1, 0, 1], "p_dlum": [0.1, 0.2, 0.3, 0.4]})
    path = write_predictions(frame, tmp_path / "p.csv")
    text = path.read_text()
    assert "'=cmd" in text and "'@SUM" in text and "\n-0.5," in text
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_thresholds_come_from_the_card_else_validation_else_default_else_the_user():
    frame = read_predictions(SHIPPED / "held_out_predictions.csv")
    card = read_card(SHIPPED)
    from_card = thresholds_for(frame, card)
    assert {t.source for t in from_card.values()} == {"card"}
    chosen = thresholds_for(frame, None)  # the card's rule on the table's validation rows
    for column, t in chosen.items():
        assert t.source == "validation" and t.value == pytest.approx(from_card[column].value)
    test_only = frame[frame["split"] == "test"]
    assert {t.source for t in thresholds_for(test_only, None).values()} == {"default"}
    user = thresholds_for(frame, card, user={"p_dlu": 0.7})
    assert (user["p_dlu"].value, user["p_dlu"].source) == (0.7, "user")
    assert "validation rows" in chosen["p_dlum"].describe()


def test_large_bad_table_is_bounded():
    n = 20_000
    rows = "\n".join(f"c{i},x,2" for i in range(n))
    with pytest.raises(CohortError) as info:
        read_predictions(("case_id,label,p_dlum\n" + rows + "\n").encode())
    assert len(info.value.problems) == 1000 and info.value.count == 2 * n
    assert "and 39980 more" in str(info.value) or str(info.value).count("\n") < 30
    assert np.isfinite(info.value.more)
