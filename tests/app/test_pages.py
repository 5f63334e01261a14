"""Home and Case Review through ``streamlit.testing.v1.AppTest`` (no browser).

AppTest in Streamlit 1.67 drives ``st.file_uploader`` directly (``FileUploader.set_value`` with
``(name, bytes, mime)``), so the real DICOM + PNG pair is uploaded here as a user would; the
browser test repeats it through chromium.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import REPO_ROOT, TEST_THRESHOLDS
from tests.app.uploads import malformed_uploads, png_bytes

HOME = str(REPO_ROOT / "streamlit_app.py")
CASE_REVIEW = str(REPO_ROOT / "pages" / "1_Case_Review.py")
TIMEOUT = 120

pytestmark = pytest.mark.slow


def _run(path: str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return values[0]


def _badges(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown if ":badge" in str(m.value)
                     or "No call" in str(m.value) or "Follow-up" in str(m.value)
                     or "Biopsy recommended" in str(m.value))


def _texts(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


# ------------------------------------------------------------------------------------------ Home
def test_home_shows_model_card_device_and_disclaimer(use_checkpoint):
    at = _run(HOME)
    assert at.title[0].value.startswith("DL-UM")
    assert "research use only" in at.warning[0].value.lower()
    assert _metric(at, "Checkpoint") == "test-ckpt"
    params = float(_metric(at, "Parameters").split()[0])
    assert 30 < params < 60  # two VGG19 branches with heads: ~40 M
    assert _metric(at, "Device") in ("CPU", "GPU")
    assert _metric(at, "DL-UM threshold") == f"{TEST_THRESHOLDS['p_dlum']:.3f}"
    tabs = [t.label for t in at.tabs]
    assert {"Model", "Training data", "Pairing rule", "Operating points",
            "Held-out results"} <= set(tabs)
    text = _texts(at)
    assert "pseudo-pairs" in text  # the card says pairing = pseudo
    assert "Case Review" in text or any("Case Review" in str(p.proto) for p in at.get("page_link"))
    assert not at.error


def test_home_without_checkpoint_explains_what_to_do(no_checkpoint):
    at = _run(HOME)
    assert any("No DL-UM checkpoint" in i.value for i in at.info)
    assert not at.error
    assert not at.metric


def test_a_broken_checkpoint_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    monkeypatch.setenv("DLUM_CHECKPOINT", str(broken))
    for page in (HOME, CASE_REVIEW):
        at = _run(page)
        assert len(at.error) == 1 and "not valid JSON" in at.error[0].value
        assert not at.metric


@pytest.mark.parametrize("threshold", ["NaN", "-0.2", '"high"'])
def test_a_card_with_a_bad_threshold_is_refused_on_every_page(app_checkpoint, tmp_path, monkeypatch,
                                                              threshold):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(app_checkpoint, bad)
    text = (bad / "card.json").read_text()
    card = json.loads(text)
    card["operating_point"]["thresholds_per_model"]["p_us_head"] = "__X__"
    (bad / "card.json").write_text(json.dumps(card).replace('"__X__"', threshold))
    monkeypatch.setenv("DLUM_CHECKPOINT", str(bad))
    for page in [HOME, CASE_REVIEW, *map(str, sorted((REPO_ROOT / "pages").glob("[0-9]*_*.py")))]:
        at = _run(page)
        errors = [e.value for e in at.error]
        if page in (HOME, CASE_REVIEW) or "Cohort_ROC" in page:
            assert any("operating_point.thresholds_per_model.p_us_head" in e for e in errors), page


def test_weights_giving_nan_are_refused_on_every_page_that_loads_the_model(app_checkpoint, tmp_path,
                                                                          monkeypatch):
    from tests.checkpoints import copy_with_nan_weights

    bad = copy_with_nan_weights(app_checkpoint, tmp_path / "nan", "mg")
    monkeypatch.setenv("DLUM_CHECKPOINT", str(bad))
    for page in (HOME, CASE_REVIEW):
        at = _run(page)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "non-finite output" in errors[0] and "p_mg_head" in errors[0], page
        assert not at.metric or page == HOME and not any(m.label == "Checkpoint" for m in at.metric)


def test_show_error_lists_every_problem_of_a_table():
    def script():
        from dlum.app.resources import show_error
        from dlum.errors import CohortError, InputError

        show_error(CohortError(["column 'label' is missing", "row 3: p_dlum is 1.7"], "preds.csv"))
        show_error(InputError("the file is empty", "us.png"))
        show_error(RuntimeError("internal detail"))

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception
    table, image, other = (e.value for e in at.error)
    assert "preds.csv" in table and "2 problem(s)" in table
    assert "- column 'label' is missing" in table and "- row 3: p_dlum is 1.7" in table
    assert not at.get("download_button")  # two problems: all shown, nothing to download
    assert image == "us.png: the file is empty"
    assert "RuntimeError" in other and "internal detail" not in other  # details go to the log


def test_show_error_shows_the_first_problems_and_offers_the_rest_as_a_download():
    def script():
        from dlum.app.resources import show_error
        from dlum.errors import CohortError
        from dlum.tables import Problem

        show_error(CohortError([Problem("not a number", r, "p_dlum", "x") for r in range(1, 427)],
                               "preds.csv"))

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception
    (text,) = (e.value for e in at.error)
    assert "426 problem(s)" in text and "… and 406 more problem(s)" in text
    assert text.count("\n- ") == 20
    assert [b.label for b in at.get("download_button")] == ["Download all problems (CSV)"]


# ----------------------------------------------------------------------------------- Case Review
def test_case_review_without_checkpoint_says_so(no_checkpoint):
    at = _run(CASE_REVIEW)
    assert any("No DL-UM checkpoint" in i.value for i in at.info)
    assert not at.file_uploader and not at.error


def test_case_review_starts_empty_with_two_uploaders(use_checkpoint):
    at = _run(CASE_REVIEW)
    assert [u.key for u in at.file_uploader] == ["us_file", "mg_file"]
    assert any("Upload an ultrasound" in i.value for i in at.info)
    assert not at.metric and not at.error
    assert "MB" in at.file_uploader[0].help and "disk" in at.file_uploader[0].help


def test_case_review_real_dicom_and_png_pair(use_checkpoint, shared_data, predictor):
    dicom = shared_data / "mg" / "cbis_ddsm" / "dicom" / "benign_1-130.dcm"
    png = shared_data / "us" / "busbra" / "Images" / "bus_0001-l.png"
    if not dicom.is_file() or not png.is_file():
        pytest.skip("the CBIS-DDSM DICOM or the BUS-BRA image is not in the public data folder")
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value((png.name, png.read_bytes(), "image/png"))
    at.file_uploader(key="mg_file").set_value((dicom.name, dicom.read_bytes(), "application/dicom"))
    at.run()
    assert not at.exception and not at.error
    shown = float(_metric(at, "DL-UM P(malignant)"))
    expected = predictor.predict_pair(us=png, mg=dicom).p_dlum  # whole images: the default ROI
    assert shown == pytest.approx(expected, abs=1e-3)
    assert 0.0 <= float(_metric(at, "US branch")) <= 1.0
    assert 0.0 <= float(_metric(at, "MG branch")) <= 1.0
    text = _texts(at)
    assert "2864 × 4432 px" in text  # the DICOM was decoded at full size
    assert re.search(r"Inference \d+\.\d\d s", text)
    assert "operating threshold 0.500" in text and "sensitivity 87.5%" in text
    # whole images: outside what the model was trained on, so no call until confirmed
    assert any("draw the lesion box" in w.value for w in at.warning)
    assert "No call: draw the lesion box" in _badges(at)
    key = next(c.key for c in at.checkbox if c.key.startswith("whole_confirmed"))
    at.checkbox(key=key).check()
    at.run()
    expected_call = "Biopsy recommended" if expected >= TEST_THRESHOLDS["p_dlum"] else "Follow-up"
    assert expected_call in _badges(at)

    # BI-RADS 4 on US and 3 on MG: a discordant case
    at.segmented_control(key="us_birads").set_value(4)
    at.segmented_control(key="mg_birads").set_value(3)
    at.run()
    assert "Discordant BI-RADS (US 4 · MG 3)" in _texts(at)

    # a box drawn through the numeric fallback changes the input, hence the probability
    at.number_input(key="mg_x0").set_value(1000)
    at.number_input(key="mg_y0").set_value(1500)
    at.number_input(key="mg_x1").set_value(1600)
    at.number_input(key="mg_y1").set_value(2100)
    at.run()
    assert not at.exception and not at.error
    boxed = predictor.predict_pair(us=png, mg=dicom, mg_box=(1000, 1500, 1600, 2100)).p_dlum
    assert float(_metric(at, "DL-UM P(malignant)")) == pytest.approx(boxed, abs=1e-3)

    # CAMs on demand: the crop and five blocks for each modality
    at.toggle(key="cam_on").set_value(True)
    at.run()
    assert not at.exception and not at.error
    captions = [c for img in at.get("image") for c in img.captions]
    assert captions.count("Input (ROI crop)") == 2
    assert sum(c.startswith("Block ") for c in captions) == 10
    assert "relative within each image" in _texts(at)
    assert [b.label for b in at.get("download_button")] == ["Report (JSON)", "Overlays (PNG)"]


def test_case_review_one_modality_is_marked(use_checkpoint):
    image = (np.add.outer(np.arange(80), np.arange(100)) % 256).astype(np.uint8)
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value(("only_us.png", png_bytes(image), "image/png"))
    at.run()
    assert not at.exception and not at.error
    assert _metric(at, "DL-UM P(malignant)") == "—"
    assert _metric(at, "MG branch") == "—"
    assert 0.0 <= float(_metric(at, "US branch")) <= 1.0
    assert any("One image only" in i.value and "US branch only" in i.value for i in at.info)


def test_case_review_example_phantom(use_checkpoint):
    at = _run(CASE_REVIEW)
    at.segmented_control(key="source").set_value("Example case")
    at.run()
    assert not at.exception and not at.error
    assert "synthetic phantom" in at.selectbox(key="example").value.title
    assert any("Synthetic phantom" in i.value for i in at.info)
    assert 0.0 <= float(_metric(at, "DL-UM P(malignant)")) <= 1.0
    # the example's BI-RADS are preset, so the badge names the subgroup
    example = at.selectbox(key="example").value
    badge = [m.value for m in at.markdown if "BI-RADS (US" in m.value]
    assert len(badge) == 1
    assert f"US {example.us_birads} · MG {example.mg_birads}" in badge[0]
    assert ("Concordant" in badge[0]) or ("Discordant" in badge[0])


@pytest.mark.parametrize("case", list(malformed_uploads()))
def test_case_review_malformed_upload_shows_a_message(use_checkpoint, case):
    name, data, phrase = malformed_uploads()[case]
    at = _run(CASE_REVIEW)
    at.file_uploader(key="mg_file").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and phrase in errors[0].lower() and name in errors[0]
    assert "Traceback" not in errors[0]
    assert not at.metric  # no result from a file that cannot be used


# --------------------------------------------------------------- one decision: CLI = Case Review
@pytest.mark.parametrize("given", [("us", "mg"), ("us",), ("mg",)], ids=["pair", "us-only", "mg-only"])
def test_case_review_and_predict_give_the_same_decision_at_the_same_threshold(monkeypatch, capsys,
                                                                              given):
    import json

    from dlum import cli

    shipped = REPO_ROOT / "checkpoints" / "dlum-public-v2"
    files = {m: REPO_ROOT / "examples" / f"phantom-12-{m}.png" for m in ("us", "mg")}
    boxes = {"us": (98, 45, 192, 179), "mg": (49, 88, 141, 186)}
    args = ["predict", "--checkpoint", str(shipped), "--precision", "fp32"]
    for m in given:
        args += [f"--{m}", str(files[m]), f"--{m}-roi", ",".join(map(str, boxes[m]))]
    assert cli.main(args) == 0
    expected = json.loads(capsys.readouterr().out)["decision"]

    monkeypatch.setenv("DLUM_CHECKPOINT", str(shipped))
    monkeypatch.setenv("DLUM_PRECISION", "fp32")
    at = _run(CASE_REVIEW)
    for m in given:
        at.file_uploader(key=f"{m}_file").set_value((files[m].name, files[m].read_bytes(), "image/png"))
    at.run()
    for m in given:
        for name, value in zip(("x0", "y0", "x1", "y1"), boxes[m]):
            at.number_input(key=f"{m}_{name}").set_value(value)
    at.run()
    assert not at.exception and not at.error
    assert expected["label"] in _badges(at)
    from dlum.card import read_card

    threshold = read_card(shipped).threshold_for(expected["output"])
    found = re.search(re.escape(expected["output_title"]) + r": P = (\d\.\d{3}) vs operating "
                      r"threshold (\d\.\d{3})", _texts(at))
    assert found, _texts(at)
    assert float(found.group(1)) == pytest.approx(expected["probability"], abs=6e-4)
    assert found.group(2) == f"{threshold:.3f}" and expected["threshold"] == round(threshold, 4)
