"""One case through DL-UM: the logic behind the dashboard's Case Review page.

Follows Xu et al., Breast Cancer Research 2025 (DL-UM): the lesion ROI of each image is expanded
by 30% of its shortest side, cropped, resized and min–max normalised; the network gives the
fused P(malignant) and each branch's five deep-supervision heads; class activation maps from the
last convolution of each of the five blocks of both branches explain it; BI-RADS 4–5 on one
modality and 2–3 on the other makes a case *discordant*.

Uploads are decoded in memory (nothing is written to disk). Results are cached on a hash of the
uploaded bytes and the ROI (``st.cache_data``), so moving a slider never recomputes the model.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from dlum.constants import (
    BIRADS_LEVELS,
    CONCORDANT,
    DISCORDANT,
    MG,
    MODALITIES,
    MODALITY_NAMES,
    N_BLOCKS,
    ROI_EXPANSION,
    US,
)
from dlum.data.roi import Box, expand_box, validate_box
from dlum.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from dlum.card import Card
    from dlum.decision import Decision

    from dlum.inference import PairPrediction, Predictor
    from dlum.visualize.cam import CAMResult

__all__ = [
    "Badge",
    "CaseImage",
    "DISPLAY_SIDE",
    "block_table",
    "box_from_selection",
    "build_report",
    "cached_cams",
    "cached_decode",
    "cached_network_patch",
    "cached_prediction",
    "cam_methods",
    "cam_overlays",
    "case_tensors",
    "compute_case_cams",
    "concordance_badge",
    "decode_upload",
    "display_thumbnail",
    "image_from_array",
    "network_patch",
    "normalise_box",
    "predict_case",
    "report_json",
    "report_lines",
    "report_png",
    "roi_figure",
    "upload_digest",
]

#: Longest side (pixels) of the image shown for drawing the ROI; the box stays in full pixels.
DISPLAY_SIDE = 640


# ---------------------------------------------------------------------------------------- images
@dataclass
class CaseImage:
    """A decoded image of one modality: float32 grey array plus where it came from."""

    modality: str
    name: str
    image: np.ndarray
    digest: str
    origin: str = "upload"  # "upload" | "example"
    decode_seconds: float = 0.0

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "sha256": self.digest,
                "width": self.width, "height": self.height}


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def decode_upload(data: bytes, name: str, modality: str, *,
                  max_pixels: int | None = None) -> CaseImage:
    """Decode uploaded bytes (PNG, JPEG, DICOM, …) in memory into a :class:`CaseImage`.

    Raises:
        InputError: empty, truncated, unrecognised or oversized files, DICOM without pixels;
            the message names the file.
    """
    from dlum.data.io import read_image

    _check_modality(modality)
    t0 = time.perf_counter()
    data = bytes(data or b"")
    if max_pixels is None:
        from dlum.settings import limits

        max_pixels = limits().max_pixels
    image = read_image(data, name=name, max_pixels=max_pixels)
    if image.ndim != 2 or min(image.shape) < 1:
        raise InputError(f"the image has an unexpected shape {image.shape}", name)
    return CaseImage(modality, name, image, hashlib.sha256(data).hexdigest(), "upload",
                     time.perf_counter() - t0)


def image_from_array(array: np.ndarray, name: str, modality: str,
                     origin: str = "example") -> CaseImage:
    """A :class:`CaseImage` from an already decoded grey array (examples)."""
    _check_modality(modality)
    image = np.ascontiguousarray(array, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"a 2-D grey image is expected, got shape {image.shape}", name)
    digest = hashlib.sha256(image.tobytes() + repr(image.shape).encode()).hexdigest()
    return CaseImage(modality, name, image, digest, origin)


@st.cache_data(show_spinner=False, max_entries=8, ttl=3600)
def cached_decode(digest: str, name: str, modality: str, _data: bytes) -> CaseImage:
    """:func:`decode_upload`, cached on the bytes' hash (``digest``) kept in memory only."""
    return decode_upload(_data, name, modality)


def upload_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------- ROI
def normalise_box(box: Any, shape: tuple[int, ...], source: str | None = None) -> Box | None:
    """A checked ROI box, or None for the whole image (no box, or a box covering all of it).

    Raises:
        InputError: a box outside the image, empty or inverted.
    """
    if box is None:
        return None
    height, width = int(shape[0]), int(shape[1])
    checked = validate_box(box, (height, width), source)
    return None if checked == (0, 0, width, height) else checked


def box_from_selection(selection: Any, shape: tuple[int, ...]) -> Box | None:
    """The ROI from a plotly box selection (``st.plotly_chart(..., on_select=...)`` state).

    The figure's axes are in original image pixels (see :func:`roi_figure`); the last box drawn
    wins. Returns None when the state holds no box or the box misses the image.
    """
    if selection is None:
        return None
    state = selection.get("selection", selection) if hasattr(selection, "get") else None
    boxes = (state or {}).get("box") or []
    if not boxes:
        return None
    last = boxes[-1]
    xs = [float(v) for v in last.get("x", []) if v is not None]
    ys = [float(v) for v in last.get("y", []) if v is not None]
    if len(xs) < 2 or len(ys) < 2:
        return None
    raw = (math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys)))
    try:
        return validate_box(raw, shape[:2])
    except InputError:
        return None


def display_thumbnail(image: np.ndarray, max_side: int = DISPLAY_SIDE) -> tuple[np.ndarray, float]:
    """A uint8 copy of ``image`` at most ``max_side`` wide and high, and its scale (original
    pixels per shown pixel)."""
    from PIL import Image

    from dlum.data.io import to_display_uint8

    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return to_display_uint8(image), 1.0
    # For display only: a full-field mammogram (13 Mpx) is first thinned by a whole step, so that
    # the Lanczos resize below works on a few hundred thousand pixels instead of millions.
    step = max(1, int(max(height, width) / max_side) // 2)
    grey = to_display_uint8(image[::step, ::step])
    scale = max(height, width) / max_side
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    grey = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.LANCZOS))
    return grey, float(width / grey.shape[1])


@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def _thumbnail_png(digest: str, _image: np.ndarray,
                   max_side: int) -> tuple[str, float, tuple[int, int]]:
    import base64

    from PIL import Image

    grey, scale = display_thumbnail(_image, max_side)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG", optimize=False)
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return uri, scale, grey.shape


def roi_figure(case: CaseImage, box: Box | None, *, height: int = 380) -> go.Figure:
    """The image as a plotly figure for drawing the ROI with box selection.

    Axes are in the original image's pixels (origin top-left); the current box is drawn in
    yellow and the crop the network sees (box + 30% of its shortest side) dashed.
    An invisible grid of points makes plotly's box selection available over the image.
    """
    import plotly.graph_objects as go

    uri, scale, (shown_h, shown_w) = _thumbnail_png(case.digest, case.image, DISPLAY_SIDE)
    width, height_px = case.width, case.height
    fig = go.Figure()
    fig.add_trace(go.Image(source=uri, x0=scale / 2, y0=scale / 2, dx=scale, dy=scale,
                           hoverinfo="skip", name=case.name))
    n = 24  # selectable points: one per 1/24 of each side
    gx, gy = np.meshgrid(np.linspace(0, width, n), np.linspace(0, height_px, n))
    fig.add_trace(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers",
                             marker={"size": 6, "opacity": 0}, hoverinfo="none",
                             showlegend=False, name="roi-grid",
                             selected={"marker": {"opacity": 0}},
                             unselected={"marker": {"opacity": 0}}))
    if box is not None:
        x0, y0, x1, y1 = expand_box(box, (height_px, width), ROI_EXPANSION)
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1,
                      line={"color": "#7fd1ff", "width": 1.5, "dash": "dash"})
        fig.add_shape(type="rect", x0=box[0], y0=box[1], x1=box[2], y1=box[3],
                      line={"color": "#ffd400", "width": 2})
    fig.update_xaxes(range=[0, width], showgrid=False, zeroline=False, visible=False,
                     constrain="domain")
    fig.update_yaxes(range=[height_px, 0], showgrid=False, zeroline=False, visible=False,
                     scaleanchor="x", constrain="domain")
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      dragmode="select", plot_bgcolor="#0e1117", paper_bgcolor="rgba(0,0,0,0)",
                      showlegend=False, newselection={"line": {"color": "#ffd400", "width": 2}},
                      activeselection={"fillcolor": "#ffd400", "opacity": 0.15})
    return fig


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def cached_network_patch(digest: str, box: Box | None, size: int, _image: np.ndarray) -> np.ndarray:
    """:func:`network_patch`, cached on the image's hash, the box and the size."""
    return network_patch(_image, box, size)


def network_patch(image: np.ndarray, box: Box | None, size: int) -> np.ndarray:
    """What the network sees, as a grey [0, 1] image: expanded ROI crop, resized, min–max."""
    from dlum.data.roi import crop_roi
    from dlum.data.transforms import resize, to_unit_range

    return to_unit_range(resize(crop_roi(image, box, ROI_EXPANSION), size))


# ------------------------------------------------------------------------------------ prediction
def case_tensors(predictor: Predictor, us: CaseImage | None, mg: CaseImage | None,
                 us_box: Box | None = None, mg_box: Box | None = None) -> dict[str, Any]:
    """Network input tensors ``(1, 3, S, S)`` per modality given."""
    out = {}
    for m, case, box in ((US, us, us_box), (MG, mg, mg_box)):
        if case is not None:
            out[m] = predictor.preprocess(case.image, box)[None]
    return out


def predict_case(predictor: Predictor, us: CaseImage | None, mg: CaseImage | None,
                 us_box: Box | None = None, mg_box: Box | None = None) -> PairPrediction:
    """P(malignant) for a pair (fused DL-UM), or one branch's output when one image is given."""
    if us is None and mg is None:
        raise InputError("give at least one image (ultrasound or mammography)")
    prediction = predictor.predict_pair(
        us=us.image if us is not None else None, mg=mg.image if mg is not None else None,
        us_box=us_box, mg_box=mg_box,
    )
    for m, case in ((US, us), (MG, mg)):
        if case is not None:
            prediction.extra[f"{m}_decode_seconds"] = case.decode_seconds
    return prediction


@st.cache_data(show_spinner=False, max_entries=64, ttl=3600)
def cached_prediction(model: str, us_digest: str | None, mg_digest: str | None,
                      us_box: Box | None, mg_box: Box | None,
                      _predictor: Predictor, _us: CaseImage | None,
                      _mg: CaseImage | None) -> PairPrediction:
    """:func:`predict_case`, cached on the model, the images' hashes and the boxes."""
    return predict_case(_predictor, _us, _mg, us_box, mg_box)


def cam_methods() -> tuple[str, ...]:
    """The CAM methods offered (Grad-CAM first, the default)."""
    from dlum.visualize.cam import CAM_METHODS

    return tuple(CAM_METHODS)


def compute_case_cams(predictor: Predictor, us: CaseImage | None, mg: CaseImage | None,
                      us_box: Box | None = None, mg_box: Box | None = None, *,
                      method: str = "Grad-CAM", target: str = "fused") -> CAMResult:
    """CAMs of all five blocks of each given branch (fp32, on a private copy of the model)."""
    from dlum.visualize.cam import compute_cams

    tensors = case_tensors(predictor, us, mg, us_box, mg_box)
    return compute_cams(predictor.model, tensors.get(US), tensors.get(MG), method=method,
                        target=target)


@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def cached_cams(model: str, us_digest: str | None, mg_digest: str | None,
                us_box: Box | None, mg_box: Box | None, method: str, target: str,
                _predictor: Predictor, _us: CaseImage | None, _mg: CaseImage | None) -> CAMResult:
    """:func:`compute_case_cams`, cached like :func:`cached_prediction` plus method and target."""
    return compute_case_cams(_predictor, _us, _mg, us_box, mg_box, method=method, target=target)


def cam_overlays(patches: dict[str, np.ndarray], cams: CAMResult, opacity: float = 0.5
                 ) -> dict[str, list[np.ndarray]]:
    """RGB uint8 overlays, block 1 → 5, of each modality's CAMs on its network patch."""
    from dlum.data.transforms import resize
    from dlum.visualize.cam import overlay

    out: dict[str, list[np.ndarray]] = {}
    for m, maps in cams.maps.items():
        patch = patches[m]
        if maps.shape[-2:] != patch.shape:
            maps = np.clip(resize(maps, patch.shape), 0, 1)
        out[m] = [overlay(patch, maps[k], opacity) for k in range(maps.shape[0])]
    return out


def block_table(prediction: PairPrediction):
    """Per-block head probabilities (deep supervision), one column per modality given."""
    import pandas as pd

    columns = {}
    for m, values in ((US, prediction.p_us_blocks), (MG, prediction.p_mg_blocks)):
        if values is not None:
            columns[f"{MODALITY_NAMES[m]} P(malignant)"] = [float(v) for v in values]
    index = [f"Block {k}" for k in range(1, N_BLOCKS + 1)]
    return pd.DataFrame(columns, index=index)


# -------------------------------------------------------------------------------- badge, decision
@dataclass
class Badge:
    """The BI-RADS concordance of a case (Xu et al. 2025)."""

    subgroup: str  # concordant | discordant | undetermined
    text: str
    color: str  # a Streamlit badge colour
    explanation: str


def _subgroup(us_birads: Any, mg_birads: Any) -> str:
    try:
        from dlum.data.manifest import derive_subgroup
    except ImportError:  # pragma: no cover - the manifest module ships with dlum
        us_ok, mg_ok = us_birads in BIRADS_LEVELS, mg_birads in BIRADS_LEVELS
        if not (us_ok and mg_ok):
            return "undetermined"
        return CONCORDANT if (us_birads >= 4) == (mg_birads >= 4) else DISCORDANT
    return str(derive_subgroup(us_birads, mg_birads))


def concordance_badge(us_birads: int | None, mg_birads: int | None) -> Badge:
    """Concordant / discordant badge from the two BI-RADS categories (2–5)."""
    for name, value in (("US", us_birads), ("MG", mg_birads)):
        if value is not None and value not in BIRADS_LEVELS:
            raise InputError(f"{name} BI-RADS must be one of {BIRADS_LEVELS}, got {value!r}")
    subgroup = _subgroup(us_birads, mg_birads)
    shown = " · ".join(f"{name} {value if value is not None else '–'}"
                       for name, value in (("US", us_birads), ("MG", mg_birads)))
    if subgroup == CONCORDANT:
        side = "biopsy (4–5)" if us_birads >= 4 else "follow-up (2–3)"
        return Badge(subgroup, f"Concordant BI-RADS ({shown})", "green",
                     f"Both modalities point the same way: {side}.")
    if subgroup == DISCORDANT:
        return Badge(subgroup, f"Discordant BI-RADS ({shown})", "orange",
                     "One modality suggests biopsy (4–5), the other follow-up (2–3): the "
                     "subgroup where DL-UM helped readers most in Xu et al. 2025.")
    return Badge(subgroup, f"Concordance undetermined ({shown})", "gray",
                 "Choose a BI-RADS category (2–5) for both modalities to classify the case.")


# ---------------------------------------------------------------------------------------- report
def build_report(
    *,
    prediction: PairPrediction,
    decision: Decision,
    badge: Badge,
    images: dict[str, CaseImage | None],
    boxes: dict[str, Box | None],
    birads: dict[str, int | None],
    card: Card | None = None,
    cams: CAMResult | None = None,
    device: str = "",
    example: str | None = None,
) -> dict[str, Any]:
    """Everything needed to trace the result: inputs, outputs and decision (as
    :func:`dlum.decision.case_result` writes them for ``python -m dlum predict``), model version
    and timing."""
    import dlum
    from dlum.decision import case_result

    inputs: dict[str, Any] = {}
    for m in MODALITIES:
        case = images.get(m)
        if case is None:
            inputs[m] = None
            continue
        box = boxes.get(m)
        inputs[m] = {
            **case.describe(),
            "roi_box": list(box) if box is not None else None,
            "roi_box_expanded": (list(expand_box(box, case.image.shape))
                                 if box is not None else None),
            "roi_note": ("whole image" if box is None
                         else f"box expanded by {ROI_EXPANSION:.0%} of its shortest side"),
            "birads": birads.get(m),
        }
    timing = {"inference_seconds": prediction.seconds}
    for m in MODALITIES:
        case = images.get(m)
        if case is not None and case.origin == "upload":
            timing[f"{m}_decode_seconds"] = case.decode_seconds
    if cams is not None:
        timing["cam_seconds"] = cams.seconds
    result = case_result(prediction, decision, digits=6)
    return {
        "report": "DL-UM case review",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "disclaimer": "Research use only; not for clinical decisions.",
        "example_case": example,
        "inputs": inputs,
        "concordance": {"subgroup": badge.subgroup, "text": badge.text},
        "outputs": {k: result[k] for k in ("mode", "p_dlum", "p_us_head", "p_mg_head",
                                            "p_us_blocks", "p_mg_blocks", "whole_image")},
        "decision": result["decision"],
        "cams": None if cams is None else {
            "method": cams.method, "target": cams.target, "blocks": N_BLOCKS,
            "modalities": sorted(cams.maps), "scale": "relative within each image",
            "notes": cams.notes,
        },
        "model": {
            "name": prediction.model_version,
            "arch": None if card is None else card.arch.value,
            "initialisation": None if card is None else card.initialisation,
            "input": None if card is None else card.input.to_dict(),
            "code_commit": None if card is None else card.code_commit,
            "dlum_version": dlum.__version__,
            "device": device or prediction.device,
            "precision": prediction.precision,
        },
        "timing": timing,
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """Header lines of the report PNG: result, decision, concordance, model, CAM method."""
    out, dec, model = report["outputs"], report["decision"], report["model"]
    mode = {"pair": "fused DL-UM", "us-only": "US branch only", "mg-only": "MG branch only"}
    lines = [
        f"DL-UM case review  ·  {report['created_utc']}  ·  "
        "research use only, not for clinical decisions",
        f"P(malignant) = {dec['probability']:.3f} ({mode.get(out['mode'], out['mode'])})  ·  "
        f"{dec['label']} at threshold {dec['threshold']:.3f}  ·  {report['concordance']['text']}",
        f"Model {model['name']}  ·  {model['device']}",
    ]
    cams = report.get("cams")
    if cams:
        lines.append(f"CAMs: {cams['method']} ({cams['target']}), "
                     "colours relative within each image")
    return lines


def report_json(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, default=_json_default) + "\n").encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def report_png(
    patches: dict[str, np.ndarray],
    overlays: dict[str, list[np.ndarray]] | None,
    lines: list[str],
    *,
    tile: int = 224,
) -> bytes:
    """A PNG: a few header lines, then one row per modality: the network patch and blocks 1–5."""
    from PIL import Image, ImageDraw, ImageFont

    rows = [m for m in MODALITIES if m in patches]
    columns = 1 + N_BLOCKS
    pad, label_w, line_h = 8, 120, 22
    header_h = pad + line_h * (len(lines) + 1)
    caption_h = 20
    width = label_w + columns * (tile + pad) + pad
    height = header_h + len(rows) * (tile + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    for k, text in enumerate(lines):
        draw.text((pad, pad + k * line_h), text, fill="black", font=font)
    titles = ["Input (ROI)"] + [f"Block {k}" for k in range(1, N_BLOCKS + 1)]
    y = header_h
    for m in rows:
        draw.text((pad, y + tile // 2 - 8), MODALITY_NAMES[m], fill="black", font=font)
        tiles = [np.repeat((np.clip(patches[m], 0, 1) * 255).astype(np.uint8)[..., None], 3, 2)]
        tiles += (overlays or {}).get(m, [])
        for c, array in enumerate(tiles):
            x = label_w + c * (tile + pad)
            img = Image.fromarray(np.asarray(array, dtype=np.uint8)).resize((tile, tile))
            canvas.paste(img, (x, y + caption_h))
            draw.text((x, y + 2), titles[c], fill="#333333", font=small)
        y += tile + caption_h + pad
    if not overlays:
        draw.text((label_w, header_h - line_h), "CAMs not computed for this report.",
                  fill="#555555", font=small)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
