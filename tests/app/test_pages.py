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
    assert [b.label for b in at.get("download_button")] == ["Report (JSON)", "Overlays (PNG)",
                                                           "Download report (PDF)"]


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


# ------------------------------------------------------------- lesion finder and centre + radius
def _figure(at: AppTest, key: str) -> dict:
    """The plotly figure (its JSON) of the chart with ``key``."""
    import json

    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def _rects(figure: dict) -> list[tuple]:
    return [(s["x0"], s["y0"], s["x1"], s["y1"], s.get("line", {}).get("dash"))
            for s in figure["layout"].get("shapes", []) if s.get("type") == "rect"]


def _labels(figure: dict) -> list[str]:
    return [a["text"] for a in figure["layout"].get("annotations", [])]


def _blocks(at: AppTest, modality: str) -> list[float]:
    """The per-block head probabilities shown (full precision) for one modality."""
    (table,) = [d.value for d in at.dataframe if f"{modality} P(malignant)" in d.value.columns]
    return [float(v) for v in table[f"{modality} P(malignant)"]]


def _phantom_png(m: str, seed: int = 21) -> tuple[bytes, np.ndarray]:
    from dlum.data.synthetic import make_phantom_case

    image = np.asarray(make_phantom_case(seed, malignant=True)[m], dtype=np.uint8)
    return png_bytes(image), image


@pytest.fixture()
def finding_of(monkeypatch):
    """Make the real, loaded lesion finder return a given finding (a test double for ``find``
    only: the page still loads the finder with ``load_finder``), recording each call."""
    from dlum.app import case_review as cr
    from dlum.localize import Finding, LesionFinder

    calls = []

    def use(box, score, reason=None, min_score=0.5):
        def find(self, image):
            calls.append(image.shape)
            return Finding(box, score, reason, min_score)

        monkeypatch.setattr(LesionFinder, "find", find)
        cr.cached_finding.clear()
        return calls

    yield use
    cr.cached_finding.clear()


def test_case_review_suggests_the_us_box_and_uses_it_once_accepted(use_checkpoint, predictor,
                                                                   finding_of):
    data, image = _phantom_png("us")
    box = (96, 60, 180, 150)
    calls = finding_of(box, 0.87)
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value(("lesion_us.png", data, "image/png"))
    at.run()
    assert not at.exception and not at.error
    assert calls == [image.shape]  # the finder ran once, on the decoded image
    figure = _figure(at, "us_chart")
    assert (*box, "dash") in _rects(figure)  # drawn at once, dashed
    assert _labels(figure) == ["suggested · 0.87"]
    assert [b.key for b in at.button if b.key == "us_accept"] == ["us_accept"]
    assert [at.number_input(key=f"us_{k}").value for k in ("x0", "y0", "x1", "y1")] == list(box)
    text = _texts(at)
    assert "The lesion finder suggests the dashed box (confidence 0.87)" in text
    # not used silently: the image is read whole, no call, and the panel says why
    assert "ROI: whole image (the suggested box is not used until accepted)" in text
    assert ("Ultrasound: suggested by the lesion finder (confidence 0.87), not yet confirmed"
            in text)
    assert "No call: draw the lesion box" in _badges(at)
    assert any("accept the lesion finder's suggested box" in w.value for w in at.warning)
    # (the per-block heads, at full precision: the small random test model's block-5 head
    # barely moves with the box)
    whole = predictor.predict_pair(us=image.astype(np.float32))
    assert _blocks(at, "Ultrasound") == pytest.approx(whole.p_us_blocks, abs=1e-6)

    at.button(key="us_accept").click()
    at.run()
    assert not at.exception and not at.error
    expected = predictor.predict_pair(us=image.astype(np.float32), us_box=box)
    assert _blocks(at, "Ultrasound") == pytest.approx(expected.p_us_blocks, abs=1e-6)
    assert expected.p_us_blocks != pytest.approx(whole.p_us_blocks, abs=1e-5)
    assert float(_metric(at, "US branch")) == pytest.approx(expected.p_us_head, abs=1e-3)
    threshold = predictor.card.threshold_for("p_us_head")
    assert ("Biopsy recommended" if expected.p_us_head >= threshold else "Follow-up") in _badges(at)
    assert not any("Outside what the model" in w.value for w in at.warning)
    text = _texts(at)
    assert f"Ultrasound: box {list(box)} suggested by the lesion finder (confidence 0.87), " \
           "accepted" in text
    figure = _figure(at, "us_chart")
    assert (*box, None) in _rects(figure) and not _labels(figure)  # now the solid lesion box
    assert calls == [image.shape]  # cached: not run again

    # adjusting a field makes it the user's box
    at.number_input(key="us_x0").set_value(90)
    at.run()
    adjusted = (90, *box[1:])
    expected = predictor.predict_pair(us=image.astype(np.float32), us_box=adjusted)
    assert _blocks(at, "Ultrasound") == pytest.approx(expected.p_us_blocks, abs=1e-6)
    assert f"box {list(adjusted)} adjusted from the lesion finder's suggestion" in _texts(at)
    assert _labels(_figure(at, "us_chart")) == ["suggested · 0.87"]  # kept for reference


@pytest.mark.parametrize("box, score, reason", [
    ((10, 20, 60, 90), 0.21, "low confidence (0.21, below 0.50): check the suggested box"),
    (None, 0.0, "no lesion-like region: no pixel reached the finder's probability threshold"),
], ids=["low-confidence", "nothing-found"])
def test_case_review_a_doubtful_finding_asks_for_a_drawn_box(use_checkpoint, finding_of, box,
                                                             score, reason):
    finding_of(box, score, reason)
    data, _ = _phantom_png("us", seed=22)
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value(("doubtful_us.png", data, "image/png"))
    at.run()
    assert not at.exception and not at.error
    asks = [w.value for w in at.warning if "draw the lesion box" in w.value and reason in w.value]
    assert len(asks) == 1, [w.value for w in at.warning]
    assert "No call: draw the lesion box" in _badges(at)
    labels = _labels(_figure(at, "us_chart"))
    if box is None:
        assert "found no lesion" in asks[0] and not labels
        assert not [b for b in at.button if b.key == "us_accept"]
    else:
        assert "Low-confidence suggestion (0.21)" in asks[0]
        assert labels == ["suggested · 0.21 (low confidence)"]


def test_case_review_without_a_finder_works_as_before(use_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("DLUM_FINDER", str(tmp_path / "no-finder"))
    data, _ = _phantom_png("us", seed=23)
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value(("no_finder_us.png", data, "image/png"))
    at.run()
    assert not at.exception and not at.error
    assert any("No ultrasound lesion finder" in i.value and "DLUM_FINDER" in i.value
               for i in at.info)
    assert not _labels(_figure(at, "us_chart")) and not _rects(_figure(at, "us_chart"))
    assert 0.0 <= float(_metric(at, "US branch")) <= 1.0
    at.number_input(key="us_x0").set_value(50)  # drawing by hand works as before
    at.run()
    assert "drawn by hand" in _texts(at) and not at.error


def test_case_review_finds_the_box_with_the_test_finder(use_checkpoint, predictor):
    """No test double: the dark-blob test finder, loaded from its checkpoint, boxes the phantom's
    lesion; accepting it gives the probability of that box."""
    from dlum.data.synthetic import make_phantom_case

    case = make_phantom_case(7, malignant=True)
    image = np.asarray(case["us"], dtype=np.uint8)
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value(("phantom_us.png", png_bytes(image), "image/png"))
    at.run()
    assert not at.exception and not at.error
    figure = _figure(at, "us_chart")
    (suggested,) = [r[:4] for r in _rects(figure) if r[4] == "dash"]
    (label,) = _labels(figure)
    assert re.fullmatch(r"suggested · \d\.\d\d", label)
    from dlum.localize import box_iou

    assert box_iou(suggested, case["us_box"]) > 0.4  # it found the (dark) lesion
    at.button(key="us_accept").click()
    at.run()
    expected = predictor.predict_pair(us=image.astype(np.float32), us_box=suggested)
    assert _blocks(at, "Ultrasound") == pytest.approx(expected.p_us_blocks, abs=1e-6)
    assert "No call" not in _badges(at)


def test_case_review_example_keeps_its_box_and_shows_the_suggestion(use_checkpoint, finding_of):
    calls = finding_of((5, 6, 50, 60), 0.66)
    at = _run(CASE_REVIEW)
    at.segmented_control(key="source").set_value("Example case")
    at.run()
    assert not at.exception and not at.error and len(calls) == 1  # run on the example too
    example = at.selectbox(key="example").value
    figure = _figure(at, "us_chart")
    assert (5, 6, 50, 60, "dash") in _rects(figure) and _labels(figure) == ["suggested · 0.66"]
    assert (*example.us_box, None) in _rects(figure)  # the example's box is the one used
    assert "the example's annotated box is used unless you accept the suggestion" in _texts(at)
    assert f"Ultrasound: box {list(example.us_box)} annotated with the example" in _texts(at)
    at.button(key="us_accept").click()
    at.run()
    assert "Ultrasound: box [5, 6, 50, 60] suggested by the lesion finder (confidence 0.66), " \
           "accepted" in _texts(at)


def test_case_review_with_the_shipped_finder_on_a_busbra_image(use_checkpoint, shared_data,
                                                               monkeypatch):
    """The real finder (``checkpoints/us-finder-v1``) on a real BUS-BRA image: the page shows what
    the finder finds, and accepting it gives a result with that box."""
    from dlum.data.io import read_image
    from dlum.localize import load_finder

    shipped = REPO_ROOT / "checkpoints" / "us-finder-v1"
    png = shared_data / "us" / "busbra" / "Images" / "bus_0001-l.png"
    if not (shipped / "card.json").is_file() or not png.is_file():
        pytest.skip("the shipped lesion finder or the BUS-BRA image is not present")
    monkeypatch.setenv("DLUM_FINDER", str(shipped))
    expected = load_finder(shipped).find(read_image(png))
    at = _run(CASE_REVIEW)
    at.file_uploader(key="us_file").set_value((png.name, png.read_bytes(), "image/png"))
    at.run()
    assert not at.exception and not at.error
    figure = _figure(at, "us_chart")
    if expected.box is None:
        assert any("found no lesion" in w.value for w in at.warning) and not _labels(figure)
        return
    assert (*expected.box, "dash") in _rects(figure)
    assert _labels(figure)[0].startswith(f"suggested · {expected.score:.2f}")
    at.button(key="us_accept").click()
    at.run()
    assert not at.exception and not at.error
    assert f"Ultrasound: box {list(expected.box)} suggested by the lesion finder" in _texts(at)
    assert 0.0 <= float(_metric(at, "US branch")) <= 1.0


def test_case_review_mg_centre_and_radius_gives_the_box(use_checkpoint, predictor):
    data, image = _phantom_png("mg", seed=24)
    at = _run(CASE_REVIEW)
    at.file_uploader(key="mg_file").set_value(("centre_mg.png", data, "image/png"))
    at.run()
    assert not at.exception and not at.error
    assert any("Outside what the model was trained on" in w.value for w in at.warning)
    assert not _labels(_figure(at, "mg_chart"))  # no lesion finder for mammography
    at.number_input(key="mg_cx").set_value(120)
    at.number_input(key="mg_cy").set_value(100)
    at.number_input(key="mg_r").set_value(30)
    at.run()
    assert not at.exception and not at.error
    box = (90, 70, 150, 130)
    assert [at.number_input(key=f"mg_{k}").value for k in ("x0", "y0", "x1", "y1")] == list(box)
    assert f"box {list(box)} from lesion centre + radius" in _texts(at)
    assert (*box, None) in _rects(_figure(at, "mg_chart"))
    expected = predictor.predict_pair(mg=image.astype(np.float32), mg_box=box)
    assert _blocks(at, "Mammography") == pytest.approx(expected.p_mg_blocks, abs=1e-6)
    assert expected.p_mg_blocks != pytest.approx(
        predictor.predict_pair(mg=image.astype(np.float32)).p_mg_blocks, abs=1e-5)
    assert not any("Outside what the model" in w.value for w in at.warning)
    # clamped to the image near its corner
    at.number_input(key="mg_cx").set_value(10)
    at.number_input(key="mg_cy").set_value(250)
    at.run()
    assert [at.number_input(key=f"mg_{k}").value for k in ("x0", "y0", "x1", "y1")] == \
        [0, 220, 40, 256]
    # the whole image again keeps today's warning: no call until confirmed
    at.button(key="mg_whole").click()
    at.run()
    assert any("Outside what the model was trained on" in w.value for w in at.warning)
    assert "No call: draw the lesion box" in _badges(at)


# --------------------------------------------------------------- one decision: CLI = Case Review
@pytest.mark.parametrize("given", [("us", "mg"), ("us",), ("mg",)], ids=["pair", "us-only", "mg-only"])
def test_case_review_and_predict_give_the_same_decision_at_the_same_threshold(monkeypatch, capsys,
                                                                              use_finder, given):
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
