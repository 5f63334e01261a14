"""dlum.readers: the optional `confidence` (0-100) and `ai_call` columns of a reads table."""
from __future__ import annotations

import io

import pytest

from dlum import readers as rs
from dlum.errors import CohortError

HEADER = "case_id,reader,modality,session,call,accepted_ai,confidence,ai_call\n"


def test_confidence_and_ai_call_are_read():
    reads = rs.read_reads(io.BytesIO((HEADER + "k1,R1,us,unaided,benign,,12.5,\n"
                                      "k1,R1,us,aided,malignant,true,80,Malignant\n").encode()))
    assert reads["confidence"].tolist() == [12.5, 80.0]
    assert reads["ai_call"].isna().tolist() == [True, False] and reads["ai_call"].iloc[1] == "malignant"


def test_without_the_columns_they_are_empty():
    reads = rs.read_reads(io.BytesIO(b"case_id,reader,modality,session,call\nk1,R1,us,aided,benign\n"))
    assert reads["confidence"].isna().all() and reads["ai_call"].isna().all()


@pytest.mark.parametrize("cell, column", [("101", "confidence"), ("-1", "confidence"), ("high", "confidence"),
                                          ("nan", "confidence"), ("maybe", "ai_call")])
def test_bad_cells_are_listed_with_their_row(cell, column):
    row = "k1,R1,us,aided,benign,true," + ("50," + cell if column == "ai_call" else cell + ",benign")
    with pytest.raises(CohortError) as err:
        rs.read_reads(io.BytesIO((HEADER + row + "\n").encode()), name="reads.csv")
    assert f"data row 1 (file line 2), column '{column}', value '{cell}'" in str(err.value)
