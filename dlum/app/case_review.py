"""One case through DL-UM: the logic behind the dashboard's Case Review page.

Follows Xu et al., Breast Cancer Research 2025 (DL-UM): the lesion ROI of each image is expanded
by 30% of its shortest side, cropped, resized and min–max normalised; the network gives the
fused P(malignant) and each branch's five deep-supervision heads; class activation maps from the
last convolution of each of the five blocks of both branches explain it; BI-RADS 4–5 on one
modality and 2–3 on the other makes a case *discordant*.

Uploads are decoded in memory (nothing is written to disk). Results are cached on a hash of the
uploaded bytes and the ROI (``st.cache_data``), so moving a slider never recomputes the model.

The lesion box of each image has a source (:class:`RoiState`): on an ultrasound image the lesion
finder (:mod:`dlum.localize`) *suggests* a box, drawn dashed and labelled with its confidence,
which the prediction does not use until the user accepts it, adjusts it or draws another; on a
mammogram (no finder) the box is dragged, typed, or given as lesion centre + radius (mini-MIAS).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
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
from dlum.data.roi import Box, box_from_centre, expand_box, validate_box
from dlum.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from dlum.card import Card
    from dlum.decision import Decision

    from dlum.inference import PairPrediction, Predictor
    from dlum.localize import Finding, LesionFinder
    from dlum.visualize.cam import CAMResult

__all__ = [
    "Badge",
    "CONFIRMED_SOURCES",
    "CaseImage",
    "DISPLAY_SIDE",
    "ROI_SOURCES",
    "RoiState",
    "block_table",
    "box_from_selection",
    "branch_disagreement",
    "build_report",
    "case_report",
    "cached_cams",
    "cached_decode",
    "cached_finding",
    "cached_network_patch",
    "cached_prediction",
    "cam_methods",
    "cam_overlays",
    "case_tensors",
    "CaseUncertainty",
    "cached_uncertainty",
    "case_uncertainty_of",
    "centre_from_selection",
    "centre_radius_box",
    "compute_case_cams",
    "concordance_badge",
    "decode_upload",
    "default_radius",
    "display_thumbnail",
    "finding_message",
    "image_from_array",
    "network_patch",
    "normalise_box",
    "predict_case",
    "report_json",
    "report_lines",
    "report_details",
    "report_png",
    "roi_figure",
    "run_finder",
    "suggestion_label",
    "suggestion_overlay",
    "upload_digest",
]

log = logging.getLogger(__name__)

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


def centre_from_selection(selection: Any, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The lesion centre from a click on the figure (a plotly point selection, see
    :func:`roi_figure`): the last point picked, in whole pixels inside the image.

    Returns None when the state holds no point, or holds a box (a drag selects points too: a drag
    is a box, see :func:`box_from_selection`).
    """
    if selection is None or not hasattr(selection, "get"):
        return None
    state = selection.get("selection", selection) or {}
    if state.get("box"):
        return None
    points = [p for p in (state.get("points") or []) if hasattr(p, "get")]
    if not points:
        return None
    x, y = points[-1].get("x"), points[-1].get("y")
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    height, width = int(shape[0]), int(shape[1])
    return (min(max(round(x), 0), max(width - 1, 0)), min(max(round(y), 0), max(height - 1, 0)))


def centre_radius_box(x: float, y: float, radius: float, shape: tuple[int, ...],
                      source: str | None = None) -> Box:
    """The lesion box ``centre ± radius`` (mini-MIAS), rounded outward and clamped to the image.

    Raises:
        InputError: a radius of 0 or less, a non-finite number, or a box missing the image.
    """
    return validate_box(box_from_centre(x, y, radius), shape[:2], source)


def default_radius(shape: tuple[int, ...]) -> int:
    """A starting radius for the centre + radius input: a tenth of the image's shorter side."""
    return max(1, round(min(int(shape[0]), int(shape[1])) / 10))


# ---------------------------------------------------------------------------- lesion box source
#: Where a lesion box comes from (see :class:`RoiState`).
ROI_WHOLE, ROI_SUGGESTED, ROI_ACCEPTED, ROI_ADJUSTED = "whole", "suggested", "accepted", "adjusted"
ROI_DRAWN, ROI_CENTRE, ROI_EXAMPLE = "drawn", "centre", "example"
ROI_SOURCES = (ROI_WHOLE, ROI_SUGGESTED, ROI_ACCEPTED, ROI_ADJUSTED, ROI_DRAWN, ROI_CENTRE,
               ROI_EXAMPLE)
#: The sources whose box the network reads; ``suggested`` is not one of them.
CONFIRMED_SOURCES = frozenset({ROI_ACCEPTED, ROI_ADJUSTED, ROI_DRAWN, ROI_CENTRE, ROI_EXAMPLE})


@dataclass(frozen=True)
class RoiState:
    """The lesion box of one image and where it came from: a small state machine.

    ``box`` is what the page's box fields hold (None: the whole image); ``finding`` the lesion
    finder's result for this image (ultrasound only), kept for the figure, the messages and the
    report.

    =============  ============================================  ==========================
    source         reached by                                    the network reads
    =============  ============================================  ==========================
    ``whole``      a new image with no suggestion; Whole image   the whole image
    ``suggested``  a new ultrasound image the finder boxed       the whole image (warned)
    ``accepted``   Accept suggested box                          the suggested box
    ``adjusted``   a box field edited after a suggestion         the edited box
    ``drawn``      a box dragged on the image, or typed          that box
    ``centre``     lesion centre + radius (mammography)          centre ± radius
    ``example``    an example case's annotated box               that box
    =============  ============================================  ==========================

    A suggestion is never used silently: until it is accepted, adjusted or replaced, the image is
    read whole, so the decision is withheld (:func:`dlum.decision.decide`) and the page says why.
    Transitions return a new state; the page then writes ``box`` into the box fields.
    """

    source: str = ROI_WHOLE
    box: Box | None = None
    finding: Finding | None = None

    def __post_init__(self) -> None:
        if self.source not in ROI_SOURCES:
            raise ValueError(f"source must be one of {ROI_SOURCES}, got {self.source!r}")
        if self.source in (ROI_SUGGESTED, ROI_ACCEPTED) and self.suggestion is None:
            raise ValueError(f"a {self.source!r} box needs a finding with a box")

    @classmethod
    def initial(cls, finding: Finding | None = None,
                example_box: Box | None = None) -> RoiState:
        """A new image: the example's annotated box, else the finder's suggestion (shown, not
        used), else the whole image."""
        if example_box is not None:
            return cls(ROI_EXAMPLE, tuple(int(v) for v in example_box), finding)
        if finding is not None and finding.box is not None:
            return cls(ROI_SUGGESTED, tuple(int(v) for v in finding.box), finding)
        return cls(ROI_WHOLE, None, finding)

    # ------------------------------------------------------------------------------ queries
    @property
    def suggestion(self) -> Box | None:
        """The finder's box, or None (no finder, nothing found)."""
        if self.finding is None or self.finding.box is None:
            return None
        return tuple(int(v) for v in self.finding.box)

    @property
    def pending(self) -> bool:
        """A suggestion is shown and not yet accepted, adjusted or replaced."""
        return self.source == ROI_SUGGESTED

    @property
    def confirmed(self) -> bool:
        """The box fields hold a box the user (or the example) stands behind."""
        return self.source in CONFIRMED_SOURCES

    def used_box(self, fields_box: Box | None) -> Box | None:
        """The box the network reads, given the checked box fields: None (the whole image)
        unless the box is confirmed."""
        return fields_box if self.confirmed else None

    def offers_suggestion(self) -> bool:
        """Whether to offer "Accept suggested box": there is one and the fields hold another."""
        return self.suggestion is not None and (self.pending or self.box != self.suggestion)

    def confidence_text(self) -> str:
        if self.finding is None:
            return ""
        low = ", low" if self.finding.low_confidence else ""
        return f"confidence {float(self.finding.score):.2f}{low}"

    @property
    def origin(self) -> str:
        """Where the box comes from, in a few words (no box coordinates)."""
        return {
            ROI_WHOLE: "whole image",
            ROI_SUGGESTED: f"suggested by the lesion finder ({self.confidence_text()}), "
                           "not yet confirmed",
            ROI_ACCEPTED: f"suggested by the lesion finder ({self.confidence_text()}), accepted",
            ROI_ADJUSTED: "adjusted from the lesion finder's suggestion",
            ROI_DRAWN: "drawn by hand",
            ROI_CENTRE: "from lesion centre + radius",
            ROI_EXAMPLE: "annotated with the example",
        }[self.source]

    def describe(self) -> str:
        """The box and where it comes from, honest about a suggestion not yet confirmed."""
        if self.pending:
            return (f"{self.origin}: the image is read whole until the suggested box "
                    f"{list(self.box)} is accepted, adjusted or replaced by a drawn box")
        if self.box is None:
            return "whole image"
        return f"box {list(self.box)} {self.origin}"

    def as_report(self) -> dict[str, Any]:
        """The box's source and the finder's result, for the JSON report."""
        finding = None
        if self.finding is not None:
            finding = {**self.finding.as_dict(),
                       "low_confidence": bool(self.finding.low_confidence),
                       "used": self.source == ROI_ACCEPTED}
        return {"source": self.source, "confirmed": self.confirmed, "lesion_finder": finding}

    # -------------------------------------------------------------------------- transitions
    def accept(self) -> RoiState:
        """The suggested box becomes the lesion box."""
        if self.suggestion is None:
            raise ValueError("there is no suggested box to accept")
        return replace(self, source=ROI_ACCEPTED, box=self.suggestion)

    def drawn(self, box: Box | None) -> RoiState:
        """A box dragged on the image replaces whatever was there."""
        return replace(self, source=ROI_DRAWN, box=box) if box is not None else self.whole()

    def edited(self, box: Box | None) -> RoiState:
        """The box fields were changed by hand: the suggestion adjusted, or a box drawn."""
        if box is None:
            return self.whole()
        follows = self.source in (ROI_SUGGESTED, ROI_ACCEPTED, ROI_ADJUSTED)
        return replace(self, source=ROI_ADJUSTED if follows else ROI_DRAWN, box=box)

    def from_centre(self, box: Box | None) -> RoiState:
        """A box from lesion centre + radius."""
        return replace(self, source=ROI_CENTRE, box=box) if box is not None else self.whole()

    def whole(self) -> RoiState:
        """The whole image (the decision then waits for the user's confirmation)."""
        return replace(self, source=ROI_WHOLE, box=None)


# -------------------------------------------------------------------------------- lesion finder
#: Colours of the suggested box: confident, and low confidence.
SUGGESTION_COLOR, LOW_CONFIDENCE_COLOR = "#ff5ad2", "#ff9f1c"


def run_finder(finder: LesionFinder, image: np.ndarray) -> Finding:
    """The finder's result for one image, never an exception: an image it cannot read, or a
    failure, is an empty finding whose reason says so (the page goes on; the box is drawn by
    hand). Failures that are not dlum errors are logged with their traceback."""
    from dlum.errors import DLUMError
    from dlum.localize import Finding

    try:
        return finder.find(image)
    except DLUMError as exc:
        return Finding(None, 0.0, f"the lesion finder could not read this image: {exc}")
    except Exception as exc:  # noqa: BLE001 - a finder bug must not take the page down
        log.exception("the lesion finder failed", exc_info=exc)
        return Finding(None, 0.0, f"the lesion finder failed ({type(exc).__name__}; the details "
                                  "are in the server log)")


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def cached_finding(finder_key: str, digest: str, _finder: LesionFinder,
                   _image: np.ndarray) -> Finding:
    """:func:`run_finder`, cached on the finder's key and the image's hash."""
    return run_finder(_finder, _image)


def suggestion_label(finding: Finding) -> str:
    """The label drawn on the suggested box, e.g. ``suggested · 0.87``."""
    text = f"suggested · {float(finding.score):.2f}"
    return text + " (low confidence)" if finding.low_confidence else text


def suggestion_overlay(finding: Finding | None,
                       shape: tuple[int, ...]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The suggested box as a plotly shape (dashed) and its label (an annotation), in the
    image's pixels; None when there is no box. The label sits above the box, else below it,
    else inside its top edge, so that it stays on the image."""
    if finding is None or finding.box is None:
        return None
    height, width = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = (int(v) for v in finding.box)
    color = LOW_CONFIDENCE_COLOR if finding.low_confidence else SUGGESTION_COLOR
    rect = {"type": "rect", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "name": "suggested",
            "line": {"color": color, "width": 2, "dash": "dash"}}
    room = 0.08 * height
    if y0 >= room:  # above the box (the y axis points down)
        y, anchor = y0, "bottom"
    elif height - y1 >= room:  # below it
        y, anchor = y1, "top"
    else:  # inside, along its top edge
        y, anchor = y0, "top"
    left = x0 <= 0.6 * width
    label = {"x": x0 if left else x1, "y": y, "xref": "x", "yref": "y",
             "xanchor": "left" if left else "right", "yanchor": anchor, "showarrow": False,
             "text": suggestion_label(finding), "name": "suggested", "bgcolor": color,
             "font": {"color": "#0e1117", "size": 12}, "borderpad": 2, "opacity": 0.95}
    return rect, label


def finding_message(state: RoiState) -> tuple[str, str] | None:
    """What the page says about the finder's result: ``(kind, markdown)`` with kind ``info``
    (a confident suggestion), ``warning`` (low confidence, or nothing found: draw the box) or
    ``caption`` (the suggestion was accepted or replaced); None when there is no finding."""
    finding = state.finding
    if finding is None:
        return None
    reason = f" Finder: {finding.reason}." if finding.reason else ""
    if finding.box is None:
        return ("warning", "**The lesion finder found no lesion: draw the lesion box** by "
                           f"dragging on the image.{reason}")
    score = f"{float(finding.score):.2f}"
    if state.source == ROI_ACCEPTED:
        return ("caption", f"Suggested box accepted (confidence {score}): it is the lesion box.")
    if state.source in (ROI_ADJUSTED, ROI_DRAWN, ROI_CENTRE):
        return ("caption", f"Your box is used; the finder's suggestion (confidence {score}) "
                           "stays dashed for reference.")
    if finding.low_confidence:
        return ("warning", f"**Low-confidence suggestion ({score}): draw the lesion box** by "
                           "dragging on the image, or check the dashed box and accept it only if "
                           f"it frames the lesion.{reason}")
    if state.source == ROI_EXAMPLE:
        return ("info", f"The lesion finder suggests the dashed box (confidence {score}); the "
                        "example's annotated box is used unless you accept the suggestion.")
    return ("info", f"The lesion finder suggests the dashed box (confidence {score}). **Accept** "
                    "it, adjust it under *ROI box in pixels*, or drag your own box; until then "
                    "the image is read whole and no call is made.")


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


def roi_figure(case: CaseImage, box: Box | None, *, suggestion: Finding | None = None,
               click_centre: bool = False, height: int = 380, grid: int | None = None
               ) -> go.Figure:
    """The image as a plotly figure for drawing the ROI with box selection.

    Axes are in the original image's pixels (origin top-left); the current box is drawn in
    yellow and the crop the network sees (box + 30% of its shortest side) dashed blue. The lesion
    finder's ``suggestion`` (when it has a box other than ``box``) is drawn dashed in magenta
    (orange when its confidence is low) and labelled ``suggested · <confidence>``.
    An invisible ``grid`` × ``grid`` lattice of points (24, or 64 with ``click_centre``) makes
    plotly's box selection available over the image. With ``click_centre`` the mouse is in pan
    mode on fixed axes: Streamlit then turns a click into a point selection (in box-select mode
    it does not), the nearest lattice point, read by :func:`centre_from_selection`; a box can
    still be dragged after choosing box select in the figure's toolbar.
    """
    import plotly.graph_objects as go

    uri, scale, (shown_h, shown_w) = _thumbnail_png(case.digest, case.image, DISPLAY_SIDE)
    width, height_px = case.width, case.height
    fig = go.Figure()
    fig.add_trace(go.Image(source=uri, x0=scale / 2, y0=scale / 2, dx=scale, dy=scale,
                           hoverinfo="skip", name=case.name))
    n = max(2, int(grid or (64 if click_centre else 24)))  # points: one per 1/n of each side
    gx, gy = np.meshgrid(np.linspace(0, width, n), np.linspace(0, height_px, n))
    fig.add_trace(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers",
                             marker={"size": 6, "opacity": 0}, hoverinfo="none",
                             showlegend=False, name="roi-grid",
                             selected={"marker": {"opacity": 0}},
                             unselected={"marker": {"opacity": 0}}))
    overlay = suggestion_overlay(suggestion, (height_px, width))
    if overlay is not None and tuple(suggestion.box) != (tuple(box) if box is not None else None):
        rect, label = overlay
        fig.add_shape(**rect)
        fig.add_annotation(**label)
    if box is not None:
        x0, y0, x1, y1 = expand_box(box, (height_px, width), ROI_EXPANSION)
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1,
                      line={"color": "#7fd1ff", "width": 1.5, "dash": "dash"})
        fig.add_shape(type="rect", x0=box[0], y0=box[1], x1=box[2], y1=box[3],
                      line={"color": "#ffd400", "width": 2})
    fig.update_xaxes(range=[0, width], showgrid=False, zeroline=False, visible=False,
                     constrain="domain", fixedrange=click_centre)
    fig.update_yaxes(range=[height_px, 0], showgrid=False, zeroline=False, visible=False,
                     scaleanchor="x", constrain="domain", fixedrange=click_centre)
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      dragmode="pan" if click_centre else "select", plot_bgcolor="#0e1117",
                      paper_bgcolor="rgba(0,0,0,0)",
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


# ------------------------------------------------------------------- uncertainty, disagreement
@dataclass(frozen=True)
class CaseUncertainty:
    """What Case Review shows beside P(malignant): the TTA intervals of the outputs
    (:mod:`dlum.uncertainty`), whether the call's output is *uncertain*, and whether the two
    branches *disagree* (:func:`dlum.disagreement.branches_disagree`)."""

    intervals: dict[str, Any]  # output -> dlum.uncertainty.Interval
    output: str  # the output the call is made on
    seconds: float = 0.0
    branches_disagree: bool | None = None  # None: one image, or no branch thresholds
    branch_text: str = ""

    @property
    def interval(self):
        """The interval of the output the call is made on (None when not computed)."""
        return self.intervals.get(self.output)

    @property
    def uncertain(self) -> bool:
        return self.interval is not None and self.interval.uncertain

    def probability_text(self, probability: float | None, output: str | None = None) -> str:
        """E.g. ``0.620 (TTA range 0.48–0.71 over 5 views)``; the probability alone without an
        interval. The range always holds the probability shown (:func:`dlum.uncertainty.holding`)."""
        from dlum.uncertainty import holding

        if probability is None:
            return "—"
        interval = self.intervals.get(output or self.output)
        text = f"{probability:.3f}"
        return (f"{text} ({holding(interval, probability).text()})" if interval is not None
                else text)

    def uncertain_text(self) -> str:
        """One line on why the case is marked uncertain ("" when it is not)."""
        iv = self.interval
        if iv is None or not iv.uncertain:
            return ""
        return (f"**Uncertain:** the {iv.text()} straddles the operating threshold "
                f"{iv.threshold:.3f}: small flips, shifts, zooms and contrast changes of the "
                "patches move P across it, so the call could go either way.")

    def method_text(self) -> str:
        iv = self.interval
        if iv is None:
            return ""
        spread = ("TTA range: the lowest to the highest P" if iv.is_range
                  else f"TTA interval: the central {iv.level:.0%} of P")
        return (f"{spread} over the un-augmented patches and {iv.views} augmented views (flip, "
                f"shift, scale, gamma/contrast; seed {iv.seed}), computed in {self.seconds:.2f} s.")


def branch_disagreement(p_us: float | None, p_mg: float | None,
                        card: Card | None) -> tuple[bool | None, str]:
    """Whether the US and MG branch heads fall on opposite sides of their own thresholds (the
    card's ``thresholds_per_model``), and one line saying so; ``(None, "")`` with one image or a
    card without both branch thresholds."""
    from types import SimpleNamespace

    from dlum.disagreement import case_branches_disagree

    disagree = case_branches_disagree(SimpleNamespace(p_us_head=p_us, p_mg_head=p_mg), card)
    if not disagree:
        return disagree, ""
    t_us, t_mg = card.threshold_for("p_us_head"), card.threshold_for("p_mg_head")

    def side(name: str, p: float, t: float) -> str:
        call = "malignant" if p >= t else "benign"
        return f"the {name} branch calls it {call} (P {p:.3f} {'≥' if p >= t else '<'} {t:.3f})"

    return True, ("**Branches disagree:** " + side("ultrasound", p_us, t_us) + ", "
                  + side("mammography", p_mg, t_mg) + ", each at its own threshold: the "
                  "model's analogue of discordant BI-RADS.")


def case_uncertainty_of(predictor: Predictor, prediction: PairPrediction, decision: Decision,
                        us: CaseImage | None, mg: CaseImage | None, us_box: Box | None = None,
                        mg_box: Box | None = None, *, seed: int = 0) -> CaseUncertainty:
    """The TTA intervals of a case (:func:`dlum.uncertainty.case_uncertainty`, each output at the
    card's threshold, the call's output at the decision's; a range holds the P shown, read in
    the prediction's own forward: :func:`dlum.uncertainty.holding`) and the branches' agreement."""
    from dlum.uncertainty import decision_intervals

    t0 = time.perf_counter()
    intervals = decision_intervals(
        predictor, prediction, decision, us.image if us is not None else None,
        mg.image if mg is not None else None, us_box=us_box, mg_box=mg_box, seed=seed)
    disagree, text = branch_disagreement(prediction.p_us_head, prediction.p_mg_head, predictor.card)
    return CaseUncertainty(intervals, decision.output, time.perf_counter() - t0, disagree, text)


@st.cache_data(show_spinner=False, max_entries=64, ttl=3600)
def cached_uncertainty(model: str, us_digest: str | None, mg_digest: str | None,
                       us_box: Box | None, mg_box: Box | None, seed: int,
                       output: str, threshold: float, _predictor: Predictor,
                       _prediction: PairPrediction, _decision: Decision, _us: CaseImage | None,
                       _mg: CaseImage | None) -> CaseUncertainty:
    """:func:`case_uncertainty_of`, cached like :func:`cached_prediction` plus the seed and the
    call's output and threshold."""
    return case_uncertainty_of(_predictor, _prediction, _decision, _us, _mg, us_box, mg_box,
                               seed=seed)


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
    roi_states: dict[str, RoiState] | None = None,
) -> dict[str, Any]:
    """Everything needed to trace the result: inputs, outputs and decision (as
    :func:`dlum.decision.case_result` writes them for ``python -m dlum predict``), model version
    and timing. ``roi_states`` adds where each lesion box came from (drawn, accepted from the
    lesion finder, …) and the finder's result."""
    import dlum
    from dlum.decision import case_result

    inputs: dict[str, Any] = {}
    for m in MODALITIES:
        case = images.get(m)
        if case is None:
            inputs[m] = None
            continue
        box = boxes.get(m)
        state = (roi_states or {}).get(m)
        note = ("whole image" if box is None
                else f"box expanded by {ROI_EXPANSION:.0%} of its shortest side")
        if box is None and state is not None and state.pending:
            note = "whole image: the lesion finder's suggested box was not accepted"
        inputs[m] = {
            **case.describe(),
            "roi_box": list(box) if box is not None else None,
            "roi_box_expanded": (list(expand_box(box, case.image.shape))
                                 if box is not None else None),
            "roi_note": note,
            "birads": birads.get(m),
        }
        if state is not None:
            inputs[m]["roi_source"] = state.as_report()
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


# ------------------------------------------------------------------------ printable case report
# Plain (not st.cache_data) cache: the PDF is built by st.download_button's deferred callable on
# a thread without a ScriptRunContext, where st.cache_data logs a warning on every call.
_PDF_CACHE: OrderedDict[tuple, bytes] = OrderedDict()
_PDF_CACHE_LOCK = threading.Lock()
_PDF_CACHE_ENTRIES = 8


def report_details(badge: Badge, states: dict[str, RoiState] | None = None,
                   example: str | None = None) -> list[str]:
    """The PDF report's closing lines: the BI-RADS concordance, where each lesion box came from
    and the example case's name."""
    lines = [badge.text]
    for m in MODALITIES:
        if states and m in states:
            lines.append(f"{MODALITY_NAMES[m]} lesion box: {states[m].describe()}.")
    if example:
        lines.append(f"Example case: {example}.")
    return lines


def case_report(predictor: Predictor, prediction: PairPrediction, decision: Decision,
                images: dict[str, CaseImage], boxes: dict[str, Box | None], *, model: str = "",
                cams: CAMResult | None = None, method: str = "Grad-CAM", target: str = "fused",
                intervals: dict[str, Any] | None = None, branches_disagree: bool | None = None,
                details: list[str] | tuple[str, ...] = ()) -> bytes:
    """The one-page PDF case report of the case on the page (:mod:`dlum.report_pdf`).

    CAMs of all five blocks are computed (``method``, ``target``; fp32) when the page has none;
    the per-case intervals (``dlum.uncertainty``) and the branches' agreement
    (``dlum.disagreement``) are computed when not given. Cached on the model, the images' hashes,
    the boxes, the decision, the CAM method and target, and the closing lines.
    """
    from dlum.disagreement import case_branches_disagree
    from dlum.report_pdf import report_for_case
    from dlum.uncertainty import decision_intervals

    given = {m: images[m] for m in MODALITIES if images.get(m) is not None}
    pair = len(given) == 2
    cam_key = (cams.method, cams.target) if cams is not None else (method,
                                                                   target if pair else "branch")
    key = (model or predictor.version, tuple((m, c.digest, boxes.get(m)) for m, c in given.items()),
           decision.label, decision.output, decision.probability, decision.threshold, cam_key,
           tuple(details), branches_disagree,
           None if intervals is None else tuple(sorted(
               (k, float(v.low), float(v.high), bool(v.uncertain)) for k, v in intervals.items())))
    with _PDF_CACHE_LOCK:
        if key in _PDF_CACHE:
            _PDF_CACHE.move_to_end(key)
            return _PDF_CACHE[key]
    us, mg = given.get(US), given.get(MG)
    if cams is None:
        cams = compute_case_cams(predictor, us, mg, boxes.get(US), boxes.get(MG),
                                 method=cam_key[0], target=cam_key[1])
    if intervals is None:
        intervals = decision_intervals(predictor, prediction, decision,
                                       us.image if us is not None else None,
                                       mg.image if mg is not None else None,
                                       us_box=boxes.get(US), mg_box=boxes.get(MG))
    if branches_disagree is None:
        branches_disagree = case_branches_disagree(prediction, predictor.card)
    data = report_for_case(predictor, prediction, decision,
                           images={m: c.image for m, c in given.items()},
                           boxes={m: boxes.get(m) for m in given},
                           names={m: c.name for m, c in given.items()}, cams=cams,
                           intervals=intervals, branches_disagree=branches_disagree,
                           details=list(details))
    with _PDF_CACHE_LOCK:
        _PDF_CACHE[key] = data
        while len(_PDF_CACHE) > _PDF_CACHE_ENTRIES:
            _PDF_CACHE.popitem(last=False)
    return data
