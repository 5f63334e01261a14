"""dlum.report_pdf: the one-page PDF case report, rendered with poppler (pdftoppm, pdftotext), and
``python -m dlum predict --report``."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dlum import cli
from dlum.constants import DISCLAIMER, MG, US
from dlum.data.io import read_image
from dlum.decision import decide
from dlum.disagreement import case_branches_disagree
from dlum.report_pdf import (
    MARGIN,
    PAGE_H,
    PAGE_W,
    REGIONS,
    case_report_pdf,
    font_characters,
    report_for_case,
)
from tests.checkpoints import write_test_checkpoint

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = {US: REPO / "examples" / "phantom-12-us.png", MG: REPO / "examples" / "phantom-12-mg.png"}
BOXES = {US: (98, 45, 192, 179), MG: (49, 88, 141, 186)}
CREATED = datetime(2025, 1, 2, 3, 4, tzinfo=timezone.utc)
DPI = 60

POPPLER = shutil.which("pdftoppm") and shutil.which("pdftotext")
needs_poppler = pytest.mark.skipif(
    not POPPLER, reason="pdftoppm / pdftotext (Debian poppler-utils) are not installed; "
    "`make system-tools` installs them")


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from dlum.inference import Predictor

    return Predictor(write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "test-ckpt"),
                     device="cpu", precision="fp32")


def _intervals(prediction, card):
    """Interval-like inputs around each output: one straddles its threshold, one does not."""
    out = {}
    for k, output in enumerate(("p_dlum", "p_us_head", "p_mg_head")):
        p, t = getattr(prediction, output), card.threshold_for(output)
        low, high = (min(p, t) - 0.02, max(p, t) + 0.02) if k == 0 else (p - 0.001, p + 0.001)
        out[output] = SimpleNamespace(output=output, estimate=p, low=low, high=high, level=1.0,
                                      views=6, seed=0, threshold=t,
                                      uncertain=low < t <= high)
    return out


@pytest.fixture(scope="module")
def case(predictor):
    images = {m: read_image(EXAMPLE[m]) for m in (US, MG)}
    prediction = predictor.predict_pair(us=images[US], mg=images[MG], us_box=BOXES[US],
                                        mg_box=BOXES[MG])
    decision = decide(prediction, predictor.card)
    intervals = _intervals(prediction, predictor.card)
    disagree = case_branches_disagree(prediction, predictor.card)
    pdf = report_for_case(predictor, prediction, decision, images=images, boxes=BOXES,
                          names={m: EXAMPLE[m].name for m in (US, MG)}, intervals=intervals,
                          branches_disagree=disagree, details=["Discordant BI-RADS (US 4 · MG 3)"],
                          created=CREATED)
    return SimpleNamespace(images=images, prediction=prediction, decision=decision,
                           intervals=intervals, disagree=disagree, pdf=pdf)


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b", pdf))


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True,
                          capture_output=True, text=True).stdout


def _flat(text: str) -> str:
    return " ".join(text.split())


def _render(pdf: bytes, tmp_path: Path) -> Image.Image:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", str(DPI), "-png", "-singlefile", str(path),
                    str(tmp_path / "page")], check=True, capture_output=True)
    return Image.open(tmp_path / "page.png").convert("RGB")


def _crop(page: np.ndarray, region) -> np.ndarray:
    x, y, w, h = (v / 25.4 * DPI for v in region)
    return page[round(y):round(y + h), round(x):round(x + w)]


# ---------------------------------------------------------------------------------- the report
@pytest.mark.slow
def test_the_report_is_one_a4_page(case, tmp_path):
    assert case.pdf.startswith(b"%PDF-") and _pages(case.pdf) == 1
    if shutil.which("pdfinfo"):
        (tmp_path / "r.pdf").write_bytes(case.pdf)
        info = subprocess.run(["pdfinfo", str(tmp_path / "r.pdf")], check=True,
                              capture_output=True, text=True).stdout
        assert re.search(r"^Pages:\s+1$", info, re.M)
        assert "595.28 x 841.89 pts (A4)" in info


@pytest.mark.slow
@needs_poppler
def test_rendered_page_shows_the_images_and_cams_where_the_layout_puts_them(case, tmp_path):
    image = _render(case.pdf, tmp_path)
    expected = (PAGE_W / 25.4 * DPI, PAGE_H / 25.4 * DPI)
    assert all(abs(a - b) <= 1 for a, b in zip(image.size, expected)), image.size
    page = np.asarray(image).astype(np.float32)
    assert page.std() > 20  # not a blank page
    for name in ("us_image", "mg_image", "us_cams", "mg_cams", "colour_bar"):
        region = _crop(page, REGIONS[name])
        h, w = region.shape[:2]
        centre = region[h // 4: h - h // 4, w // 4: w - w // 4]
        assert centre.std() > 10, f"{name} looks uniform"
    cams = _crop(page, REGIONS["us_cams"])
    assert (np.abs(cams[..., 0] - cams[..., 2]) > 60).mean() > 0.05  # coloured maps, not grey
    margin = page[:, : round((MARGIN - 2) / 25.4 * DPI)]
    assert margin.min() > 250  # the left margin stays white
    bar = _crop(page, REGIONS["colour_bar"])
    left, right = bar[:, :3].reshape(-1, 3).mean(0), bar[:, -3:].reshape(-1, 3).mean(0)
    assert left[2] > left[0] + 60 and right[0] > right[2] + 60  # blue = low, red = high


@pytest.mark.slow
@needs_poppler
def test_text_holds_the_case_numbers_decision_and_disclaimer(case, predictor, tmp_path):
    text = _flat(_text(case.pdf, tmp_path))
    card = predictor.card
    for output in ("p_dlum", "p_us_head", "p_mg_head"):
        assert f"{getattr(case.prediction, output):.3f}" in text
        assert f"{card.threshold_for(output):.3f}" in text
        iv = case.intervals[output]
        assert f"{iv.low:.3f}–{iv.high:.3f}" in text
    assert case.decision.label in text and "Decision:" in text
    assert _flat(DISCLAIMER.replace("**", "")) in text
    assert "test-ckpt" in text and "2025-01-02 03:04 UTC" in text
    assert "TTA range" in text and "6 augmented views" in text and "90%" not in text
    assert "TTA range: the lowest to the highest P(malignant) over the plain view" in text
    assert text.count("uncertain") >= 2  # the flag of the straddling interval, and its key
    assert ("Branches disagree" if case.disagree else "Branches agree") in text
    assert "Grad-CAM" in text and "Block 5" in text and "CAM low" in text
    assert "Discordant BI-RADS (US 4 · MG 3)" in text
    assert EXAMPLE[US].name in text and EXAMPLE[MG].name in text


@pytest.mark.slow
@needs_poppler
def test_no_missing_glyphs(case, tmp_path):
    text = _text(case.pdf, tmp_path)
    drawable = font_characters()
    missing = sorted({c for c in text if not c.isspace() and ord(c) not in drawable})
    assert not missing, missing
    assert {"≥", "–", "·", "×"} <= set(text)  # beyond Latin-1: printed, not dropped


@pytest.mark.slow
@needs_poppler
def test_characters_the_font_lacks_become_question_marks(case, predictor, tmp_path):
    assert ord("超") not in font_characters()
    pdf = case_report_pdf(case.prediction, case.decision, card=predictor.card,
                          images={US: case.images[US]}, boxes={US: BOXES[US]},
                          names={US: "超声-left.png"}, created=CREATED)
    text = _text(pdf, tmp_path)
    assert "??-left.png" in text and "超" not in text
    assert "Not computed for this report." in text  # no CAMs given
    assert "Per-case intervals: not computed" in _flat(text)


@needs_poppler
def test_one_image_read_whole_is_one_page_with_the_call_withheld(predictor, tmp_path):
    image = read_image(EXAMPLE[US])
    prediction = predictor.predict_pair(us=image)
    decision = decide(prediction, predictor.card)
    notes = [f"Note {k}: " + "a long closing line that wraps " * 12 for k in range(12)]
    pdf = case_report_pdf(prediction, decision, card=predictor.card, images={US: image},
                          details=notes, created=CREATED)
    assert _pages(pdf) == 1
    text = _flat(_text(pdf, tmp_path))
    assert decision.label in text and decision.label.startswith("No call")
    assert f"{prediction.p_us_head:.3f}" in text
    assert "No mammography image" in text and "whole image read" in text
    assert "more note(s) in the JSON report" in text  # cut at the footer, never a second page
    assert "page 1 of 1" in text


@needs_poppler
def test_a_range_holds_the_printed_p_and_a_share_is_named(case, predictor, tmp_path):
    p, t = case.prediction.p_dlum, case.decision.threshold
    # the TTA batch's plain view read P a little higher than the prediction's forward (bf16);
    # the threshold sits between the two, so only the printed range straddles it
    low, high = p + 0.004, p + 0.05
    iv = SimpleNamespace(output="p_dlum", estimate=low, low=low, high=high, level=1.0, views=4,
                         seed=0, threshold=p + 0.002, uncertain=False)
    pdf = case_report_pdf(case.prediction, case.decision, card=predictor.card,
                          images=case.images, boxes=BOXES, intervals={"p_dlum": iv},
                          created=CREATED)
    text = _flat(_text(pdf, tmp_path))
    assert f"{p:.3f}–{high:.3f}" in text and f"{low:.3f}–{high:.3f}" not in text
    assert "decision, uncertain" in text  # judged on the range printed
    share = SimpleNamespace(**{**vars(iv), "level": 0.8, "threshold": t,
                               "uncertain": low < t <= high})
    pdf = case_report_pdf(case.prediction, case.decision, card=predictor.card,
                          images=case.images, boxes=BOXES, intervals={"p_dlum": share},
                          created=CREATED)
    text = _flat(_text(pdf, tmp_path))
    assert "80% interval" in text and f"{low:.3f}–{high:.3f}" in text  # a share need not hold P
    assert "the central 80% of P(malignant)" in text


@pytest.mark.slow
def test_real_intervals_fit_the_report(case, predictor):
    from dlum.uncertainty import decision_intervals

    intervals = decision_intervals(predictor, case.prediction, case.decision, case.images[US],
                                   case.images[MG], us_box=BOXES[US], mg_box=BOXES[MG])
    assert set(intervals) == {"p_dlum", "p_us_head", "p_mg_head"}
    assert intervals["p_dlum"].threshold == case.decision.threshold
    pdf = case_report_pdf(case.prediction, case.decision, card=predictor.card,
                          images=case.images, boxes=BOXES, intervals=intervals, created=CREATED)
    assert _pages(pdf) == 1
    if POPPLER:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            text = _flat(_text(pdf, Path(folder)))
        from dlum.uncertainty import holding

        for output, iv in intervals.items():
            p = getattr(case.prediction, output)
            shown = holding(iv, p)  # the range printed holds the P printed beside it
            assert shown.low <= p <= shown.high
            assert f"{shown.low:.3f}–{shown.high:.3f}" in text


@pytest.mark.slow
@needs_poppler
def test_a_public_pair_bus_bra_and_mini_mias(shared_data, predictor, tmp_path):
    """A real (pseudo-)pair: BUS-BRA ultrasound with its mask's box, mini-MIAS mammogram with its
    centre + radius box; skipped without the public data."""
    from dlum.data.public import read_mias

    us_path = shared_data / "us" / "busbra" / "Images" / "bus_0001-l.png"
    mask_path = shared_data / "us" / "busbra" / "Masks" / "mask_0001-l.png"
    if not us_path.is_file() or not mask_path.is_file():
        pytest.skip("BUS-BRA bus_0001-l is not in the public data folder")
    ys, xs = np.nonzero(np.asarray(Image.open(mask_path).convert("L")) > 0)
    us_box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    lesion = read_mias(shared_data / "mg" / "mias").iloc[0]
    mg_box = tuple(int(lesion[k]) for k in ("x0", "y0", "x1", "y1"))
    images = {US: read_image(us_path), MG: read_image(lesion["image"])}
    prediction = predictor.predict_pair(us=images[US], mg=images[MG], us_box=us_box, mg_box=mg_box)
    decision = decide(prediction, predictor.card)
    pdf = report_for_case(predictor, prediction, decision, images=images,
                          boxes={US: us_box, MG: mg_box},
                          names={US: us_path.name, MG: Path(lesion["image"]).name})
    assert _pages(pdf) == 1
    text = _flat(_text(pdf, tmp_path))
    for output in ("p_dlum", "p_us_head", "p_mg_head"):
        assert f"{getattr(prediction, output):.3f}" in text
    assert decision.label in text and "bus_0001-l.png" in text
    assert f"box [{', '.join(map(str, mg_box))}] (yellow)" in text
    page = np.asarray(_render(pdf, tmp_path)).astype(np.float32)
    for name in ("us_image", "mg_image", "us_cams", "mg_cams"):
        assert _crop(page, REGIONS[name]).std() > 10, name


# ------------------------------------------------------------------------- predict --report
def _predict_args(predictor, out) -> list[str]:
    return ["predict", "--checkpoint", str(predictor.checkpoint), "--precision", "fp32",
            "--device", "cpu", "--us", str(EXAMPLE[US]), "--us-roi", ",".join(map(str, BOXES[US])),
            "--mg", str(EXAMPLE[MG]), "--mg-roi", ",".join(map(str, BOXES[MG])),
            "--report", str(out)]


@pytest.mark.slow
def test_predict_writes_the_report_and_guards_it(predictor, tmp_path, capsys):
    out = tmp_path / "case.pdf"
    assert cli.main(_predict_args(predictor, out)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report_file"] == str(out)
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and _pages(data) == 1
    if POPPLER:
        text = _flat(_text(data, tmp_path))
        assert f"{printed['p_dlum']:.3f}" in text and printed["decision"]["label"] in text
    # an existing report is kept without --force
    assert cli.main(_predict_args(predictor, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlum predict: error: --report") and "--force" in err
    assert out.read_bytes() == data


@pytest.mark.slow
def test_predict_report_with_cam_and_uncertainty_shares_one_computation(predictor, tmp_path, capsys,
                                                                         monkeypatch):
    """--report, --cam and --uncertainty together: the CAMs and the TTA ranges are computed once
    and the JSON, the PNGs and the PDF show the same case."""
    import dlum.uncertainty as unc
    import dlum.visualize.cam as cam

    calls = {"cams": 0, "tta": 0}
    real_cams, real_tta = cam.compute_cams, unc.case_uncertainty

    def counted_cams(*a, **k):
        calls["cams"] += 1
        return real_cams(*a, **k)

    def counted_tta(*a, **k):
        calls["tta"] += 1
        return real_tta(*a, **k)

    monkeypatch.setattr(cam, "compute_cams", counted_cams)
    monkeypatch.setattr(unc, "case_uncertainty", counted_tta)
    out = tmp_path / "case.pdf"
    args = _predict_args(predictor, out) + ["--cam", str(tmp_path / "cams"), "--uncertainty"]
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert calls == {"cams": 1, "tta": 1}
    assert len(printed["cam_files"]) == 10 and all(Path(f).is_file() for f in printed["cam_files"])
    assert printed["p_dlum_low"] <= printed["p_dlum"] <= printed["p_dlum_high"]
    if POPPLER:
        text = _flat(_text(out.read_bytes(), tmp_path))
        assert f"{printed['p_dlum']:.3f}" in text


def test_predict_report_refuses_bad_names_before_any_work(predictor, tmp_path, capsys):
    (tmp_path / "folder.PDF").mkdir()
    for name, message in (("case.txt", "ending in .pdf"), ("nowhere/case.pdf", "does not exist"),
                          ("folder.PDF", "is a folder")):
        assert cli.main(_predict_args(predictor, tmp_path / name)) == 2
        err = capsys.readouterr().err
        assert err.startswith("dlum predict: error:") and message in err
        assert "Traceback" not in err
    assert not (tmp_path / "case.txt").exists()


def test_predict_help_describes_the_report(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    out = _flat(capsys.readouterr().out)
    assert "--report FILE.pdf" in out and "research-use disclaimer" in out
