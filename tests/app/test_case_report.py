"""Case Review's printable PDF report: ``cr.case_report`` and the page's "Download report (PDF)"."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dlum.app import case_review as cr
from dlum.constants import MG, US
from dlum.decision import decide
from dlum.visualize.cam import CAMResult
from tests.app.conftest import REPO_ROOT

CASE_REVIEW = str(REPO_ROOT / "pages" / "1_Case_Review.py")
PDF_LABEL = "Download report (PDF)"


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b", pdf))


def _pdf_text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True,
                         capture_output=True, text=True).stdout
    return " ".join(out.split())


def _case(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {m: cr.image_from_array(rng.random((90, 110)).astype(np.float32) * 255, f"{m}.png", m)
            for m in (US, MG)}


def test_report_details_name_the_concordance_and_box_sources():
    badge = cr.concordance_badge(4, 3)
    states = {US: cr.RoiState().drawn((5, 6, 40, 50))}
    lines = cr.report_details(badge, states, "Phantom 12")
    assert lines[0] == badge.text and "Discordant" in lines[0]
    assert lines[1] == f"Ultrasound lesion box: {states[US].describe()}."
    assert lines[2] == "Example case: Phantom 12."
    assert cr.report_details(badge) == [badge.text]


def test_case_report_is_one_page_and_cached_on_the_case(predictor):
    images = _case(0)
    boxes = {US: (10, 10, 60, 70), MG: None}
    prediction = cr.predict_case(predictor, images[US], images[MG], boxes[US], boxes[MG])
    decision = decide(prediction, predictor.card, whole_image_confirmed=True)
    size = predictor.input_size
    rng = np.random.default_rng(1)
    cams = CAMResult({m: rng.random((5, size, size)).astype(np.float32) for m in (US, MG)},
                     "Grad-CAM", "fused", 0.0)
    args = (predictor, prediction, decision, images, boxes)
    first = cr.case_report(*args, model="m", cams=cams, details=["a line"])
    assert first.startswith(b"%PDF-") and _pages(first) == 1
    assert cr.case_report(*args, model="m", cams=cams, details=["a line"]) is first  # cached
    other = cr.case_report(*args, model="m", cams=cams, details=["another line"])
    assert other is not first and _pages(other) == 1


@pytest.mark.slow
def test_case_review_offers_the_pdf_report_of_the_case_shown(use_checkpoint, monkeypatch,
                                                              tmp_path):
    built = {}
    add = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        built[file_name] = data_callable  # the page's deferred callable, to run it here
        return add(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    at = AppTest.from_file(CASE_REVIEW, default_timeout=180)
    at.run()
    at.segmented_control(key="source").set_value("Example case")
    at.run()
    assert not at.exception and not at.error
    labels = [b.label for b in at.get("download_button")]
    assert PDF_LABEL in labels
    button = next(b for b in at.get("download_button") if b.label == PDF_LABEL)
    assert button.proto.deferred_file_id  # built on click, not on every rerun
    pdf = built["dlum_case_report.pdf"]()
    assert pdf.startswith(b"%PDF-") and _pages(pdf) == 1
    if shutil.which("pdftotext"):
        text = _pdf_text(pdf, tmp_path)
        shown = next(m.value for m in at.metric if m.label == "DL-UM P(malignant)")
        assert shown in text  # the probability the page shows, formatted the same way
        assert "For research use only." in text and "test-ckpt" in text
        assert at.selectbox(key="example").value.title in text
