"""Case Review: one US + MG pair through DL-UM, live (widgets and layout; logic in dlum.app)."""
from __future__ import annotations

import time
from functools import partial

import streamlit as st

from dlum.app import case_review as cr
from dlum.app import resources as res
from dlum.app.layout import page_config
from dlum.constants import BIRADS_LEVELS, MG, MODALITIES, MODALITY_NAMES, N_BLOCKS, US
from dlum.decision import decide, decision_text
from dlum.errors import DLUMError
from dlum.settings import limits

page_config("DL-UM · Case Review")

UPLOAD, EXAMPLE = "Upload images", "Example case"
CAM_TARGETS = {"fused": "Fused DL-UM output", "branch": "Each branch's own output"}
CAM_EXPLAINS = {"fused": "the fused DL-UM output", "branch": "each branch's own output"}

st.title("Case Review")
st.caption(res.DISCLAIMER)

predictor = res.require_predictor()
model = res.model_key(predictor)

with st.sidebar:
    st.markdown(f"**Model** `{predictor.version}`")
    st.caption(res.device_summary(predictor))


# ---------------------------------------------------------------------------------- session state
# Per modality m: the box fields m_x0 … m_y1 (what the network reads once confirmed), the box's
# source m_roi_state (cr.RoiState: whole, suggested by the finder, accepted, drawn, …) and, for
# mammography, the lesion centre + radius fields mg_cx, mg_cy, mg_r.
BOX_FIELDS = ("x0", "y0", "x1", "y1")


def _set_box(m: str, box, shape) -> None:
    height, width = shape
    x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
    for name, value in zip(BOX_FIELDS, (x0, y0, x1, y1)):
        st.session_state[f"{m}_{name}"] = int(value)


def _state(m: str) -> cr.RoiState:
    return st.session_state.get(f"{m}_roi_state") or cr.RoiState()


def _apply(m: str, state: cr.RoiState, shape) -> None:
    """A new box source: remember it and write its box into the fields."""
    st.session_state[f"{m}_roi_state"] = state
    _set_box(m, state.box, shape)


def _set_centre_defaults(m: str, shape) -> None:
    height, width = shape
    st.session_state[f"{m}_cx"], st.session_state[f"{m}_cy"] = width // 2, height // 2
    st.session_state[f"{m}_r"] = cr.default_radius(shape)


def _on_select(m: str, shape) -> None:
    selection = st.session_state.get(f"{m}_chart")
    box = cr.box_from_selection(selection, shape)
    if box is not None:  # a box dragged on the image replaces the suggestion or the old box
        _apply(m, _state(m).drawn(cr.normalise_box(box, shape)), shape)
    elif m == MG:  # a click: the lesion's centre
        centre = cr.centre_from_selection(selection, shape)
        if centre is not None:
            st.session_state[f"{m}_cx"], st.session_state[f"{m}_cy"] = centre
            _on_centre(m, shape)


def _on_edit(m: str, shape) -> None:
    """A box field typed by hand: the suggestion adjusted, or a box drawn."""
    raw = tuple(st.session_state[f"{m}_{k}"] for k in BOX_FIELDS)
    try:
        box = cr.normalise_box(raw, shape)
    except DLUMError:  # shown by the page on this rerun
        box = raw
    st.session_state[f"{m}_roi_state"] = _state(m).edited(box)


def _on_centre(m: str, shape) -> None:
    ss = st.session_state
    try:
        box = cr.normalise_box(cr.centre_radius_box(ss[f"{m}_cx"], ss[f"{m}_cy"], ss[f"{m}_r"],
                                                    shape), shape)
    except DLUMError:  # the fields' limits keep the centre on the image and the radius >= 1
        return
    _apply(m, _state(m).from_centre(box), shape)


def _accept(m: str, shape) -> None:
    if _state(m).suggestion is not None:  # (the button is only shown when there is one)
        _apply(m, _state(m).accept(), shape)


def _whole_image(m: str, shape) -> None:
    _apply(m, _state(m).whole(), shape)


ALERTS = {"info": partial(st.info, icon=":material/center_focus_strong:"),
          "warning": partial(st.warning, icon=":material/crop_free:"), "caption": st.caption}


# ------------------------------------------------------------------------------------------ source
source = st.segmented_control("Case", [UPLOAD, EXAMPLE], default=UPLOAD, key="source",
                              label_visibility="collapsed")
example = None
example_images: dict = {}
if source == EXAMPLE:
    catalogue = res.example_catalogue()
    example = st.selectbox("Example case", catalogue, format_func=lambda c: c.title,
                           key="example", help="Synthetic phantoms always; public test-split "
                           "pseudo-pairs when the public data folder is present.")
    if example is not None:
        where = f"{example.split} split" if example.split else "in no split (generated)"
        st.info(f"**{example.kind.capitalize()}** · pathology: {example.pathology} · {where}. "
                f"{example.description}", icon=":material/info:")
        try:
            example_images = res.load_example(example)
        except DLUMError as exc:
            res.show_error(exc)
        if st.session_state.get("example_loaded") != example.key:
            st.session_state["example_loaded"] = example.key
            st.session_state[f"{US}_birads"] = example.us_birads
            st.session_state[f"{MG}_birads"] = example.mg_birads

limit_help = (f"PNG, JPEG or DICOM; up to {res.upload_limit_mb()} MB and "
              f"{limits().max_pixels / 1e6:.0f} million pixels per file. Kept in memory only, never "
              "written to disk.")

# -------------------------------------------------------------------------------------- two images
images: dict = {}
boxes: dict = {}
states: dict = {}  # m -> cr.RoiState: where each lesion box comes from
failed: list[str] = []
columns = st.columns(2, gap="large")
for m, col in zip(MODALITIES, columns):
    name = MODALITY_NAMES[m]
    with col:
        st.subheader(name)
        case = None
        if source == EXAMPLE:
            if m in example_images:
                case = cr.image_from_array(example_images[m], example_images[f"{m}_name"], m)
        else:
            upload = st.file_uploader(f"{name} image", key=f"{m}_file", help=limit_help)
            if upload is not None:
                data = upload.getvalue()
                try:
                    case = cr.cached_decode(cr.upload_digest(data), upload.name, m, data)
                except DLUMError as exc:
                    res.show_error(exc)
                    failed.append(m)
        if case is None:
            if m not in failed:
                st.caption(f"No {name.lower()} image: the other branch alone is used.")
            boxes[m] = None
        else:
            shape = (case.height, case.width)
            finder = finding = None
            if m == US:  # the lesion finder suggests a box (cached per image)
                finder = res.get_finder()
                if finder.finder is not None:
                    with st.spinner("Looking for the lesion…"):
                        finding = cr.cached_finding(finder.key, case.digest, finder.finder,
                                                    case.image)
            fields = [f"{m}_{k}" for k in BOX_FIELDS]
            if (st.session_state.get(f"{m}_roi_for") != case.digest
                    or f"{m}_roi_state" not in st.session_state):
                # A new image: the example's box, else the finder's suggestion, else whole.
                st.session_state[f"{m}_roi_for"] = case.digest
                example_box = example_images.get(f"{m}_box") if source == EXAMPLE else None
                _apply(m, cr.RoiState.initial(finding, example_box), shape)
                _set_centre_defaults(m, shape)
            elif any(k not in st.session_state for k in fields):
                # box fields that Streamlit dropped while they were not shown: from the state
                _set_box(m, _state(m).box, shape)
            if any(f"{m}_{k}" not in st.session_state for k in ("cx", "cy", "r")):
                _set_centre_defaults(m, shape)
            state = states[m] = _state(m)
            raw = tuple(st.session_state[k] for k in fields)
            try:
                fields_box = cr.normalise_box(raw, shape, case.name)
            except DLUMError as exc:
                res.show_error(exc)
                failed.append(m)
                fields_box = None
            boxes[m] = state.used_box(fields_box)
            click = m == MG and bool(st.session_state.get(f"{m}_click"))
            st.plotly_chart(
                cr.roi_figure(case, boxes[m], suggestion=state.finding, click_centre=click),
                key=f"{m}_chart", selection_mode=("box", "points") if m == MG else "box",
                on_select=lambda m=m, shape=shape: _on_select(m, shape),
                config={"displaylogo": False, "scrollZoom": False,
                        "modeBarButtonsToRemove": ["lasso2d", "autoScale2d", "toImage"]},
            )
            if boxes[m] is None:
                roi_text = "whole image" + (" (the suggested box is not used until accepted)"
                                            if state.pending else "")
            else:
                roi_text = (f"box {list(boxes[m])} (+30% of its shortest side, dashed blue), "
                            f"{state.origin}")
            how = ("Click the lesion's centre; the radius is under *Lesion centre + radius*."
                   if click else "Drag on the image to draw the lesion box.")
            st.caption(f"`{case.name}` · {case.width} × {case.height} px · ROI: {roi_text}. "
                       + how)
            if m == US:
                if finder is not None and finder.finder is None:
                    st.info(finder.message, icon=":material/info:")
                message = cr.finding_message(state)
                if message is not None:
                    ALERTS[message[0]](message[1])
                if state.offers_suggestion():
                    strong = state.pending and not state.finding.low_confidence
                    st.button("Accept suggested box", key=f"{m}_accept", on_click=_accept,
                              args=(m, shape), icon=":material/check:",
                              type="primary" if strong else "secondary")
            else:
                st.toggle("Click the lesion centre", key=f"{m}_click",
                          help="Instead of dragging a box: a click on the image sets the lesion's "
                               "centre, and the box is centre ± radius (the mini-MIAS "
                               "convention).")
                with st.expander("Lesion centre + radius", expanded=click):
                    st.caption("The mini-MIAS convention: the box is centre ± radius, in pixels "
                               "from the top-left corner, clamped to the image. With *Click the "
                               "lesion centre* on, a click on the image sets the centre.")
                    c = st.columns(3)
                    for col, (field, label, low, high) in zip(c, (
                            ("cx", "Centre x", 0, case.width - 1),
                            ("cy", "Centre y", 0, case.height - 1),
                            ("r", "Radius", 1, max(case.width, case.height)))):
                        col.number_input(label, min_value=low, max_value=int(high), step=1,
                                         key=f"{m}_{field}", on_change=_on_centre,
                                         args=(m, shape))
                    st.button("Use centre + radius", key=f"{m}_centre_apply",
                              on_click=_on_centre, args=(m, shape),
                              icon=":material/adjust:")
            with st.expander("ROI box in pixels"):
                c = st.columns(4)
                for k, (field, limit) in enumerate((("x0", case.width), ("y0", case.height),
                                                    ("x1", case.width), ("y1", case.height))):
                    c[k].number_input(field, min_value=0, max_value=int(limit), step=1,
                                      key=f"{m}_{field}", on_change=_on_edit, args=(m, shape))
                st.button("Whole image", key=f"{m}_whole", on_click=_whole_image,
                          args=(m, shape), icon=":material/fit_screen:")
            images[m] = case
        st.segmented_control(f"{name} BI-RADS", list(BIRADS_LEVELS), key=f"{m}_birads",
                             format_func=lambda v: f"BI-RADS {v}",
                             help="The radiologist's category for this modality (2–5). "
                                  "Never an input of the network.")

birads = {m: st.session_state.get(f"{m}_birads") for m in MODALITIES}
badge = cr.concordance_badge(birads[US], birads[MG])

# ------------------------------------------------------------------------------------------ result
st.divider()
st.subheader("Result")
st.badge(badge.text, color=badge.color, icon=":material/compare_arrows:")
st.caption(badge.explanation)

if failed:
    st.warning("Fix the problem shown above (or remove that file) to see a result.",
               icon=":material/warning:")
    st.stop()
if not images:
    st.info("Upload an ultrasound and/or a mammography image, or choose an example case.",
            icon=":material/upload:")
    st.stop()

us_case, mg_case = images.get(US), images.get(MG)
digests = {m: (images[m].digest if m in images else None) for m in MODALITIES}
t0 = time.perf_counter()
try:
    prediction = cr.cached_prediction(model, digests[US], digests[MG], boxes[US], boxes[MG],
                                      predictor, us_case, mg_case)
except DLUMError as exc:
    res.show_error(exc)
    st.stop()
cached = time.perf_counter() - t0 < 0.5 * prediction.seconds
if prediction.whole_image:
    names = " and ".join(MODALITY_NAMES[m].lower() for m in prediction.whole_image)
    pending = any(states[m].pending for m in prediction.whole_image if m in states)
    st.warning(f"**Outside what the model was trained on: draw the lesion box.** The {names} "
               "image is read whole; DL-UM was trained on lesion patches (the box plus 30%), and "
               "a whole image can give a very different probability. Drag a box around the "
               "lesion above, " + ("accept the lesion finder's suggested box, " if pending else "")
               + "or confirm below that the whole image is the lesion.",
               icon=":material/crop_free:")
whole_key = "whole_confirmed:" + "+".join(str(digests[m]) for m in prediction.whole_image)
if prediction.whole_image:
    st.checkbox("The whole image is the lesion: make the call anyway", key=whole_key)
try:
    decision = decide(prediction, predictor.card,
                      whole_image_confirmed=bool(st.session_state.get(whole_key)))
except DLUMError as exc:
    res.show_error(exc)
    st.stop()

with st.container(border=True):
    c = st.columns([1.2, 1, 1, 1.6])
    fused_threshold = predictor.card.threshold_for("p_dlum")
    if prediction.p_dlum is not None:
        c[0].metric("DL-UM P(malignant)", f"{prediction.p_dlum:.3f}",
                    help="Fused output of both branches."
                         + ("" if fused_threshold is None else
                            f" Its operating threshold: {fused_threshold:.3f}."))
    else:
        c[0].metric("DL-UM P(malignant)", "—", help="Needs both images.")
    # filled once the TTA range is computed, after the main result is on the screen
    interval_slots = {"p_dlum": c[0].container()}
    for col, m, p in ((c[1], US, prediction.p_us_head), (c[2], MG, prediction.p_mg_head)):
        own = predictor.card.threshold_for(f"p_{m}_head")
        col.metric(f"{m.upper()} branch", "—" if p is None else f"{p:.3f}",
                   help=f"{MODALITY_NAMES[m]} branch, block-5 head.")
        if p is not None:
            col.caption("threshold " + ("not in the card" if own is None else
                                        f"{own:.3f} · {'above' if p >= own else 'below'}"))
        interval_slots[f"p_{m}_head"] = col.container()
    with c[3]:
        if decision.made:
            st.badge(decision.label, color="red" if decision.biopsy_recommended else "green",
                     icon=(":material/biotech:" if decision.biopsy_recommended
                           else ":material/event:"))
        else:
            st.badge(decision.label, color="orange", icon=":material/crop_free:")
        flag_slot = st.container()
        st.caption(decision_text(decision) + " " + decision.calibration_text())
    st.caption("Lesion box · " + " · ".join(f"{MODALITY_NAMES[m]}: {states[m].describe()}"
                                            for m in MODALITIES if m in states))
uncertainty = None
with st.spinner("Computing the TTA range…"):
    try:
        uncertainty = cr.cached_uncertainty(model, digests[US], digests[MG], boxes[US], boxes[MG],
                                            0, decision.output, decision.threshold, predictor,
                                            prediction, decision, us_case, mg_case)
    except DLUMError as exc:
        res.show_error(exc, key="uncertainty")
if uncertainty is not None:
    shown = {"p_dlum": prediction.p_dlum, "p_us_head": prediction.p_us_head,
             "p_mg_head": prediction.p_mg_head}
    for output, slot in interval_slots.items():
        if output in uncertainty.intervals and shown[output] is not None:
            slot.caption(uncertainty.probability_text(shown[output], output))
    if decision.made and uncertainty.uncertain:
        flag_slot.badge("Uncertain", color="orange", icon=":material/help:")
    if uncertainty.branches_disagree:
        flag_slot.badge("Branches disagree", color="violet", icon=":material/call_split:")
    if decision.made and uncertainty.uncertain:
        st.warning(uncertainty.uncertain_text(), icon=":material/help:")
    if uncertainty.branches_disagree:
        st.info(uncertainty.branch_text, icon=":material/call_split:")
    st.caption(uncertainty.method_text())
if prediction.mode != "pair":
    st.info(f"**One image only — {decision.output_title}.** " + " ".join(decision.notes),
            icon=":material/looks_one:")
elif decision.notes:
    st.caption(" ".join(decision.notes))
st.caption(f"Inference {prediction.seconds:.2f} s{' (cached result)' if cached else ''} · "
           f"{res.device_summary(predictor)} · model `{prediction.model_version}`")

with st.expander("Per-block heads (deep supervision)"):
    st.dataframe(cr.block_table(prediction).style.format("{:.3f}"), width="stretch")
    st.caption("P(malignant) of the classification head after each block; block 5 is the "
               "branch's output.")

# -------------------------------------------------------------------------------------------- CAMs
st.subheader("Class activation maps")
c = st.columns([1.3, 1.3, 1, 1.2])
method = c[0].selectbox("Method", cr.cam_methods(), key="cam_method")
target = c[1].selectbox("Explain", list(CAM_TARGETS), format_func=CAM_TARGETS.get,
                        key="cam_target", disabled=prediction.mode != "pair")
opacity = c[2].slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="cam_opacity")
show_cams = c[3].toggle("Compute CAMs", key="cam_on",
                        help=f"All {N_BLOCKS} blocks of each branch, float32. Takes a few seconds "
                             "on a CPU.")
patches = {m: cr.cached_network_patch(images[m].digest, boxes[m], predictor.input_size,
                                      images[m].image)
           for m in images}
cams = overlays = None
if show_cams:
    with st.spinner("Computing CAMs for every block…"):
        try:
            cams = cr.cached_cams(model, digests[US], digests[MG], boxes[US], boxes[MG], method,
                                  target if prediction.mode == "pair" else "branch",
                                  predictor, us_case, mg_case)
        except DLUMError as exc:
            res.show_error(exc)
    if cams is not None:
        overlays = cr.cam_overlays(patches, cams, opacity)
        for m in MODALITIES:
            if m not in overlays:
                continue
            st.markdown(f"**{MODALITY_NAMES[m]}**")
            cols = st.columns(N_BLOCKS + 1)
            cols[0].image(patches[m], caption="Input (ROI crop)", width="stretch", clamp=True)
            for k, image in enumerate(overlays[m], start=1):
                cols[k].image(image, caption=f"Block {k}", width="stretch")
        st.caption(f"{cams.method} maps of {CAM_EXPLAINS.get(cams.target, cams.target)}. "
                   "Colours are **relative within each image** (min–max per map): never compare "
                   f"them across blocks, images or cases. Computed in {cams.seconds:.1f} s."
                   + (" " + " ".join(cams.notes) if cams.notes else ""))
else:
    st.caption("Switch on *Compute CAMs* to see which parts of each crop drove the output, "
               f"block 1 → {N_BLOCKS}.")

# ------------------------------------------------------------------------------------------ report
st.divider()
report = cr.build_report(prediction=prediction, decision=decision, badge=badge, images=images,
                         boxes=boxes, birads=birads, card=predictor.card, cams=cams,
                         device=res.device_summary(predictor),
                         example=example.title if example is not None else None,
                         roi_states=states)
c = st.columns([1, 1, 3])
# Deferred downloads: the files are built when a button is clicked, not on every rerun.
c[0].download_button("Report (JSON)", partial(cr.report_json, report),
                     file_name="dlum_case_report.json", mime="application/json",
                     on_click="ignore", icon=":material/download:", key="download_json")
c[1].download_button("Overlays (PNG)",
                     partial(cr.report_png, patches, overlays, cr.report_lines(report)),
                     file_name="dlum_case_overlays.png", mime="image/png", on_click="ignore",
                     icon=":material/image:", key="download_png")
c[2].caption("The JSON holds the inputs (file names, hashes, ROI boxes, BI-RADS), the outputs, "
             "the decision, the model version and the timings. The PNG shows each network crop "
             "and, when computed, the CAMs of all blocks.")

# ----------------------------------------------------------------------- printable report (PDF)
# One A4 page (dlum.report_pdf through cr.case_report), built only when the button is clicked.
c = st.columns([1, 3])
c[0].download_button(
    "Download report (PDF)",
    partial(cr.case_report, predictor, prediction, decision, images, boxes, model=model, cams=cams,
            method=method, target=target if prediction.mode == "pair" else "branch",
            intervals=None if uncertainty is None else uncertainty.intervals,
            branches_disagree=None if uncertainty is None else uncertainty.branches_disagree,
            details=cr.report_details(badge, states,
                                      example.title if example is not None else None)),
    file_name="dlum_case_report.pdf", mime="application/pdf", on_click="ignore",
    icon=":material/picture_as_pdf:", key="download_pdf")
c[1].caption("A printable page: both images with their lesion boxes, the outputs with their "
             "thresholds and per-case intervals, the decision, the CAMs of every block with a "
             "colour bar (computed for the report when not shown here), the model version and "
             "the research-use disclaimer.")
