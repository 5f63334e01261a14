"""Logic behind the Case Review page: uploads, ROI, badge, report, CAM thread safety."""
from __future__ import annotations

import io
import json
import threading
import uuid

import numpy as np
import pytest
from PIL import Image

from dlum.app import case_review as cr
from dlum.constants import MG, US
from dlum.data.roi import expand_box
from dlum.decision import decide
from dlum.errors import InputError
from tests.app.uploads import malformed_uploads, png_bytes


@pytest.mark.parametrize("case", list(malformed_uploads()))
def test_malformed_upload_gives_a_clear_message(case):
    name, data, phrase = malformed_uploads()[case]
    with pytest.raises(InputError) as err:
        cr.decode_upload(data, name, US)
    message = str(err.value)
    assert phrase in message.lower()
    assert name in message  # the user is told which file
    assert "Traceback" not in message


def test_decode_upload_keeps_pixels_and_hashes_bytes():
    array = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30)
    data = png_bytes(array)
    case = cr.decode_upload(data, "us.png", US)
    assert (case.height, case.width) == (40, 30)
    np.testing.assert_array_equal(case.image, array.astype(np.float32))
    assert case.digest == cr.upload_digest(data)
    assert cr.decode_upload(data, "again.png", US).digest == case.digest
    other = png_bytes(array[::-1].copy())
    assert cr.decode_upload(other, "us.png", US).digest != case.digest


# ------------------------------------------------------------------------------------------ ROI
def test_normalise_box_whole_image_is_none_and_bad_boxes_are_refused():
    assert cr.normalise_box(None, (50, 60)) is None
    assert cr.normalise_box((0, 0, 60, 50), (50, 60)) is None
    assert cr.normalise_box((5, 6, 20, 30), (50, 60)) == (5, 6, 20, 30)
    with pytest.raises(InputError):
        cr.normalise_box((10, 10, 5, 20), (50, 60))  # inverted
    with pytest.raises(InputError):
        cr.normalise_box((100, 100, 120, 120), (50, 60))  # outside the image


def test_box_from_plotly_selection_rounds_outward_and_clamps():
    state = {"selection": {"points": [], "point_indices": [], "lasso": [],
                           "box": [{"xref": "x", "yref": "y", "x": [30.6, 10.2], "y": [5.5, 40.1]}]}}
    assert cr.box_from_selection(state, (50, 60)) == (10, 5, 31, 41)
    state["selection"]["box"].append({"x": [-20, 80], "y": [45, 70]})  # the last box wins, clamped
    assert cr.box_from_selection(state, (50, 60)) == (0, 45, 60, 50)
    assert cr.box_from_selection({"selection": {"box": []}}, (50, 60)) is None
    assert cr.box_from_selection({"selection": {"box": [{"x": [200, 300], "y": [1, 2]}]}}, (50, 60)) is None
    assert cr.box_from_selection(None, (50, 60)) is None


def test_display_thumbnail_fits_and_reports_its_scale():
    image = np.tile(np.linspace(0, 4095, 1000, dtype=np.float32), (2000, 1))  # 16-bit-like ramp
    grey, scale = cr.display_thumbnail(image, max_side=640)
    assert grey.dtype == np.uint8 and grey.shape == (640, 320)
    assert scale == pytest.approx(1000 / 320)
    assert grey[:, 0].mean() < 10 and grey[:, -1].mean() > 245  # the ramp survives
    small = np.zeros((50, 80), np.float32)
    assert cr.display_thumbnail(small, max_side=640)[1] == 1.0


def test_roi_figure_axes_are_in_original_pixels():
    case = cr.image_from_array(np.random.default_rng(0).random((1500, 900)), "mg.png", MG)
    fig = cr.roi_figure(case, (100, 200, 300, 500))
    assert tuple(fig.layout.xaxis.range) == (0, 900) and tuple(fig.layout.yaxis.range) == (1500, 0)
    assert fig.layout.dragmode == "select"
    image, grid = fig.data
    assert image.dx == pytest.approx(1500 / 640, rel=0.01)  # one shown pixel covers dx originals
    assert grid.x.max() == 900 and grid.y.max() == 1500  # selectable points span the image
    shapes = [(s.x0, s.y0, s.x1, s.y1) for s in fig.layout.shapes]
    assert (100, 200, 300, 500) in shapes  # the box itself
    assert tuple(expand_box((100, 200, 300, 500), (1500, 900))) in shapes  # and the crop
    assert not cr.roi_figure(case, None).layout.shapes


# ----------------------------------------------------------------- lesion finder, box sources
def _finding(box=(40, 30, 90, 70), score=0.87, reason=None, min_score=0.5):
    from dlum.localize import Finding

    return Finding(box, score, reason, min_score)


def test_a_suggestion_is_shown_but_not_used_until_accepted():
    state = cr.RoiState.initial(_finding())
    assert state.source == "suggested" and state.pending and not state.confirmed
    assert state.box == (40, 30, 90, 70)  # the box fields are pre-filled with it ...
    assert state.used_box((40, 30, 90, 70)) is None  # ... but the network reads the whole image
    assert state.offers_suggestion()
    assert "not yet confirmed" in state.describe() and "confidence 0.87" in state.describe()
    accepted = state.accept()
    assert accepted.source == "accepted" and accepted.box == (40, 30, 90, 70)
    assert accepted.used_box((40, 30, 90, 70)) == (40, 30, 90, 70)
    assert not accepted.offers_suggestion()
    assert accepted.describe() == ("box [40, 30, 90, 70] suggested by the lesion finder "
                                   "(confidence 0.87), accepted")


def test_box_source_transitions():
    suggested = cr.RoiState.initial(_finding())
    adjusted = suggested.edited((41, 30, 90, 70))  # a field typed after a suggestion
    assert adjusted.source == "adjusted" and adjusted.used_box((41, 30, 90, 70)) == (41, 30, 90, 70)
    assert adjusted.accept().edited((1, 2, 3, 4)).source == "adjusted"
    drawn = suggested.drawn((5, 6, 20, 30))  # a drag replaces the suggestion
    assert drawn.source == "drawn" and drawn.box == (5, 6, 20, 30) and drawn.offers_suggestion()
    assert drawn.edited((5, 6, 21, 30)).source == "drawn"
    assert drawn.accept().box == (40, 30, 90, 70)  # the suggestion can be taken back
    centre = suggested.from_centre((10, 10, 30, 30))
    assert centre.source == "centre" and "centre + radius" in centre.describe()
    for whole in (suggested.whole(), suggested.drawn(None), suggested.edited(None),
                  suggested.from_centre(None)):
        assert whole.source == "whole" and whole.box is None and whole.used_box(None) is None
        assert whole.finding is not None  # the suggestion stays on offer
    example = cr.RoiState.initial(_finding(), example_box=(1, 2, 30, 40))
    assert example.source == "example" and example.used_box((1, 2, 30, 40)) == (1, 2, 30, 40)
    assert example.offers_suggestion()
    nothing = cr.RoiState.initial(_finding(box=None, score=0.0, reason="no lesion-like region"))
    assert nothing.source == "whole" and not nothing.offers_suggestion()
    with pytest.raises(ValueError):
        nothing.accept()
    with pytest.raises(ValueError):
        cr.RoiState("suggested", (1, 2, 3, 4), None)
    assert cr.RoiState.initial(None).source == "whole"


def test_finding_messages_say_what_to_do():
    kind, text = cr.finding_message(cr.RoiState.initial(_finding()))
    assert kind == "info" and "Accept" in text and "read whole" in text
    low = _finding(score=0.21, reason="low confidence (0.21, below 0.50): check the box")
    kind, text = cr.finding_message(cr.RoiState.initial(low))
    assert kind == "warning" and "draw the lesion box" in text and "0.21" in text
    assert "Finder: low confidence (0.21, below 0.50): check the box." in text
    empty = _finding(box=None, score=0.0, reason="no lesion-like region")
    kind, text = cr.finding_message(cr.RoiState.initial(empty))
    assert kind == "warning" and "found no lesion" in text and "no lesion-like region" in text
    assert cr.finding_message(cr.RoiState.initial(_finding()).accept())[0] == "caption"
    assert cr.finding_message(cr.RoiState()) is None


def test_suggested_box_is_drawn_dashed_and_labelled_with_its_confidence():
    case = cr.image_from_array(np.random.default_rng(0).random((200, 300)), "us.png", US)
    fig = cr.roi_figure(case, None, suggestion=_finding())
    (shape,) = fig.layout.shapes
    assert (shape.x0, shape.y0, shape.x1, shape.y1) == (40, 30, 90, 70)
    assert shape.line.dash == "dash"
    (label,) = fig.layout.annotations
    assert label.text == "suggested · 0.87"
    assert (label.x, label.y, label.yanchor) == (40, 30, "bottom")  # just above the box
    # accepted: the lesion box (solid) and its crop, no second suggested box
    accepted = cr.roi_figure(case, (40, 30, 90, 70), suggestion=_finding())
    assert not accepted.layout.annotations and len(accepted.layout.shapes) == 2
    assert all(s.line.dash != "dash" or s.line.color == "#7fd1ff" for s in accepted.layout.shapes)
    # another box drawn: the suggestion stays for reference
    drawn = cr.roi_figure(case, (100, 100, 150, 150), suggestion=_finding())
    assert len(drawn.layout.shapes) == 3 and drawn.layout.annotations[0].text == "suggested · 0.87"
    # nothing found: nothing drawn
    assert not cr.roi_figure(case, None, suggestion=_finding(box=None, score=0.0)).layout.shapes


def test_roi_figure_click_centre_mode_turns_clicks_into_points():
    case = cr.image_from_array(np.random.default_rng(0).random((200, 300)), "mg.png", MG)
    fig = cr.roi_figure(case, None, click_centre=True)
    # Streamlit makes a click a point selection only outside box-select mode: pan on fixed axes
    assert fig.layout.dragmode == "pan"
    assert fig.layout.xaxis.fixedrange and fig.layout.yaxis.fixedrange
    assert len(fig.data[1].x) == 64 * 64  # a finer lattice: the click snaps to 1/64 of a side
    plain = cr.roi_figure(case, None)
    assert plain.layout.dragmode == "select" and not plain.layout.xaxis.fixedrange
    assert len(plain.data[1].x) == 24 * 24


def test_suggestion_label_stays_on_the_image():
    low = _finding(box=(250, 0, 300, 200), score=0.3)
    rect, label = cr.suggestion_overlay(low, (200, 300))
    assert label["text"] == "suggested · 0.30 (low confidence)"
    assert rect["line"]["color"] == cr.LOW_CONFIDENCE_COLOR
    assert (label["y"], label["yanchor"]) == (0, "top")  # no room above or below: inside
    assert (label["x"], label["xanchor"]) == (300, "right")  # near the right edge
    _, below = cr.suggestion_overlay(_finding(box=(0, 2, 50, 40)), (200, 300))
    assert (below["y"], below["yanchor"]) == (40, "top")
    assert cr.suggestion_overlay(None, (200, 300)) is None


def test_centre_from_a_click_and_centre_radius_box():
    click = {"selection": {"points": [{"x": 10.4, "y": 20.6, "curve_number": 1}], "box": [],
                           "lasso": [], "point_indices": [3]}}
    assert cr.centre_from_selection(click, (100, 50)) == (10, 21)
    far = {"selection": {"points": [{"x": 80, "y": -5}], "box": []}}
    assert cr.centre_from_selection(far, (100, 50)) == (49, 0)  # inside the image
    drag = {"selection": {"points": [{"x": 1, "y": 2}], "box": [{"x": [0, 5], "y": [0, 5]}]}}
    assert cr.centre_from_selection(drag, (100, 50)) is None  # a drag is a box, not a click
    assert cr.centre_from_selection({"selection": {"points": [], "box": []}}, (100, 50)) is None
    assert cr.centre_from_selection(None, (100, 50)) is None
    assert cr.centre_radius_box(300, 400, 50, (1024, 1024)) == (250, 350, 350, 450)
    assert cr.centre_radius_box(20, 1000, 50, (1024, 1024)) == (0, 950, 70, 1024)  # clamped
    with pytest.raises(InputError):
        cr.centre_radius_box(20, 20, 0, (1024, 1024))
    assert cr.default_radius((1024, 800)) == 80


def test_run_finder_never_raises():
    from dlum.localize import new_finder

    class Broken:
        def find(self, image):
            raise RuntimeError("internal detail")

    finding = cr.run_finder(Broken(), np.zeros((8, 8), np.float32))
    assert finding.box is None and finding.low_confidence and "RuntimeError" in finding.reason
    finder = new_finder(pretrained=False, input_size=32)
    refused = cr.run_finder(finder, np.zeros((2, 3, 4), np.float32))  # not a 2-D image
    assert refused.box is None and "could not read this image" in refused.reason
    blank = cr.run_finder(finder, np.ones((40, 40), np.float32))
    assert blank.box is None and "blank" in blank.reason


def test_network_patch_is_the_expanded_crop_in_unit_range():
    image = np.zeros((100, 100), np.float32)
    image[40:60, 40:60] = 500.0
    patch = cr.network_patch(image, (40, 40, 60, 60), 32)
    assert patch.shape == (32, 32)
    assert patch.min() == 0.0 and patch.max() == 1.0
    assert patch[16, 16] == 1.0 and patch[0, 0] == 0.0  # the 30% margin shows background


# ------------------------------------------------------------------------------- badge, decision
@pytest.mark.parametrize(
    "us, mg, subgroup, color",
    [(4, 3, "discordant", "orange"), (2, 5, "discordant", "orange"), (4, 5, "concordant", "green"),
     (2, 3, "concordant", "green"), (None, 3, "undetermined", "gray"), (None, None, "undetermined", "gray")],
)
def test_concordance_badge(us, mg, subgroup, color):
    badge = cr.concordance_badge(us, mg)
    assert badge.subgroup == subgroup
    assert badge.color == color
    assert subgroup.split()[0] in badge.text.lower()


def test_concordance_badge_refuses_categories_outside_2_to_5():
    with pytest.raises(InputError):
        cr.concordance_badge(6, 3)


def _prediction(p_dlum=0.7, p_us=0.6, p_mg=0.4, mode="pair", precision="float32"):
    from dlum.inference import PairPrediction

    return PairPrediction(p_dlum=p_dlum, p_us_head=p_us, p_mg_head=p_mg,
                          p_us_blocks=[0.1, 0.2, 0.3, 0.4, p_us] if p_us is not None else None,
                          p_mg_blocks=[0.5, 0.4, 0.3, 0.2, p_mg] if p_mg is not None else None,
                          mode=mode, seconds=0.2, device="CPU",
                          precision=precision, model_version="m1")


def test_block_table_lists_five_heads_per_modality():
    table = cr.block_table(_prediction(p_mg=None, p_dlum=None, mode="us-only"))
    assert list(table.index) == [f"Block {k}" for k in range(1, 6)]
    assert list(table.columns) == ["Ultrasound P(malignant)"]
    assert table.iloc[-1, 0] == pytest.approx(0.6)


# ----------------------------------------------------------------------------- model-backed logic
def _phantom_pair(seed=0):
    from dlum.data.synthetic import make_phantom_case

    case = make_phantom_case(seed, malignant=bool(seed % 2), size=96)
    us = cr.image_from_array(case["us"], f"phantom{seed}-us", US)
    mg = cr.image_from_array(case["mg"], f"phantom{seed}-mg", MG)
    return us, mg, tuple(case["us_box"]), tuple(case["mg_box"])


def test_predict_case_pair_and_one_modality(predictor):
    us, mg, us_box, mg_box = _phantom_pair(1)
    pair = cr.predict_case(predictor, us, mg, us_box, mg_box)
    direct = predictor.predict_pair(us=us.image, mg=mg.image, us_box=us_box, mg_box=mg_box)
    assert pair.mode == "pair" and 0.0 <= pair.p_dlum <= 1.0
    assert pair.p_dlum == pytest.approx(direct.p_dlum, abs=1e-6)
    assert len(pair.p_us_blocks) == len(pair.p_mg_blocks) == 5
    only = cr.predict_case(predictor, us, None, us_box, None)
    assert only.mode == "us-only" and only.p_dlum is None and only.p_mg_head is None
    tol = 1e-5 if str(predictor.dtype) == "torch.float32" else 1e-2  # bf16 on GPUs
    assert only.p_us_head == pytest.approx(pair.p_us_head, abs=tol)  # same branch, same input
    with pytest.raises(InputError):
        cr.predict_case(predictor, None, None)


class _CountingPredictor:
    def __init__(self, real):
        self.real, self.calls = real, 0

    def predict_pair(self, **kwargs):
        self.calls += 1
        return self.real.predict_pair(**kwargs)


def test_prediction_cache_is_keyed_on_image_hash_and_box(predictor):
    us, mg, us_box, mg_box = _phantom_pair(2)
    counting = _CountingPredictor(predictor)
    key = f"test-{uuid.uuid4()}"

    def run(box):
        return cr.cached_prediction(key, us.digest, mg.digest, box, mg_box, counting, us, mg)

    first = run(us_box)
    again = run(us_box)
    assert counting.calls == 1 and again.p_dlum == first.p_dlum
    moved = (us_box[0] + 5, us_box[1], us_box[2] + 5, us_box[3])
    run(moved)
    assert counting.calls == 2


def test_cam_overlays_cover_five_blocks_of_each_modality(predictor):
    us, mg, us_box, mg_box = _phantom_pair(3)
    cams = cr.compute_case_cams(predictor, us, mg, us_box, mg_box)
    size = predictor.input_size
    patches = {US: cr.network_patch(us.image, us_box, size), MG: cr.network_patch(mg.image, mg_box, size)}
    overlays = cr.cam_overlays(patches, cams, opacity=0.5)
    assert set(overlays) == {US, MG}
    for m in (US, MG):
        assert len(overlays[m]) == 5
        assert all(o.shape == (size, size, 3) and o.dtype == np.uint8 for o in overlays[m])
    faint = cr.cam_overlays(patches, cams, opacity=0.0)[US][0]
    grey = np.uint8(255 * patches[US])  # opacity 0 shows the crop itself
    assert np.abs(faint[..., 0].astype(int) - grey.astype(int)).max() <= 1


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
               for m in model.modules())


def test_concurrent_cams_on_the_shared_model_match_sequential_runs(predictor):
    """Two sessions asking for CAMs at once (plus a third predicting) must not mix results."""
    cases = [_phantom_pair(4), _phantom_pair(5)]
    sequential = [cr.compute_case_cams(predictor, *c[:2], *c[2:]).maps for c in cases]
    expected_p = cr.predict_case(predictor, *cases[0][:2], *cases[0][2:]).p_dlum
    # different inputs give different maps, so a mix-up between threads would show
    assert not np.allclose(sequential[0][US], sequential[1][US])
    assert any(float(m.std()) > 0.01 for m in sequential[0][US])

    barrier = threading.Barrier(3)
    results: dict = {}
    errors: list = []

    def cams(i):
        barrier.wait()
        try:
            results[i] = cr.compute_case_cams(predictor, *cases[i][:2], *cases[i][2:]).maps
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def predict():
        barrier.wait()
        try:
            for _ in range(3):
                results.setdefault("p", []).append(
                    cr.predict_case(predictor, *cases[0][:2], *cases[0][2:]).p_dlum)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=cams, args=(0,)), threading.Thread(target=cams, args=(1,)),
               threading.Thread(target=predict)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    # CPU: bitwise-level agreement. CUDA: TF32 and cuDNN's choice of algorithm under concurrent
    # load move maps by ~1e-5; a mix-up between threads moves them by far more.
    atol = 1e-5 if predictor.device.type == "cpu" else 1e-3
    for i in (0, 1):
        for m in (US, MG):
            assert np.allclose(results[i][m], sequential[i][m], atol=atol), (i, m)
            assert not np.allclose(results[i][m], sequential[1 - i][m], atol=atol), (i, m)
    tol = 1e-6 if str(predictor.dtype) == "torch.float32" else 1e-3  # bf16 on GPUs
    assert results["p"] == pytest.approx([expected_p] * 3, abs=tol)
    assert _hooks(predictor.model) == 0


# ---------------------------------------------------------------------------------------- report
def test_report_json_and_png(predictor):
    us, mg, us_box, mg_box = _phantom_pair(6)
    prediction = cr.predict_case(predictor, us, mg, us_box, None)
    decision = decide(prediction, predictor.card, whole_image_confirmed=True)
    badge = cr.concordance_badge(4, 3)
    cams = cr.compute_case_cams(predictor, us, mg, us_box, None)
    report = cr.build_report(prediction=prediction, decision=decision, badge=badge,
                             images={US: us, MG: mg}, boxes={US: us_box, MG: None},
                             birads={US: 4, MG: 3}, card=predictor.card, cams=cams, device="CPU")
    data = json.loads(cr.report_json(report))
    assert data["inputs"]["us"]["sha256"] == us.digest
    assert data["inputs"]["us"]["roi_box"] == list(us_box)
    assert data["inputs"]["us"]["roi_box_expanded"] == list(expand_box(us_box, us.image.shape))
    assert data["inputs"]["mg"]["roi_box"] is None and data["inputs"]["mg"]["roi_note"] == "whole image"
    assert data["inputs"]["mg"]["birads"] == 3
    assert data["outputs"]["p_dlum"] == pytest.approx(prediction.p_dlum)
    assert data["outputs"]["p_mg_blocks"] == pytest.approx(prediction.p_mg_blocks)
    assert data["decision"]["biopsy_recommended"] == (prediction.p_dlum >= predictor.card.threshold)
    assert data["decision"]["sensitivity"] == predictor.card.results("p_dlum").sensitivity.value
    assert data["outputs"]["whole_image"] == ["mg"]
    assert data["concordance"]["subgroup"] == "discordant"
    assert data["model"]["name"] == "test-ckpt"
    assert data["cams"]["method"] == "Grad-CAM" and data["cams"]["scale"].startswith("relative")
    assert data["timing"]["inference_seconds"] > 0 and data["timing"]["cam_seconds"] > 0
    assert "roi_source" not in data["inputs"]["us"]
    # where each box came from: the US box accepted from the finder, an MG suggestion pending
    states = {US: cr.RoiState.initial(_finding(us_box, 0.9)).accept(),
              MG: cr.RoiState.initial(_finding((1, 2, 30, 40), 0.3))}
    traced = json.loads(cr.report_json(cr.build_report(
        prediction=prediction, decision=decision, badge=badge, images={US: us, MG: mg},
        boxes={US: us_box, MG: None}, birads={US: 4, MG: 3}, roi_states=states)))
    assert traced["inputs"]["us"]["roi_source"] == {
        "source": "accepted", "confirmed": True,
        "lesion_finder": {"box": list(us_box), "score": 0.9, "reason": None,
                          "low_confidence": False, "used": True}}
    assert traced["inputs"]["mg"]["roi_source"]["source"] == "suggested"
    assert traced["inputs"]["mg"]["roi_source"]["lesion_finder"]["used"] is False
    assert traced["inputs"]["mg"]["roi_note"] == ("whole image: the lesion finder's suggested box "
                                                  "was not accepted")

    size = predictor.input_size
    patches = {US: cr.network_patch(us.image, us_box, size), MG: cr.network_patch(mg.image, None, size)}
    with_cams = Image.open(io.BytesIO(cr.report_png(patches, cr.cam_overlays(patches, cams),
                                                    cr.report_lines(report), tile=96)))
    without = Image.open(io.BytesIO(cr.report_png(patches, None, cr.report_lines(report), tile=96)))
    assert with_cams.format == "PNG" and with_cams.size == without.size
    assert with_cams.size[0] > 6 * 96  # input + five blocks per row
    a, b = np.asarray(with_cams.convert("RGB")), np.asarray(without.convert("RGB"))
    coloured = np.abs(a.astype(int)[..., 0] - a.astype(int)[..., 2]).sum()
    assert coloured > np.abs(b.astype(int)[..., 0] - b.astype(int)[..., 2]).sum()  # heatmaps drawn
