"""dlum.tables: one declarative reader, one problem format (row, column, value, what is wrong)."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from dlum.errors import CohortError
from dlum.tables import (
    MAX_PROBLEMS,
    Column,
    Problem,
    Schema,
    choice,
    csv_bytes,
    escape_cell,
    parse_flag,
    parse_probability,
    problems_frame,
    read_csv_text,
    read_table,
)

SCHEMA = Schema("test table", (
    Column("case_id", required=True, needed=True, unique=True, doc="id"),
    Column("p_[a-z]+", parse_probability, needed=True, pattern=True, doc="a probability"),
    Column("split", choice(("train", "test"), {"testing": "test"}), default="test", doc="split"),
    Column("flag", parse_flag, doc="yes/no"),
), at_least_one="p_[a-z]+")


def test_parsed_values_defaults_aliases_and_extra_columns():
    frame = read_table(b"Case ID,p_a,Split,note\nc1,0.5,TESTING,x\nc2,1,,y\n", SCHEMA)
    assert list(frame.columns) == ["case_id", "p_a", "split", "note", "flag"]
    assert frame["split"].tolist() == ["test", "test"] and frame["p_a"].tolist() == [0.5, 1.0]
    assert frame["flag"].tolist() == [None, None] and frame.index.tolist() == [1, 2]
    assert frame.attrs["source"] == "test table"


def test_each_problem_names_its_cell():
    with pytest.raises(CohortError) as info:
        read_table(b"case_id,p_a,flag\nc1,2,maybe\nc1,,yes\n", SCHEMA, name="t.csv")
    got = set(info.value.problems)
    assert got == {
        "data row 1 (file line 2), column 'p_a', value '2': outside [0, 1] (a probability is expected)",
        "data row 1 (file line 2), column 'flag', value 'maybe': not true/false (yes/no, 1/0)",
        "data row 2 (file line 3), column 'case_id', value 'c1': repeats data row 1",
        "data row 2 (file line 3), column 'p_a': empty (a value is needed)",
    }
    assert all(isinstance(p, Problem) for p in info.value.records)
    frame = problems_frame(info.value)
    assert list(frame.columns) == ["row", "file_line", "column", "value", "problem"] and len(frame) == 4


def test_header_problems():
    with pytest.raises(CohortError) as info:
        read_table(b"id,p_a,p_a\n1,0.1,0.2\n", SCHEMA)
    text = "\n".join(info.value.problems)
    assert "column 'p_a': appears 2 times in the header" in text
    assert "missing required column(s) 'case_id'" in text


@pytest.mark.parametrize("source, phrase", [
    (b"", "empty"), (b"\x00\x01\x02", "NUL bytes"), (b"\xff\xfe\xfa", "not UTF-8"),
])
def test_unreadable_sources(source, phrase):
    with pytest.raises(CohortError, match=phrase):
        read_csv_text(source, "x.csv")


def test_a_folder_a_missing_file_and_a_fifo_are_refused_by_type(tmp_path):
    import os

    with pytest.raises(CohortError, match="is a folder"):
        read_csv_text(tmp_path)
    with pytest.raises(CohortError, match="not found"):
        read_csv_text(tmp_path / "nope.csv")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(CohortError, match="not a regular file"):
        read_csv_text(fifo)


def test_text_and_binary_buffers_and_blank_lines():
    frame = read_csv_text(io.StringIO("a,b\n1,2\n\n3,4\n\n"))
    assert frame.values.tolist() == [["1", "2"], ["", ""], ["3", "4"]]


def test_problems_are_bounded():
    rows = "".join(f"c{i},7\n" for i in range(3 * MAX_PROBLEMS))
    with pytest.raises(CohortError) as info:
        read_table(("case_id,p_a\n" + rows).encode(), SCHEMA)
    assert len(info.value.problems) == MAX_PROBLEMS and info.value.count == 3 * MAX_PROBLEMS
    assert f"… and {3 * MAX_PROBLEMS - 20} more" in str(info.value)  # the message lists 20


def test_formula_cells_are_escaped_in_every_csv_written():
    assert escape_cell("=1+1") == "'=1+1" and escape_cell("+x") == "'+x" and escape_cell("-2") == "-2"
    data = csv_bytes(pd.DataFrame({"=bad": ["@cmd", "ok"], "n": [1, 2]})).decode()
    assert data.splitlines() == ["'=bad,n", "'@cmd,1", "ok,2"]


def test_schema_markdown_documents_every_column():
    text = SCHEMA.markdown()
    for name in ("case_id", "p_[a-z]+", "split", "flag"):
        assert f"`{name}`" in text
