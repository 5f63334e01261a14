"""A printable one-page PDF case report (A4), made with fpdf2.

One page for one case read by DL-UM (Xu et al., Breast Cancer Research 2025): the date, the model
version and checkpoint, the research-use disclaimer; the ultrasound and mammography images with
their lesion boxes (solid) and the network's crop (the box plus 30% of its shortest side, dashed);
the class activation maps of blocks 1–5 of each branch on the network's crop, with a colour bar
drawn from the colormap of the overlays; a table of the outputs with their operating thresholds
and, when given, per-case intervals and their "uncertain" flags; whether the branches disagree;
the decision of :func:`dlum.decision.decide` with the figures it rests on and the precision used.

Text is set in DejaVu Sans, shipped in ``dlum/app/assets/fonts`` (Bitstream Vera licence, beside
the fonts) and embedded as a subset, so "≥", "–", "·", "×" print as themselves on every machine.
Any character the font lacks (a file name in another script) is printed as "?".

The layout is fixed (:data:`REGIONS`, millimetres from the page's top-left corner), so the page
count is always one: text that would run into the footer is cut with a pointer to the JSON report.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dlum.constants import DISCLAIMER, MG, MODALITIES, MODALITY_NAMES, N_BLOCKS, ROI_EXPANSION, US

if TYPE_CHECKING:  # pragma: no cover
    from dlum.card import Card
    from dlum.decision import Decision
    from dlum.inference import PairPrediction, Predictor
    from dlum.visualize.cam import CAMResult

__all__ = [
    "FONT_BOLD",
    "FONT_DIR",
    "FONT_REGULAR",
    "IntervalLike",
    "REGIONS",
    "case_report_pdf",
    "font_characters",
    "report_for_case",
]

FONT_DIR = Path(__file__).resolve().parent / "app" / "assets" / "fonts"
FONT_REGULAR = FONT_DIR / "DejaVuSans.ttf"
FONT_BOLD = FONT_DIR / "DejaVuSans-Bold.ttf"
_FAMILY = "DejaVu"

#: The outputs a report lists, in order, with the names the clinic reads.
OUTPUT_NAMES = {"p_dlum": "DL-UM (fused US + MG)", "p_us_head": "Ultrasound branch (block 5)",
                "p_mg_head": "Mammography branch (block 5)"}

# ----------------------------------------------------------------------------------- the layout
PAGE_W, PAGE_H = 210.0, 297.0  # A4, mm
MARGIN = 12.0
CONTENT_W = PAGE_W - 2 * MARGIN
_COL_GAP = 6.0
_COL_W = (CONTENT_W - _COL_GAP) / 2
_IMAGES_Y, _IMAGES_H = 46.0, 60.0
_CAM_LABEL_W, _CAM_GAP, _CAM_TITLE_H = 16.0, 1.6, 3.8
_CAM_TILE = (CONTENT_W - _CAM_LABEL_W - N_BLOCKS * _CAM_GAP) / (N_BLOCKS + 1)
_CAMS_Y = 122.0
_BAR_Y = _CAMS_Y + _CAM_TITLE_H + 2 * _CAM_TILE + _CAM_GAP + 2.0
_OUTPUTS_Y = _BAR_Y + 12.0
_DECISION_Y = _OUTPUTS_Y + 38.0
_FOOTER_Y = PAGE_H - 9.0

#: Where the pictures lie on the page: ``name -> (x, y, width, height)`` in millimetres.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "us_image": (MARGIN, _IMAGES_Y, _COL_W, _IMAGES_H),
    "mg_image": (MARGIN + _COL_W + _COL_GAP, _IMAGES_Y, _COL_W, _IMAGES_H),
    "us_cams": (MARGIN + _CAM_LABEL_W, _CAMS_Y + _CAM_TITLE_H,
                CONTENT_W - _CAM_LABEL_W, _CAM_TILE),
    "mg_cams": (MARGIN + _CAM_LABEL_W, _CAMS_Y + _CAM_TITLE_H + _CAM_TILE + _CAM_GAP,
                CONTENT_W - _CAM_LABEL_W, _CAM_TILE),
    "colour_bar": (MARGIN + 30.0, _BAR_Y, 70.0, 3.5),
}

_BOX_COLOUR, _CROP_COLOUR = (255, 212, 0), (127, 209, 255)  # as the Case Review figure draws them
_DECISION_COLOURS = {True: (190, 30, 45), False: (20, 120, 60), None: (200, 110, 0)}
_THUMB_SIDE = 720  # pixels of the longest side of an image shown (about 200 dpi at 90 mm)


class IntervalLike(Protocol):
    """A per-case interval of one output (what ``dlum.uncertainty.case_uncertainty`` returns);
    only these attributes are read."""

    output: str
    estimate: float
    low: float
    high: float
    level: float
    views: int
    seed: int
    threshold: float | None

    @property
    def uncertain(self) -> bool: ...


# ------------------------------------------------------------------------------------- the font
@functools.lru_cache(maxsize=1)
def font_characters() -> frozenset[int]:
    """Code points that both shipped fonts (regular and bold) can draw."""
    from fontTools.ttLib import TTFont

    cmaps = [set(TTFont(path, lazy=True).getBestCmap()) for path in (FONT_REGULAR, FONT_BOLD)]
    return frozenset(cmaps[0] & cmaps[1])


def _text(value: Any) -> str:
    """``value`` as text the embedded font can draw: any other character becomes "?"."""
    drawable = font_characters()
    return "".join(c if c == "\n" or ord(c) in drawable else "?" for c in str(value))


# ---------------------------------------------------------------------------------------- images
def _thumbnail(image: np.ndarray, box, shape) -> Any:
    """An RGB PIL thumbnail of a grey image with the lesion box (solid yellow) and the network's
    crop (dashed blue), as Case Review's figure draws them."""
    from PIL import Image, ImageDraw

    from dlum.data.io import to_display_uint8
    from dlum.data.roi import expand_box

    height, width = shape
    step = max(1, int(max(height, width) / _THUMB_SIDE) // 2)  # thin a 13 Mpx mammogram first
    grey = Image.fromarray(to_display_uint8(np.asarray(image)[::step, ::step]))
    scale = min(1.0, _THUMB_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    thumb = grey.resize(size, Image.Resampling.LANCZOS).convert("RGB")
    if box is not None:
        sx, sy = size[0] / width, size[1] / height
        line = max(2, round(max(size) / 240))
        draw = ImageDraw.Draw(thumb)
        x0, y0, x1, y1 = expand_box(box, (height, width), ROI_EXPANSION)
        _dashed_rectangle(draw, (x0 * sx, y0 * sy, x1 * sx, y1 * sy), _CROP_COLOUR, line, 4 * line)
        x0, y0, x1, y1 = box
        draw.rectangle((x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1), outline=_BOX_COLOUR, width=line)
    return thumb


def _dashed_rectangle(draw, box, colour, width: int, dash: float) -> None:
    # PIL draws no dashed lines: each side is cut into dashes here.
    x0, y0, x1, y1 = box
    for ax, ay, bx, by in ((x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)):
        length = math.hypot(bx - ax, by - ay)
        if length == 0:
            continue
        start = 0.0
        while start < length:
            end = min(start + dash, length)
            draw.line([(ax + (bx - ax) * start / length, ay + (by - ay) * start / length),
                       (ax + (bx - ax) * end / length, ay + (by - ay) * end / length)],
                      fill=colour, width=width)
            start += 2 * dash


def _network_patch(image: np.ndarray, box, size: int) -> np.ndarray:
    """What the network reads, grey in [0, 1]: the crop (box + 30%), resized, min–max scaled."""
    from dlum.data.roi import crop_roi
    from dlum.data.transforms import resize, to_unit_range

    return to_unit_range(resize(crop_roi(image, box, ROI_EXPANSION), size))


def _grey_tile(patch: np.ndarray):
    from PIL import Image

    return Image.fromarray((np.clip(patch, 0, 1) * 255).round().astype(np.uint8)).convert("RGB")


def _cam_tiles(patch: np.ndarray, maps: np.ndarray, opacity: float) -> list:
    """The crop, then the CAM overlays of blocks 1 → 5 on it (as Case Review shows them)."""
    from PIL import Image

    from dlum.data.transforms import resize
    from dlum.visualize.cam import overlay

    if maps.shape[-2:] != patch.shape:
        maps = np.clip(resize(maps, patch.shape), 0, 1)
    return [_grey_tile(patch)] + [Image.fromarray(overlay(patch, maps[k], opacity))
                                  for k in range(maps.shape[0])]


def _colour_bar(width: int = 256, height: int = 12):
    """The overlays' colormap from low (left) to high (right), drawn by the same
    :func:`dlum.visualize.cam.overlay` at full opacity, so the bar cannot drift from the maps."""
    from PIL import Image

    from dlum.visualize.cam import overlay

    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    return Image.fromarray(overlay(np.zeros_like(ramp), ramp, opacity=1.0))


# ------------------------------------------------------------------------------------ formatting
def _p(value: float | None) -> str:
    return "—" if value is None else f"{float(value):.3f}"


def _is_range(interval: IntervalLike) -> bool:
    """The interval is the views' whole range (level 1, ``dlum.uncertainty``'s default)."""
    return float(getattr(interval, "level", 0.0) or 0.0) >= 1.0


def _shown(interval: IntervalLike, p: float | None) -> tuple[float, float]:
    """``(low, high)`` as printed: a range is widened to hold the P printed beside it, read in
    another forward (as ``dlum.uncertainty.holding``: the two differ only by the precision's
    rounding)."""
    low, high = float(interval.low), float(interval.high)
    if p is not None and _is_range(interval):
        low, high = min(low, float(p)), max(high, float(p))
    return low, high


def _interval_text(interval: IntervalLike | None, p: float | None = None) -> str:
    if interval is None:
        return "—"
    low, high = _shown(interval, p)
    return f"{low:.3f}–{high:.3f}"


def _uncertain(interval: IntervalLike, p: float | None) -> bool:
    """The interval's flag, or its printed range straddling the interval's threshold."""
    t = getattr(interval, "threshold", None)
    low, high = _shown(interval, p)
    return bool(getattr(interval, "uncertain", False)) or (t is not None and low < t <= high)


def _interval_heading(levels: list[float]) -> str:
    if len(levels) != 1:
        return "Interval"
    return "TTA range" if levels[0] >= 1.0 else f"{levels[0]:.0%} interval"


def _intervals_by_output(intervals: Mapping[str, IntervalLike] | None) -> dict[str, IntervalLike]:
    out: dict[str, IntervalLike] = {}
    for key, interval in (intervals or {}).items():
        out[str(getattr(interval, "output", None) or key)] = interval
    return out


def _threshold(output: str, decision: Decision, card: Card | None) -> float | None:
    if output == decision.output:
        return decision.threshold
    return None if card is None else card.threshold_for(output)


def _when(created: datetime) -> str:
    return created.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------- the PDF
def case_report_pdf(
    prediction: PairPrediction,
    decision: Decision,
    *,
    card: Card | None = None,
    images: Mapping[str, np.ndarray] | None = None,
    boxes: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
    patches: Mapping[str, np.ndarray] | None = None,
    cams: CAMResult | None = None,
    intervals: Mapping[str, IntervalLike] | None = None,
    branches_disagree: bool | None = None,
    checkpoint: str | None = None,
    details: Sequence[str] = (),
    created: datetime | None = None,
    opacity: float = 0.5,
) -> bytes:
    """One A4 page (PDF bytes) reporting one case as DL-UM read it.

    Args:
        prediction: the model's outputs (:class:`dlum.inference.PairPrediction`).
        decision: :func:`dlum.decision.decide`'s call on it.
        card: the checkpoint's card (the thresholds of the outputs not judged).
        images: decoded grey images per modality (``"us"``, ``"mg"``); a modality left out is
            shown as not given.
        boxes: the lesion box read per modality (None: the whole image).
        names: the file name shown per modality.
        patches: the network's crops (grey, [0, 1]) under the CAMs; made from ``images`` and
            ``boxes`` at the maps' size when left out.
        cams: :class:`dlum.visualize.cam.CAMResult` of blocks 1–5 (None: not computed).
        intervals: per-case intervals per output (anything with ``output, estimate, low, high,
            level, views, seed, threshold`` and ``uncertain``); None: not computed.
        branches_disagree: :func:`dlum.disagreement.branches_disagree` of the two branch heads
            (None: not judged, e.g. one image only).
        checkpoint: the checkpoint's folder name.
        details: further lines for the end of the page (BI-RADS concordance, box sources).
        created: the report's time (default now); also the PDF's creation date.
        opacity: of the CAM heatmaps over the crops.
    """
    from fpdf import FPDF

    import dlum

    created = created or datetime.now(timezone.utc)
    images, boxes = dict(images or {}), dict(boxes or {})
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(MARGIN, 10.0, MARGIN)
    pdf.set_creation_date(created)
    pdf.set_title("DL-UM case report")
    pdf.set_creator(f"dlum {dlum.__version__}")
    pdf.add_font(_FAMILY, "", str(FONT_REGULAR))
    pdf.add_font(_FAMILY, "B", str(FONT_BOLD))
    pdf.add_page()
    _draw_header(pdf, prediction, card, checkpoint, created)
    _draw_images(pdf, images, boxes, dict(names or {}))
    _draw_cams(pdf, cams, images, boxes, dict(patches or {}), opacity)
    _draw_outputs(pdf, prediction, decision, card, _intervals_by_output(intervals),
                  branches_disagree)
    _draw_decision(pdf, prediction, decision, details)
    pdf.set_xy(MARGIN, _FOOTER_Y)
    pdf.set_font(_FAMILY, "", 7)
    pdf.set_text_color(110)
    pdf.cell(CONTENT_W, 3.5, _text(f"DL-UM: Xu et al., Breast Cancer Research 2025 · dlum "
                                   f"{dlum.__version__} · {_when(created)} · page 1 of 1"),
             align="C")
    data = bytes(pdf.output())
    missing = {font.fontkey: font.missing_glyphs for font in pdf.fonts.values()
               if getattr(font, "missing_glyphs", None)}
    if missing or pdf.pages_count != 1:  # never reached: _text() and the fixed layout prevent it
        raise RuntimeError(f"the case report lost its shape: missing glyphs {missing}, "
                           f"{pdf.pages_count} pages")
    return data


def _draw_header(pdf, prediction, card, checkpoint: str | None, created: datetime) -> None:
    """Title, date, model version and checkpoint, and the research-use disclaimer."""
    import dlum

    pdf.set_text_color(0)
    pdf.set_font(_FAMILY, "B", 15)
    pdf.set_xy(MARGIN, 10.0)
    pdf.cell(CONTENT_W / 2, 7.0, "DL-UM case report")
    pdf.set_font(_FAMILY, "", 9)
    pdf.cell(CONTENT_W / 2, 7.0, _text(f"Created {_when(created)}"), align="R")
    model = [f"Model {prediction.model_version or '(unnamed)'}"]
    if checkpoint:
        model.append(f"checkpoint {checkpoint}")
    if card is not None and card.code_commit:
        model.append(f"code {str(card.code_commit)[:12]}")
    model.append(f"dlum {dlum.__version__}")
    run = " on ".join(v for v in (prediction.precision, prediction.device) if v)
    if run:
        model.append(run)
    pdf.set_xy(MARGIN, 17.5)
    pdf.set_font(_FAMILY, "", 8.5)
    pdf.cell(CONTENT_W, 4.5, _fit(pdf, _text(" · ".join(model)), CONTENT_W))
    pdf.set_xy(MARGIN, 23.5)
    pdf.set_fill_color(255, 243, 205)
    pdf.set_draw_color(200, 160, 60)
    pdf.multi_cell(CONTENT_W, 4.2, _text(DISCLAIMER), border=1, fill=True, markdown=True,
                   padding=(1.2, 2.0))
    pdf.set_fill_color(255)
    pdf.set_draw_color(0)


def _draw_images(pdf, images: dict, boxes: dict, names: dict) -> None:
    """Each image fitted into its region with its boxes, and two caption lines under it."""
    _section(pdf, _IMAGES_Y - 5.5, "Images and lesion boxes")
    pdf.set_font(_FAMILY, "", 7.2)
    pdf.set_text_color(70)
    for m in MODALITIES:
        x, y, w, h = REGIONS[f"{m}_image"]
        image = images.get(m)
        if image is None:
            pdf.set_xy(x, y + h / 2 - 3)
            other = MODALITY_NAMES[MG if m == US else US].lower()
            pdf.multi_cell(w, 3.6, f"No {MODALITY_NAMES[m].lower()} image: the {other} branch "
                                   "alone was read.", align="C")
            continue
        shape = np.asarray(image).shape[:2]
        box = boxes.get(m)
        thumb = _thumbnail(image, box, shape)
        fit = min(w / thumb.width, h / thumb.height)
        tw, th = thumb.width * fit, thumb.height * fit
        pdf.image(thumb, x=x + (w - tw) / 2, y=y + (h - th) / 2, w=tw, h=th)
        head = f"{MODALITY_NAMES[m]} · {shape[1]} × {shape[0]} px"
        if names.get(m):
            head += " · " + str(names[m])
        where = (f"box [{', '.join(str(int(v)) for v in box)}] (yellow) · crop "
                 f"+{ROI_EXPANSION:.0%} (dashed blue)"
                 if box is not None else "whole image read (no lesion box)")
        for k, text in enumerate((head, where)):
            pdf.set_xy(x, y + h + 0.8 + 3.3 * k)
            pdf.cell(w, 3.3, _fit(pdf, _text(text), w - 2), align="C")
    pdf.set_text_color(0)


def _draw_cams(pdf, cams: CAMResult | None, images: dict, boxes: dict, patches: dict,
               opacity: float) -> None:
    """One row per branch: the network's crop and the overlays of blocks 1 → 5; a colour bar."""
    if cams is None or not cams.maps:
        _section(pdf, _CAMS_Y - 5.5, "Class activation maps")
        pdf.set_font(_FAMILY, "", 8)
        pdf.set_xy(MARGIN, _CAMS_Y + 2)
        pdf.cell(CONTENT_W, 4, "Not computed for this report.")
        return
    explains = ("the fused DL-UM output" if cams.target == "fused" and len(cams.maps) == 2
                else "each branch's own output")
    _section(pdf, _CAMS_Y - 5.5, f"Class activation maps: {cams.method} of {explains}, "
                                 f"blocks 1–{N_BLOCKS}")
    pdf.set_font(_FAMILY, "", 7)
    titles = ["Input (ROI crop)"] + [f"Block {k}" for k in range(1, N_BLOCKS + 1)]
    for c, title in enumerate(titles):
        pdf.set_xy(MARGIN + _CAM_LABEL_W + c * (_CAM_TILE + _CAM_GAP), _CAMS_Y)
        pdf.cell(_CAM_TILE, _CAM_TITLE_H - 0.6, title, align="C")
    for m in MODALITIES:
        x, y, _, _ = REGIONS[f"{m}_cams"]
        pdf.set_font(_FAMILY, "B", 8)
        pdf.set_xy(MARGIN, y + _CAM_TILE / 2 - 2)
        pdf.cell(_CAM_LABEL_W, 4, m.upper())
        maps = cams.maps.get(m)
        if maps is None:
            pdf.set_font(_FAMILY, "", 7.5)
            pdf.set_xy(x, y + _CAM_TILE / 2 - 2)
            pdf.cell(0, 4, f"No {MODALITY_NAMES[m].lower()} image.")
            continue
        patch = patches.get(m)
        if patch is None and m in images:
            patch = _network_patch(images[m], boxes.get(m), int(maps.shape[-1]))
        elif patch is None:  # maps without their image: shown on black
            patch = np.zeros(maps.shape[-2:], np.float32)
        for c, tile in enumerate(_cam_tiles(np.asarray(patch, np.float32), maps, opacity)):
            pdf.image(tile, x=x + c * (_CAM_TILE + _CAM_GAP), y=y, w=_CAM_TILE, h=_CAM_TILE)
    bx, by, bw, bh = REGIONS["colour_bar"]
    pdf.image(_colour_bar(), x=bx, y=by, w=bw, h=bh)
    pdf.set_font(_FAMILY, "", 7)
    pdf.set_xy(MARGIN, by - 0.4)
    pdf.cell(bx - MARGIN - 1, bh + 0.8, "CAM low", align="R")
    pdf.set_xy(bx + bw + 1, by - 0.4)
    pdf.cell(16, bh + 0.8, "high")
    pdf.set_xy(bx + bw + 12, by - 1.2)
    pdf.set_text_color(70)
    pdf.multi_cell(PAGE_W - MARGIN - (bx + bw + 12), 3.0, "Colours are relative within each "
                   "map (min–max): never compare them across blocks, images or cases.",
                   align="L")
    pdf.set_text_color(0)


def _draw_outputs(pdf, prediction, decision: Decision, card: Card | None,
                  intervals: dict[str, IntervalLike], branches_disagree: bool | None) -> None:
    """The outputs table (P, threshold, side, interval, flags) and the lines under it."""
    from fpdf.fonts import FontFace

    _section(pdf, _OUTPUTS_Y - 5.5, "Outputs: P(malignant) against each output's threshold")
    levels = sorted({float(i.level) for i in intervals.values() if getattr(i, "level", None)})
    pdf.set_xy(MARGIN, _OUTPUTS_Y)
    pdf.set_font(_FAMILY, "", 8)
    bold = FontFace(emphasis="BOLD")
    with pdf.table(col_widths=(48, 24, 20, 26, 30, 38), width=CONTENT_W, line_height=4.6,
                   text_align=("LEFT", "CENTER", "CENTER", "CENTER", "CENTER", "LEFT"),
                   borders_layout="HORIZONTAL_LINES", align="LEFT",
                   headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235))) as table:
        table.row(["Output", "P(malignant)", "Threshold", "P vs threshold",
                   _interval_heading(levels), "Flags"])
        for output, title in OUTPUT_NAMES.items():
            p = getattr(prediction, output, None)
            if p is None:
                continue
            threshold = _threshold(output, decision, card)
            interval = intervals.get(output)
            flags = ["decision"] if output == decision.output else []
            if interval is not None and _uncertain(interval, p):
                flags.append("uncertain")
            row = table.row()
            for value in (title, _p(p), "none in card" if threshold is None else _p(threshold),
                          "—" if threshold is None else ("≥" if p >= threshold else "<"),
                          _interval_text(interval, p) if intervals else "not computed",
                          ", ".join(flags)):
                row.cell(_text(value), style=bold if output == decision.output else None)
    lines: list[str] = []
    if branches_disagree is not None:
        lines.append(_disagreement_text(prediction, decision, card, branches_disagree))
    if intervals:
        first = next(iter(intervals.values()))
        spread = ("TTA range: the lowest to the highest P(malignant) over the plain view and"
                  if _is_range(first) else
                  f"Intervals: the central {float(first.level):.0%} of P(malignant) over the plain "
                  "view and")
        lines.append(f"{spread} {first.views} augmented views of the case (test-time "
                     f"augmentation, seed {first.seed}); uncertain: the "
                     f"{'range' if _is_range(first) else 'interval'} straddles the output's "
                     "threshold (low < threshold ≤ high), so some views would make the other "
                     "call.")
    else:
        lines.append("Per-case intervals: not computed for this report.")
    pdf.set_font(_FAMILY, "", 7.5)
    pdf.set_y(pdf.get_y() + 1.2)
    for line in lines:
        pdf.set_x(MARGIN)
        pdf.multi_cell(CONTENT_W, 3.4, _text(line))


def _draw_decision(pdf, prediction, decision: Decision, details: Sequence[str]) -> None:
    """The call in its colour, then what it rests on, its notes and the closing lines."""
    from dlum.decision import decision_text

    y = max(_DECISION_Y, pdf.get_y() + 2.0)
    pdf.set_xy(MARGIN, y)
    pdf.set_font(_FAMILY, "B", 10)
    pdf.cell(21, 6.5, "Decision:")
    pdf.set_text_color(*_DECISION_COLOURS[decision.biopsy_recommended])
    pdf.set_font(_FAMILY, "B", 12)
    pdf.cell(CONTENT_W - 21, 6.5, _text(decision.label))
    pdf.set_text_color(0)
    paragraphs = [decision_text(decision) + " " + decision.calibration_text()]
    if decision.withheld:
        paragraphs.append(decision.withheld)
    paragraphs += list(decision.notes)
    paragraphs.append(f"Precision: P(malignant) computed in {prediction.precision or 'unknown'}"
                      f"{' on ' + prediction.device if prediction.device else ''}; CAMs always in "
                      "float32.")
    paragraphs += [str(d) for d in details if str(d).strip()]
    pdf.set_y(y + 7.0)
    _paragraphs(pdf, paragraphs, bottom=_FOOTER_Y - 1.5)


def _fit(pdf, text: str, width: float) -> str:
    """``text`` cut (with "…") to fit ``width`` mm in the current font."""
    if pdf.get_string_width(text) <= width:
        return text
    while text and pdf.get_string_width(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _section(pdf, y: float, title: str) -> None:
    pdf.set_xy(MARGIN, y)
    pdf.set_font(_FAMILY, "B", 9.5)
    pdf.set_text_color(0)
    pdf.cell(CONTENT_W, 5.0, _text(title))


def _paragraphs(pdf, paragraphs: Sequence[str], *, bottom: float, size: float = 7.5,
                line: float = 3.4) -> None:
    """Write paragraphs until ``bottom``; what does not fit is cut with a pointer to the JSON
    report (a line is kept for it while more paragraphs follow)."""
    pdf.set_font(_FAMILY, "", size)
    for k, text in enumerate(paragraphs):
        text = _text(text)
        needed = len(pdf.multi_cell(CONTENT_W, line, text, dry_run=True, output="LINES")) * line
        if k < len(paragraphs) - 1:
            needed += line + 0.6
        if needed > bottom - pdf.get_y():
            pdf.set_x(MARGIN)
            pdf.multi_cell(CONTENT_W, line, f"… {len(paragraphs) - k} more note(s) in the "
                                            "JSON report.")
            return
        pdf.set_x(MARGIN)
        pdf.multi_cell(CONTENT_W, line, text)
        pdf.set_y(pdf.get_y() + 0.6)


def _disagreement_text(prediction, decision, card, disagree: bool) -> str:
    if not disagree:
        return ("Branches agree: both branch heads fall on the same side of their own "
                "thresholds.")
    parts = []
    for output, name in (("p_us_head", "ultrasound"), ("p_mg_head", "mammography")):
        p, t = getattr(prediction, output, None), _threshold(output, decision, card)
        if p is not None and t is not None:
            parts.append(f"{name} {p:.3f} {'≥' if p >= t else '<'} {t:.3f}")
    return ("Branches disagree (" + ", ".join(parts) + "): one branch calls the lesion malignant "
            "and the other does not, as with discordant BI-RADS.")


# ------------------------------------------------------------------- from a predictor, one case
def report_for_case(
    predictor: Predictor,
    prediction: PairPrediction,
    decision: Decision,
    *,
    images: Mapping[str, np.ndarray],
    boxes: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
    cams: CAMResult | None = None,
    cam_method: str = "Grad-CAM",
    intervals: Mapping[str, IntervalLike] | None = None,
    branches_disagree: bool | None = None,
    details: Sequence[str] = (),
    created: datetime | None = None,
) -> bytes:
    """:func:`case_report_pdf` for a case read by ``predictor``: the CAMs of every block (fp32,
    :func:`dlum.visualize.cam.compute_cams`; explaining the fused output for a pair) are
    computed unless given, and the network's crops are made at the model's input size."""
    from dlum.visualize.cam import compute_cams

    boxes = dict(boxes or {})
    given = {m: np.asarray(images[m]) for m in MODALITIES if images.get(m) is not None}
    if cams is None:
        tensors = {m: predictor.preprocess(image, boxes.get(m))[None] for m, image in given.items()}
        cams = compute_cams(predictor.model, tensors.get(US), tensors.get(MG), method=cam_method,
                            target="fused" if len(tensors) == 2 else "branch")
    patches = {m: _network_patch(image, boxes.get(m), predictor.input_size)
               for m, image in given.items()}
    return case_report_pdf(prediction, decision, card=predictor.card, images=given, boxes=boxes,
                           names=names, patches=patches, cams=cams, intervals=intervals,
                           branches_disagree=branches_disagree,
                           checkpoint=predictor.checkpoint.name, details=details, created=created)
