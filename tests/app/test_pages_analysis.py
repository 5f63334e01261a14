"""Cohort ROC and Reader Study pages through ``streamlit.testing.v1.AppTest`` (no browser).

Streamlit 1.67's AppTest drives ``st.file_uploader`` itself (``FileUploader.set_value((name, bytes,
mime))``), so predictions, reads and cohort CSVs are uploaded here as a user would; the checkpoint's
own ``predictions.csv`` is found through ``$DLUM_CHECKPOINT``.
"""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import REPO_ROOT, run_page as _run
from tests.test_evaluation import make_predictions, readme_results
from tests.test_readers import csv, make_study

COHORT_ROC = str(REPO_ROOT / "pages" / "2_Cohort_ROC.py")
READER_STUDY = str(REPO_ROOT / "pages" / "3_Reader_Study.py")
TIMEOUT = 120

pytestmark = pytest.mark.slow


def _plotly(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def _upload_predictions(at: AppTest, data: bytes, name: str = "predictions.csv") -> AppTest:
    at.radio(key="source").set_value("Upload a predictions CSV")
    _run(at)
    at.file_uploader(key="predictions_upload").set_value((name, data, "text/csv"))
    return _run(at)


# ------------------------------------------------------------------------------------ Cohort ROC
def test_cohort_roc_without_checkpoint_asks_for_an_upload(no_checkpoint):
    at = _run(AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT))
    assert at.title[0].value == "Cohort ROC"
    assert any("No `predictions.csv`" in i.value for i in at.info)
    assert at.radio(key="source").options == ["Upload a predictions CSV", "Synthetic example"]
    assert _plotly(at) == 0 and not at.error


def test_cohort_roc_with_uploaded_predictions(no_checkpoint):
    at = AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)
    _run(at)
    _upload_predictions(at, make_predictions(90).to_csv(index=False).encode())
    assert not at.error
    assert _plotly(at) == 4  # ROC, confusion matrix, calibration, decision curves
    assert len(at.dataframe) >= 6  # AUCs, DeLong, metrics, biopsies, paired tests, calibration
    # no card and no validation rows: 0.5 for every model, and the page says so
    assert at.slider(key="threshold_p_dlum").value == 0.5
    assert any("0.5: no card threshold" in c.value for c in at.caption)
    assert len(at.get("download_button")) >= 7
    assert not any("Pseudo-paired" in w.value for w in at.warning)
    # moving DL-UM's threshold changes DL-UM's decisions only
    before = at.dataframe[3].value.copy()
    at.slider(key="threshold_p_dlum").set_value(0.7)
    at.radio(key="subgroup").set_value("discordant")
    _run(at)
    assert any(h.value == "Decisions at each model's threshold, discordant lesions" for h in at.subheader)
    used = {r["Model"]: r["Threshold"] for _, r in at.dataframe[1].value.iterrows()}
    assert used == {"DL-UM": "0.700", "DL-U": "0.500", "DL-M": "0.500"}
    assert before is not None
    # the confusion-matrix model's slider is that model's threshold
    at.selectbox(key="cm_model").set_value("DL-U")
    _run(at)
    assert at.slider(key="threshold_p_dlu").value == 0.5
    # declaring the upload pseudo-paired shows the banner
    at.checkbox(key="declared_pseudo").check()
    _run(at)
    assert any("different women" in w.value for w in at.warning)


def test_cohort_roc_uses_the_checkpoint_predictions_and_each_models_card_threshold(tmp_path,
                                                                                   monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    make_predictions(60).to_csv(folder / "predictions.csv", index=False)
    (folder / "card.json").write_text(json.dumps({
        "model": {}, "arch": "dlum", "data": {"pairing": "pseudo"},
        "operating_point": {"thresholds_per_model": {"p_dlum": 0.35, "p_dlu": 0.6}}}))
    monkeypatch.setenv("DLUM_CHECKPOINT", str(folder))
    at = _run(AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT))
    assert at.radio(key="source").value == "Checkpoint predictions"
    assert at.slider(key="threshold_p_dlum").value == pytest.approx(0.35)
    used = {r["Model"]: (r["Threshold"], r["From"]) for _, r in at.dataframe[1].value.iterrows()}
    assert used["DL-UM"][0] == "0.350" and used["DL-U"][0] == "0.600"
    assert "card" in used["DL-U"][1] and "0.5" in used["DL-M"][1]  # DL-M: not in the card
    assert any("Pseudo-paired cohort" in w.value for w in at.warning)
    assert _plotly(at) == 4 and not at.error  # with the decision curves


def test_cohort_roc_on_the_shipped_checkpoint_equals_the_readme_table(monkeypatch):
    monkeypatch.setenv("DLUM_CHECKPOINT", str(REPO_ROOT / "checkpoints" / "dlum-public-v2"))
    at = _run(AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT))
    expected = readme_results()
    for subgroup in ("all", "concordant", "discordant"):
        at.radio(key="subgroup").set_value(subgroup)
        _run(at)
        metrics = next(d.value for d in at.dataframe if "Sensitivity [95% CI]" in d.value.columns)
        assert len(metrics) == 3  # DL-UM, DL-U, DL-M by default
        for _, row in metrics.iterrows():
            sens, spec = (float(row[f"{k} [95% CI]"].split("%")[0]) / 100
                          for k in ("Sensitivity", "Specificity"))
            want = expected[(subgroup, row["Model"])]
            assert (sens, spec) == pytest.approx(want[:2], abs=0.0006), (subgroup, row["Model"])
        calibration = next(d.value for d in at.dataframe if "Brier score" in d.value.columns)
        for _, row in calibration.iterrows():  # ECE and Brier as the README table gives them
            shown = (float(row["ECE (10 equal-count bins)"]), float(row["Brier score"]))
            assert shown == expected[(subgroup, row["Model"])][2:], (subgroup, row["Model"])


def test_cohort_roc_wrong_columns_show_an_error(no_checkpoint):
    at = AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)
    _run(at)
    _upload_predictions(at, b"id,truth,score\na,1,0.3\n", "wrong.csv")
    assert len(at.error) == 1
    message = at.error[0].value
    assert "wrong.csv" in message and "missing required column(s) 'case_id', 'label'" in message
    assert _plotly(at) == 0


def test_cohort_roc_malformed_values_listed(no_checkpoint):
    frame = make_predictions(20).astype(object)
    frame.loc[0, "label"] = "unknown"
    frame.loc[1, "p_dlum"] = 2.5
    at = AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)
    _run(at)
    _upload_predictions(at, frame.to_csv(index=False).encode(), "bad.csv")
    assert "2 problem(s)" in at.error[0].value
    assert "data row 1 (file line 2), column 'label', value 'unknown'" in at.error[0].value
    assert "data row 2 (file line 3), column 'p_dlum', value '2.5'" in at.error[0].value


def test_cohort_roc_one_class_subgroup_is_a_note(no_checkpoint):
    frame = make_predictions(30)
    frame.loc[frame["subgroup"] == "discordant", "label"] = "malignant"
    at = AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)
    _run(at)
    _upload_predictions(at, frame.to_csv(index=False).encode())
    at.radio(key="subgroup").set_value("discordant")
    _run(at)
    assert not at.error
    assert any("one class" in i.value for i in at.info)
    assert _plotly(at) == 4  # with the decision curves


def test_cohort_roc_synthetic_example_is_labelled(no_checkpoint):
    at = AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)
    _run(at)
    at.radio(key="source").set_value("Synthetic example")
    _run(at)
    assert any("Synthetic example, not model output" in w.value for w in at.warning)
    assert _plotly(at) == 4  # with the decision curves


# ---------------------------------------------------------------------------------- Reader Study
def test_reader_study_published_and_demo():
    at = _run(AppTest.from_file(READER_STUDY, default_timeout=TIMEOUT))
    assert [t.label for t in at.tabs] == ["Published study", "Your study"]
    assert any("DEMO data, not study data" in w.value for w in at.warning)
    assert not at.error
    texts = [h.value for h in at.subheader]
    for heading in ("Table 2 ·", "Table 3 ·", "Table 4 ·", "Performance and biopsies", "Explanation requests",
                    "Agreement between readers"):
        assert any(t.startswith(heading) for t in texts), (heading, texts)
    assert _plotly(at) == 4  # published kappa forest, biopsy bars, acceptance bars, kappa heatmap
    assert len(at.dataframe) == 3 + 5  # Tables 2-4; performance, changes, explanations, acceptance, agreement
    assert any(i.value.startswith("MRMC needs") for i in at.info)  # the demo has no confidence ratings
    at.radio(key="rating").set_value("birads")
    at.radio(key="heat_subgroup").set_value("discordant")
    _run(at)
    assert not at.error


def _upload_study(reads, cohort) -> AppTest:
    """The Reader Study page after uploading a reads and a cohort table."""
    at = AppTest.from_file(READER_STUDY, default_timeout=TIMEOUT)
    _run(at)
    at.file_uploader(key="reads_upload").set_value(("reads.csv", csv(reads), "text/csv"))
    at.file_uploader(key="cohort_upload").set_value(("cohort.csv", csv(cohort), "text/csv"))
    _run(at)
    return at


def test_reader_study_with_uploaded_study():
    cohort, reads = make_study(24)
    at = _upload_study(reads, cohort)
    assert not at.error
    assert not any("DEMO data" in w.value for w in at.warning)
    assert any("24 cases, 4 readers" in c.value for c in at.caption)
    assert _plotly(at) == 4  # with the acceptance bars


def test_reader_study_malformed_reads_show_an_error():
    cohort, reads = make_study(6)
    reads = reads.astype(object)
    reads.loc[0, "session"] = "morning"
    reads.loc[1, "call"] = "?"
    at = _upload_study(reads, cohort)
    assert len(at.error) == 1
    assert "2 problem(s)" in at.error[0].value
    assert "data row 1 (file line 2), column 'session', value 'morning'" in at.error[0].value


def test_reader_study_without_aided_reads_says_so():
    cohort, reads = make_study(12)
    reads = reads[reads["session"] == "unaided"]
    at = _upload_study(reads, cohort)
    assert not at.error
    notes = [i.value for i in at.info]
    assert any(n.startswith("No aided reads") for n in notes), notes
    assert not any("requested_explanation" in n for n in notes)
