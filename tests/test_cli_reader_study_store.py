"""`python -m dlum reader-study --store FILE / --study NAME`: Tables 2-4, the acceptance of DL-UM's
suggestion and the MRMC table of a Reading Session study on a real SQLite store; the `--reads`
path with confidence ratings; and the messages (exit 2, no traceback) for a user's mistakes."""
from __future__ import annotations

import io
import sys

import pytest

from dlum import study_analysis as sa
from dlum.cli import main
from dlum.formatting import format_ci, format_number
from tests.study_reads import ADMIN_CODE, build_study

ENV = "DLUM_STUDY_ADMIN_CODE"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study in ``<dir>/study.sqlite`` and its joined reads."""
    folder = tmp_path_factory.mktemp("studies")
    store, admin = build_study(folder / "study.sqlite")
    return folder, store, store.load_joined(admin)


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
    """stdin is not a terminal: without the variable there is no prompt, but a message."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.delenv(ENV, raising=False)


def expected_numbers(joined) -> list[str]:
    """What the report must print, computed from dlum.study_analysis on store.load_joined."""
    accept = sa.acceptance(joined)
    everyone = accept[(accept["reader"] == sa.ALL_READERS) & (accept["subgroup"] == "all")].iloc[0]
    wrong = f"{everyone['accepted_when_wrong']}/{everyone['ai_wrong']}"
    mrmc = sa.mrmc_summary(joined).set_index("group").loc["All readers"]
    return [f"{everyone['accepted']}/{everyone['reads']}", wrong, format_number(mrmc["auc_unaided"]),
            format_number(mrmc["auc_aided"]), format_ci(mrmc["difference"], mrmc["ci_low"], mrmc["ci_high"])]


def test_store_report_has_tables_acceptance_and_mrmc(study, monkeypatch, capsys):
    folder, store, joined = study
    monkeypatch.setenv(ENV, ADMIN_CODE)
    assert main(["reader-study", "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    for heading in ("Table 2 style", "Table 3 style", "Table 4 style",
                    "Acceptance of DL-UM's suggestion (Fig. 5 style)", "MRMC: unaided vs aided"):
        assert heading in out, heading
    assert "6 cases, 3 readers" in out and "Accepted when DL-UM wrong" in out
    for number in expected_numbers(joined):
        assert number in out, number
    assert out.index("Table 4 style") < out.index("Acceptance") < out.index("MRMC")


def test_study_name_in_the_study_folder_and_markdown(study, monkeypatch, capsys):
    folder, _, joined = study
    monkeypatch.setenv(ENV, ADMIN_CODE)
    monkeypatch.setenv("DLUM_STUDY_DIR", str(folder))
    assert main(["reader-study", "--study", "study", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "## Acceptance of DL-UM's suggestion (Fig. 5 style)" in out and "## MRMC: unaided vs aided" in out
    assert "| Readers | Number of readers | Cases |" in out
    assert all(number in out for number in expected_numbers(joined))


def test_reads_with_confidence_get_the_mrmc_table(study, tmp_path, capsys):
    _, store, joined = study
    admin = store.admin_sign_in(ADMIN_CODE)
    reads, cohort = tmp_path / "reads.csv", tmp_path / "cohort.csv"
    store.reads_frame(admin).to_csv(reads, index=False)
    store.cohort_frame(admin).to_csv(cohort, index=False)
    assert main(["reader-study", "--reads", str(reads), "--cohort", str(cohort)]) == 0
    out = capsys.readouterr().out
    assert "MRMC: unaided vs aided" in out and "Accepted when DL-UM wrong" in out
    assert all(number in out for number in expected_numbers(joined))
    # without the confidence column: no MRMC table, and no DL-UM right / wrong split without ai_call
    frame = store.reads_frame(admin).drop(columns=["confidence", "ai_call"])
    frame.to_csv(reads, index=False)
    assert main(["reader-study", "--reads", str(reads), "--cohort", str(cohort)]) == 0
    out = capsys.readouterr().out
    assert "MRMC" not in out and "Acceptance of DL-UM's suggestion" in out
    assert "DL-UM wrong" not in out and "right vs wrong is not available" in out


def test_a_study_without_reads_says_so(tmp_path, monkeypatch, capsys):
    store, _ = build_study(tmp_path / "empty.sqlite", reads=False)
    monkeypatch.setenv(ENV, ADMIN_CODE)
    assert main(["reader-study", "--store", str(store.path)]) == 0
    assert sa.NO_READS_NOTE in capsys.readouterr().out


def _fails(argv, capsys, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("dlum reader-study: error: ") and message in captured.err, captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_user_mistakes_are_messages(study, tmp_path, monkeypatch, capsys):
    _, store, _ = study
    _fails(["reader-study", "--store", str(store.path)], capsys, ENV)  # no code, no terminal
    monkeypatch.setenv(ENV, "not-the-code")
    _fails(["reader-study", "--store", str(store.path)], capsys, "Wrong admin code")
    monkeypatch.setenv(ENV, ADMIN_CODE)
    _fails(["reader-study", "--store", str(tmp_path / "missing.sqlite")], capsys, "no such study file")
    monkeypatch.setenv("DLUM_STUDY_DIR", str(tmp_path))
    _fails(["reader-study", "--study", "other"], capsys, "other.sqlite: no such study file")
    _fails(["reader-study", "--study", "../study"], capsys, "not a path")
    text = tmp_path / "notes.sqlite"
    text.write_text("case_id,reader\n")
    _fails(["reader-study", "--store", str(text)], capsys, "not a study file")
    assert text.read_text() == "case_id,reader\n"  # never written to
    bare = tmp_path / "bare.sqlite"
    from dlum.study_store import StudyStore

    StudyStore(bare).set_admin_code(ADMIN_CODE)
    _fails(["reader-study", "--store", str(bare)], capsys, "no study has been set up")
    _fails(["reader-study", "--store", str(store.path), "--cohort", "c.csv"], capsys, "--cohort goes with")
