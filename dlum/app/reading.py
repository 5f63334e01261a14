"""Reading Session page: run your own DL-UM reader study (set-up, reading, analysis).

The study lives in :mod:`dlum.study_store` (one SQLite file in ``DLUM_STUDY_DIR``); this module
turns its API into widgets. Readers read unaided (session 1), then, after the washout, with
DL-UM's output (session 2), as in the reader study of Xu et al. (Breast Cancer Research 2025).
A reader signs in with their name and code and only ever sees their own progress; the study
set-up, the progress of everyone, the export and the analysis need the admin code.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from dlum import readers as rs
from dlum import study_store as ss
from dlum.app.layout import table_with_download
from dlum.app.resources import show_error
from dlum.constants import MG, US
from dlum.errors import DLUMError, InputError
from dlum.settings import REPO_ROOT

__all__ = ["PREPARED_COHORT", "DEMO", "cohort_choices", "demo_cases", "prepared_cases", "uploaded_cases",
           "ai_output", "main"]

#: Where ``python -m dlum prepare --out cache/public`` (the Makefile's target) writes the public cohort.
PREPARED_COHORT = REPO_ROOT / "cache" / "public" / "cohort.csv"
DEMO = "demo"
_PREPARED = {"prepared:test": "Public cohort, test split", "prepared:external": "Public cohort, external split"}
_UPLOAD = "upload"
#: Cohort columns a reader never sees (pathology and what gives it away, file paths, boxes).
_HIDDEN = {"case_id", "label", "pathology", "subgroup", "split", "us_image", "mg_image", "patient_id",
           "pairing", "source", "us_birads", "mg_birads", "us_birads_source", "mg_birads_source",
           *(f"{m}_{c}" for m in (US, MG) for c in ("x0", "y0", "x1", "y1"))}
_MODALITY = {US: "Ultrasound", MG: "Mammography"}


# ------------------------------------------------------------------------------------ cohorts
def cohort_choices() -> dict[str, str]:
    """``{cohort_ref: label}``: the prepared public splits when present, the demo, an upload."""
    out = dict(_PREPARED) if PREPARED_COHORT.is_file() else {}
    out[DEMO] = "Demo cohort (synthetic, no images)"
    out[_UPLOAD] = "Upload a cohort CSV"
    return out


def demo_cases() -> pd.DataFrame:
    """The shipped demo cohort (no images: readers see the reported BI-RADS as a stand-in)."""
    cohort = rs.read_study_cohort(rs.DEMO_COHORT, name=rs.DEMO_COHORT.name)
    info = [{"Reported US BI-RADS (stand-in for the image)": _birads_text(u),
             "Reported MG BI-RADS (stand-in for the image)": _birads_text(m)}
            for u, m in zip(cohort["us_birads"], cohort["mg_birads"])]
    return pd.DataFrame({"case_id": cohort["case_id"], "label": cohort["label"],
                         "subgroup": cohort["subgroup"], "info": info})


def _birads_text(value) -> str:
    return "unknown" if pd.isna(value) else str(int(value))


def prepared_cases(split: str, path: Path = PREPARED_COHORT) -> pd.DataFrame:
    """One split of the prepared public cohort, with its images (pseudo-pairs, no clinical fields)."""
    from dlum.data.manifest import case_box, derive_subgroup, read_cohort

    table = read_cohort(path, check_images=False)
    table = table[table["split"] == split]
    return pd.DataFrame({"case_id": table["case_id"], "label": table["label"].astype(int),
                         "subgroup": derive_subgroup(table["us_birads"], table["mg_birads"]),
                         "us_image": table["us_image"], "mg_image": table["mg_image"],
                         **{f"{m}_box": [case_box(row, m) for _, row in table.iterrows()] for m in (US, MG)},
                         "info": [{} for _ in range(len(table))]})


def uploaded_cases(data: bytes, name: str) -> pd.DataFrame:
    """An uploaded cohort (:data:`dlum.readers.STUDY_COHORT_SCHEMA`); its other columns (not the
    pathology, subgroup, BI-RADS, paths or boxes) are shown to readers as clinical fields."""
    from dlum.data.manifest import case_box

    cohort = rs.read_study_cohort(io.BytesIO(data), name=name)
    raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False).loc[:, lambda f: ~f.columns.duplicated()]
    raw = raw.set_index(raw.index + 1)  # read_table numbers data rows from 1 (the first under the header)
    raw = raw.reindex(cohort.index)
    shown = [c for c in raw.columns if c not in _HIDDEN]
    info = [{c: r[c] for c in shown if str(r[c]).strip()} for _, r in raw.iterrows()]
    out = pd.DataFrame({"case_id": cohort["case_id"].to_numpy(), "label": cohort["label"].to_numpy(),
                        "subgroup": cohort["subgroup"].to_numpy(), "info": info})
    for col in ("us_image", "mg_image"):
        if col in raw.columns:
            out[col] = raw[col].to_numpy()
    for m in (US, MG):
        try:
            out[f"{m}_box"] = [case_box(row, m) for _, row in raw.iterrows()]
        except ValueError as exc:
            raise InputError(f"a {m.upper()} box is not four numbers ({exc})", name) from None
    return out


# ------------------------------------------------------------------------------------ DL-UM output
@st.cache_data(show_spinner=False, max_entries=4)
def _predictions(ref: str) -> tuple[pd.DataFrame, float, str] | None:
    """``(case_id -> p_dlum table, threshold, source text)`` for a study's cohort, or None."""
    from dlum.predictions import thresholds_for

    if ref == DEMO:
        from dlum.data.demo_study import synthetic_cohort, synthetic_predictions

        frame = synthetic_predictions(synthetic_cohort())
        return frame[["case_id", "p_dlum"]], 0.5, "synthetic DEMO output (not a model's)"
    from dlum.app.resources import checkpoint_dir
    from dlum.card import read_card
    from dlum.evaluation import checkpoint_predictions_path, read_predictions

    ckpt = checkpoint_dir()
    path = checkpoint_predictions_path(ckpt)
    if path is None:
        return None
    frame = read_predictions(path.read_bytes(), name=str(path.name))
    if "p_dlum" not in frame.columns:
        return None
    card = read_card(ckpt) if (ckpt / "card.json").is_file() else None
    threshold = thresholds_for(frame, card)["p_dlum"].value
    return frame[["case_id", "p_dlum"]], float(threshold), f"checkpoint `{ckpt.name}` predictions"


def ai_output(ref: str, case_id: str, case: ss.StudyCase | None = None) -> dict | None:
    """DL-UM's output for a case: ``probability, threshold, call, source``.

    The checkpoint's predictions table (or the demo's) when it has the case; otherwise, when the
    case has images and a model is loaded, DL-UM reads them live (:func:`_live_output`). None when
    neither gives a call."""
    found = _predictions(ref)
    if found is not None:
        frame, threshold, source = found
        row = frame[frame["case_id"] == case_id]
        if not row.empty:
            p = float(row["p_dlum"].iloc[0])
            return {"probability": p, "threshold": threshold, "source": source,
                    "call": "malignant" if p >= threshold else "benign"}
    if case is None or not (case.us_image or case.mg_image) or ref == DEMO:
        return None
    from dlum.app.resources import get_predictor, model_key

    predictor = get_predictor()
    if predictor is None:
        return None
    return _live_output(model_key(predictor), case.us_image, case.mg_image, case.us_box, case.mg_box,
                        predictor)


def _read_or_none(path: str | None):
    from dlum.data.io import read_image

    return read_image(path) if path else None


@st.cache_data(show_spinner="DL-UM is reading the case…", max_entries=32)
def _live_output(model: str, us_image: str | None, mg_image: str | None, us_box, mg_box,
                 _predictor) -> dict | None:
    """DL-UM on the case's images and boxes, judged at the card's threshold (:func:`dlum.decision.decide`);
    None when no call is made (e.g. a whole image without a box)."""
    from dlum.decision import decide

    prediction = _predictor.predict_pair(us=_read_or_none(us_image), mg=_read_or_none(mg_image),
                                         us_box=us_box, mg_box=mg_box)
    decision = decide(prediction, _predictor.card)
    if decision.biopsy_recommended is None:
        return None
    return {"probability": float(decision.probability), "threshold": float(decision.threshold),
            "source": f"DL-UM {_predictor.version}, read live ({decision.output_title})",
            "call": "malignant" if decision.biopsy_recommended else "benign"}


# ------------------------------------------------------------------------------------ explanation
@st.cache_data(show_spinner="Computing the heatmaps…", max_entries=16)
def _explanation(model: str, us_image: str | None, mg_image: str | None, us_box, mg_box,
                 _predictor) -> dict:
    """Block-5 Grad-CAM overlays (RGB uint8) of DL-UM's output on each image's network patch,
    as the heatmaps of Fig. 2E of Xu et al. (the Case Review page shows all five blocks)."""
    from dlum.app.case_review import cam_overlays, compute_case_cams, image_from_array, network_patch

    images = {m: image_from_array(_read_or_none(p), str(p), m, origin="study")
              for m, p in ((US, us_image), (MG, mg_image)) if p}
    boxes = {US: us_box, MG: mg_box}
    cams = compute_case_cams(_predictor, images.get(US), images.get(MG), us_box, mg_box)
    patches = {m: network_patch(c.image, boxes[m], _predictor.input_size) for m, c in images.items()}
    return {m: layers[-1] for m, layers in cam_overlays(patches, cams).items()}


def _show_explanation(case: ss.StudyCase) -> None:
    """The heatmaps of an aided case whose reader asked for them (or why there are none)."""
    if not case.us_image and not case.mg_image:
        st.caption("Explanation request logged. This cohort has no images, so there are no heatmaps to show.")
        return
    from dlum.app.resources import get_predictor, model_key

    try:
        predictor = get_predictor()
        if predictor is None:
            st.caption("Explanation request logged. No DL-UM model is loaded, so there are no heatmaps.")
            return
        overlays = _explanation(model_key(predictor), case.us_image, case.mg_image, case.us_box,
                                case.mg_box, predictor)
    except (DLUMError, OSError) as exc:
        st.warning(f"The heatmaps cannot be computed: {exc}", icon=":material/broken_image:")
        return
    cols = st.columns(len(overlays))
    for col, (m, picture) in zip(cols, overlays.items()):
        col.image(picture, caption=f"{_MODALITY[m]}: lesion patch, Grad-CAM of DL-UM (block 5)",
                  width="stretch")
    st.caption("Warmer colours mark the regions that pushed DL-UM towards malignant.")


# ------------------------------------------------------------------------------------ reading
def _show_image(column, modality: str, path: str | None) -> None:
    from dlum.data.io import read_image, to_display_uint8

    column.markdown(f"**{_MODALITY[modality]}**")
    if not path:
        column.caption("No image in this cohort.")
        return
    try:
        column.image(to_display_uint8(read_image(path)), width="stretch")
    except (DLUMError, OSError) as exc:
        column.warning(f"The image cannot be shown: {exc}", icon=":material/broken_image:")


def _sign_in(store: ss.StudyStore) -> None:
    st.markdown("Sign in with the name and code the study admin gave you. You can stop at any time: "
                "each read is saved when you submit it, and signing in again resumes at your next case.")
    c1, c2 = st.columns(2)
    name = c1.text_input("Reader name", key="reader_name")
    code = c2.text_input("Reader code", type="password", key="reader_code")
    if st.button("Sign in", key="sign_in", type="primary"):
        try:
            st.session_state["reader"] = store.sign_in(name, code)
        except DLUMError as exc:
            st.error(str(exc), icon=":material/lock:")
            return
        st.rerun()


def reader_view(store: ss.StudyStore) -> None:
    study = store.study()
    if study is None:
        st.info("No study has been set up yet: the study admin sets one up under *Study set-up*.",
                icon=":material/info:")
        return
    reader = st.session_state.get("reader")
    if reader is None:
        _sign_in(store)
        return
    top = st.columns([4, 1])
    top[0].markdown(f"Signed in as **{reader.name}** ({reader.modality.upper()} reader, {reader.experience}).")
    if top[1].button("Pause and sign out", key="sign_out", icon=":material/pause:"):
        del st.session_state["reader"]
        st.rerun()
    status = store.status(reader)
    done = status.unaided_done + status.aided_done
    st.progress(done / (2 * status.total) if status.total else 0.0,
                text=f"{done} of {2 * status.total} reads (session 1: {status.unaided_done}/{status.total}, "
                     f"session 2: {status.aided_done}/{status.total})")
    if status.finished:
        st.success("You have read every case in both sessions. Thank you!", icon=":material/task_alt:")
        return
    if status.waiting:
        st.info(f"Session 1 is complete. Session 2 (with DL-UM) opens after the washout, on "
                f"{status.opens_at:%Y-%m-%d %H:%M} UTC.", icon=":material/schedule:")
        return
    _read_case(store, reader, status, study)


def _read_case(store: ss.StudyStore, reader: ss.Reader, status: ss.Status, study: dict) -> None:
    aided = status.session == ss.AIDED
    title = "Session 2 · with DL-UM" if aided else "Session 1 · unaided"
    st.subheader(f"{title} — case {status.done + 1} of {status.total}")
    case = store.case(reader, status.case_id)
    st.caption(f"Case `{case.case_id}`. Submitted reads are final: there is no going back.")
    if not case.us_image and not case.mg_image:
        st.info("This cohort has no images (the demo cohort): what it has is shown below.",
                icon=":material/image_not_supported:")
    else:
        cols = st.columns(2)
        _show_image(cols[0], US, case.us_image)
        _show_image(cols[1], MG, case.mg_image)
    if case.info:
        st.dataframe(pd.DataFrame({"field": list(case.info), "value": [str(v) for v in case.info.values()]}),
                     hide_index=True, width="content")
    else:
        st.caption("No clinical fields in this cohort.")

    key = f"{status.session}_{status.done}"
    accepted = None
    ai = None
    if aided:
        ai = ai_output(study["cohort_ref"], case.case_id, case)
        with st.container(border=True):
            st.markdown("**DL-UM**")
            if ai is None:
                st.info("DL-UM has no prediction for this case: read it as you would unaided.",
                        icon=":material/info:")
            else:
                c1, c2 = st.columns(2)
                c1.metric("P(malignant)", f"{ai['probability']:.3f}")
                c2.metric("Suggestion", "biopsy (malignant)" if ai["call"] == "malignant" else "no biopsy (benign)",
                          help=f"Operating threshold {ai['threshold']:.3f}; {ai['source']}.")
                accepted = st.radio("DL-UM's suggestion", ["accept", "reject"], index=None, horizontal=True,
                                    key=f"accept_{key}")
                if st.button("Explain (show heatmaps)", key=f"explain_{key}", icon=":material/visibility:"):
                    store.request_explanation(reader, case.case_id)
                if store.explanation_requested(reader, case.case_id):
                    _show_explanation(case)

    birads_help = f"Your {_MODALITY[reader.modality].lower()} BI-RADS"
    c1, c2, c3 = st.columns(3)
    birads = c1.selectbox(f"{reader.modality.upper()} BI-RADS", ss.BIRADS_CHOICES, index=None,
                          key=f"birads_{key}", help=birads_help)
    call = c2.radio("Final call" if aided else "Call", ["benign", "malignant"], index=None, horizontal=True,
                    key=f"call_{key}", format_func=lambda c: f"possibly {c}")
    confidence = c3.slider("Confidence of malignancy (0-100)", 0, 100, 50, key=f"confidence_{key}")
    if st.button("Submit read", key=f"submit_{key}", type="primary", icon=":material/send:"):
        missing = [n for n, v in (("BI-RADS", birads), ("call", call)) if v is None]
        if aided and ai is not None and accepted is None:
            missing.append("accept / reject DL-UM")
        if missing:
            st.warning(f"Choose {', '.join(missing)} before submitting.", icon=":material/warning:")
            return
        try:
            store.submit_read(reader, case.case_id, birads=birads, call=call, confidence=confidence,
                              accepted_ai=None if accepted is None else accepted == "accept",
                              ai=None if ai is None else ss.AIOutput(ai["probability"], ai["threshold"],
                                                                     ai["call"]))
        except DLUMError as exc:
            show_error(exc)
            return
        st.rerun()


# ------------------------------------------------------------------------------------ set-up
def _admin_sign_in(store: ss.StudyStore) -> ss.Admin | None:
    admin = st.session_state.get("admin")
    if admin is not None:
        return admin
    if not store.has_admin():
        st.markdown("**First visit**: choose the admin code that protects the study set-up, the "
                    "export and the analysis. It is stored only as a salted hash.")
        c1, c2 = st.columns(2)
        code = c1.text_input("New admin code", type="password", key="admin_new_code")
        again = c2.text_input("Repeat it", type="password", key="admin_new_code2")
        if st.button("Set admin code", key="admin_set", type="primary"):
            if code != again:
                st.error("The two codes differ.")
                return None
            try:
                st.session_state["admin"] = store.set_admin_code(code)
            except DLUMError as exc:
                st.error(str(exc))
                return None
            st.rerun()
        return None
    code = st.text_input("Admin code", type="password", key="admin_code")
    if st.button("Sign in as admin", key="admin_sign_in"):
        try:
            st.session_state["admin"] = store.admin_sign_in(code)
        except DLUMError as exc:
            st.error(str(exc), icon=":material/lock:")
            return None
        st.rerun()
    return None


def _create_study(store: ss.StudyStore, admin: ss.Admin) -> None:
    st.markdown("**New study**")
    choices = cohort_choices()
    ref = st.radio("Cohort", list(choices), format_func=choices.get, key="cohort_source")
    upload = None
    if ref == _UPLOAD:
        upload = st.file_uploader("Cohort CSV (case_id, label, us_birads + mg_birads or subgroup; "
                                  "other columns are shown to readers, never the label)", type=["csv"],
                                  key="cohort_upload")
    c1, c2 = st.columns(2)
    washout = c1.number_input("Washout between sessions (days; 0 for a demo)", min_value=0, value=60,
                              step=1, key="washout")
    seed = c2.number_input("Seed of the case orders", min_value=0, value=0, step=1, key="order_seed")
    if st.button("Create study", key="create_study", type="primary"):
        try:
            if ref == DEMO:
                cases = demo_cases()
            elif ref == _UPLOAD:
                if upload is None:
                    st.warning("Upload the cohort CSV first.")
                    return
                cases, ref = uploaded_cases(upload.getvalue(), upload.name), f"upload:{upload.name}"
            else:
                cases = prepared_cases(ref.split(":", 1)[1])
            store.create_study(admin, cases, cohort_ref=ref, washout_days=washout, seed=int(seed))
        except DLUMError as exc:
            show_error(exc)
            return
        st.rerun()


def _add_reader(store: ss.StudyStore, admin: ss.Admin) -> None:
    st.markdown("**Add a reader**")
    c1, c2, c3, c4 = st.columns(4)
    name = c1.text_input("Name", key="new_reader_name")
    modality = c2.selectbox("Reads", [US, MG], format_func=_MODALITY.get, key="new_reader_modality")
    experience = c3.selectbox("Experience", list(ss.EXPERIENCE), key="new_reader_experience")
    code = c4.text_input("Reader code", type="password", key="new_reader_code")
    if st.button("Add reader", key="add_reader"):
        try:
            store.add_reader(admin, name, modality, experience, code)
        except DLUMError as exc:
            st.error(str(exc))
            return
        st.success(f"Reader {name.strip()!r} added.")


def _analysis(store: ss.StudyStore, admin: ss.Admin) -> None:
    from dlum.study_analysis import mrmc_summary

    raw = store.reads_frame(admin)
    st.markdown("**Export**")
    c1, c2 = st.columns(2)
    c1.download_button("Reads CSV", raw.to_csv(index=False).encode(), "study_reads.csv", "text/csv",
                       key="download_reads", on_click="ignore", icon=":material/download:")
    c2.download_button("Cohort CSV", store.cohort_frame(admin).to_csv(index=False).encode(), "study_cohort.csv",
                       "text/csv", key="download_cohort", on_click="ignore", icon=":material/download:")
    st.caption("The reads CSV is a reads table of the Reader Study page (with extra columns: experience, "
               "confidence, position, times); with the cohort CSV it can be analysed there too.")
    if raw.empty:
        st.info("No reads yet.", icon=":material/info:")
        return
    try:
        joined = store.load_joined(admin)
    except DLUMError as exc:
        show_error(exc)
        return
    st.caption(rs.study_summary(joined))
    st.markdown("**Performance and biopsies without and with AI (Table 2 style)**")
    perf = rs.reader_performance(joined)
    table_with_download(rs.performance_display(perf), perf, "study_performance.csv", key="study_perf")
    changes = rs.session_changes(joined)
    if not changes.empty:
        table_with_download(rs.changes_display(changes), changes, "study_changes.csv", key="study_changes")
    st.markdown("**Explanation requests (Table 3 style)**")
    explain = rs.explanation_effects(joined)
    if explain.empty:
        st.info(rs.explanation_note(joined) or "No explanation requests yet.", icon=":material/info:")
    else:
        table_with_download(rs.explanation_display(explain), explain, "study_explanations.csv", key="study_explain")
    st.markdown("**Acceptance of DL-UM's suggestion (Fig. 5 style)**")
    from dlum.app.study_sections import acceptance_section

    acceptance_section(joined, key="study")
    st.markdown("**Agreement between readers (Table 4 style)**")
    kappas = rs.agreement(joined)
    table_with_download(rs.agreement_display(kappas), kappas, "study_kappa.csv", key="study_kappa")
    st.markdown("**MRMC: unaided vs aided AUC of the confidence ratings**")
    summary = mrmc_summary(joined)
    table_with_download(summary.round(4), summary, "study_mrmc.csv", key="study_mrmc",
                        caption="Obuchowski–Rockette with Hillis df, readers and cases random, jackknife "
                                "covariance; difference = aided − unaided; fully crossed cases only.")


def admin_view(store: ss.StudyStore) -> None:
    admin = _admin_sign_in(store)
    if admin is None:
        return
    study = store.study()
    if study is None:
        _create_study(store, admin)
        return
    st.markdown(f"Study on **{study['cohort_ref']}**: {study['cases']} cases, seed {study['order_seed']}, "
                f"created {study['created_at']}.")
    washout = st.number_input("Washout (days; 0 opens session 2 at once)", min_value=0.0,
                              value=float(study["washout_days"]), step=1.0, key="washout_edit")
    if washout != float(study["washout_days"]) and st.button("Save washout", key="save_washout"):
        store.set_washout(admin, washout)
        st.rerun()
    _add_reader(store, admin)
    readers = store.readers(admin)
    if not readers.empty:
        st.markdown("**Readers and their progress** (admin only)")
        st.dataframe(readers, hide_index=True, width="stretch")
    _analysis(store, admin)


def main() -> None:
    st.title("Reading Session")
    st.caption("Run your own reader study: each reader reads every case unaided, then after a washout "
               "with DL-UM's output, accepting or rejecting it and asking for the heatmap explanation "
               "when they wish (Xu et al., Breast Cancer Research 2025).")
    try:
        store = ss.default_store()
    except DLUMError as exc:
        show_error(exc)
        return
    reading, setup = st.tabs(["Reading", "Study set-up"])
    try:
        with reading:
            reader_view(store)
        with setup:
            admin_view(store)
    except DLUMError as exc:
        show_error(exc)
