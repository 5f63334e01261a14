"""Cohort ROC: how DL-UM, DL-U and DL-M separate benign from malignant lesions, by subgroup.

Layout and widgets only; every number comes from dlum.evaluation (dlum.stats underneath).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dlum import disagreement
from dlum import evaluation as cohort
from dlum.app import figures
from dlum.app.layout import page_config, table_with_download
from dlum.app.resources import REPO_ROOT, checkpoint_dir, show_error
from dlum.card import read_card
from dlum.constants import SUBGROUPS, TEST
from dlum.data.demo_study import synthetic_cohort, synthetic_predictions
from dlum.errors import DLUMError
from dlum.predictions import SCHEMA, Threshold, thresholds_for
from dlum.stats import (BIRADS_3_4_RISK, collect_notes, decision_curves, net_benefit_at,
                        net_benefit_display)
from dlum.tables import csv_bytes

page_config("Cohort ROC · DL-UM")

CHECKPOINT, UPLOAD, SYNTHETIC = "Checkpoint predictions", "Upload a predictions CSV", "Synthetic example"


@st.cache_data(show_spinner=False, max_entries=16)
def load_predictions(data: bytes, name: str) -> pd.DataFrame:
    return cohort.read_predictions(data, name=name)


@st.cache_data(show_spinner=False)
def synthetic_csv() -> bytes:
    return synthetic_predictions(synthetic_cohort()).to_csv(index=False).encode()


@st.cache_data(show_spinner="Computing AUCs…", max_entries=32)
def auc_table(frame: pd.DataFrame, models: dict) -> pd.DataFrame:
    return cohort.auc_table(frame, models)


@st.cache_data(show_spinner=False, max_entries=64)
def calibration_metrics(frame: pd.DataFrame, models: dict, subgroup: str) -> pd.DataFrame:
    return cohort.calibration_metrics(frame, models, subgroup)


@st.cache_data(show_spinner=False, max_entries=64)
def subgroup_analysis(frame: pd.DataFrame, models: dict, subgroup: str, thresholds: dict, bins: int):
    return (cohort.roc_curves(frame, models, subgroup),
            cohort.delong_table(frame, models, subgroup, thresholds),
            cohort.operating_point_table(frame, models, subgroup, thresholds),
            cohort.calibration_tables(frame, models, subgroup, bins))


@st.cache_data(show_spinner=False, max_entries=64)
def decision_analysis(frame: pd.DataFrame, models: dict, subgroup: str, thresholds: dict):
    notes: list[str] = []
    with collect_notes(notes):
        curves = decision_curves(frame, models, subgroup)
        read_off = net_benefit_at(frame, models, subgroup, thresholds)
    return curves, read_off, notes


@st.cache_data(show_spinner=False, max_entries=64)
def branch_analysis(frame: pd.DataFrame, thresholds: dict, subgroup: str):
    return (disagreement.disagreement_table(frame, thresholds, subgroup),
            disagreement.disagreement_crosstab(frame, thresholds, subgroup))


def shown_path(path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


st.title("Cohort ROC")
st.caption("ROC curves, AUCs with DeLong 95% CIs, paired DeLong tests and the decisions at an operating "
           "threshold, for all lesions and the concordant / discordant BI-RADS subgroups "
           "(Xu et al., Breast Cancer Research 2025).")

# ------------------------------------------------------------------------------------------ source
ckpt = checkpoint_dir()
card = None
try:
    card = read_card(ckpt) if (ckpt / "card.json").is_file() else None
except DLUMError as exc:
    show_error(exc, key="card")
default_path = cohort.checkpoint_predictions_path(ckpt)
sources = [CHECKPOINT, UPLOAD, SYNTHETIC] if default_path else [UPLOAD, SYNTHETIC]
if default_path is None:
    st.info(f"No `predictions.csv` in the checkpoint folder `{shown_path(ckpt)}` yet. Upload a "
            "predictions CSV, or look at the synthetic example.", icon=":material/info:")
source = st.radio("Predictions", sources, horizontal=True, key="source")

declared_pseudo = False
if source == CHECKPOINT:
    data, name = default_path.read_bytes(), shown_path(default_path)
elif source == UPLOAD:
    upload = st.file_uploader("Predictions CSV", type=["csv"], key="predictions_upload",
                              help="One row per lesion; any number of p_<model> columns. "
                                   "The format is below and in the README.")
    declared_pseudo = st.checkbox("This cohort is pseudo-paired (US and MG lesions from different women)",
                                  key="declared_pseudo")
    with st.expander("Predictions CSV format"):
        st.markdown(SCHEMA.markdown())
        st.caption("Every further `p_<name>` column is another model to compare. Thresholds: "
                   "the loaded checkpoint's for its own outputs (p_dlum, p_us_head, p_mg_head, "
                   "p_dlu, p_dlm), else chosen on the table's validation rows (split = "
                   "validation) for sensitivity ≥ 0.90, else 0.5 — or set by you below.")
    if upload is None:
        st.stop()
    data, name = upload.getvalue(), upload.name
else:
    data, name = synthetic_csv(), "synthetic example"

try:
    frame = load_predictions(data, name)
except DLUMError as exc:
    show_error(exc)
    st.stop()

if source == SYNTHETIC:
    st.warning("**Synthetic example, not model output**: a seeded cohort and seeded probabilities "
               "(`dlum/data/demo_study.py`) that show how the page works.", icon=":material/science:")
if cohort.is_pseudo_paired(card if source == CHECKPOINT else None, frame) or declared_pseudo:
    st.warning(cohort.PSEUDO_PAIRING_NOTE, icon=":material/warning:")

# ---------------------------------------------------------------------------------------- controls
models_all = cohort.models_in(frame)
splits = cohort.splits_in(frame)
c1, c3 = st.columns([4, 1])
default_models = [m for m in ("DL-UM", "DL-U", "DL-M") if m in models_all] or list(models_all)
chosen = c1.multiselect("Models", list(models_all), default=default_models, key="models")
split = None
if len(splits) > 1:
    split = c3.selectbox("Split", splits, index=splits.index(TEST) if TEST in splits else 0, key="split")
if not chosen:
    st.info("Choose at least one model.", icon=":material/info:")
    st.stop()
models = {m: models_all[m] for m in chosen}
# The card's thresholds apply to the checkpoint's own predictions; another table gets the card's
# only for dlum's output columns it shares, else its validation rows' or 0.5 (thresholds_for).
base = thresholds_for(frame, card if source != SYNTHETIC else None)
key_of = f"{source}:{name}"
if st.session_state.get("thresholds_of") != key_of:  # another table: start from its own thresholds
    for k in [k for k in st.session_state if str(k).startswith("threshold_")]:
        del st.session_state[k]
    st.session_state["thresholds_of"] = key_of
    st.session_state["user_thresholds"] = {}
user = st.session_state["user_thresholds"]
thresholds: dict[str, Threshold] = {c: (Threshold(user[c], "user") if c in user else base[c])
                                    for c in models.values()}
data_frame = cohort.select_split(frame, split)
if data_frame.empty:
    st.info("No cases in this split.", icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------------------------- AUC summary
st.subheader("AUC by subgroup")
aucs = auc_table(data_frame, models)
table_with_download(cohort.auc_display(aucs), aucs, "auc_by_subgroup.csv", key="auc",
                    caption="DeLong 95% CIs; with a patient_id column also a cluster-bootstrap 95% CI "
                            "(\u201cclusters\u201d: US patients and MG women resampled). Pairs that "
                            "share a woman are not independent, so for pseudo-pairs the cluster "
                            "interval is the honest one. A subgroup with one class has no AUC.")

# -------------------------------------------------------------------------------- per subgroup
counts = cohort.subgroup_counts(data_frame).set_index("subgroup")
subgroup = st.radio("Subgroup", list(SUBGROUPS), horizontal=True, key="subgroup",
                    format_func=lambda g: f"{g} (n={counts.loc[g, 'n']})")
bins = int(st.session_state.get("bins", 10))  # the slider lives in the calibration section below

left, right = st.columns([3, 2], gap="large")
with right:
    cm_model = st.selectbox("Model for the confusion matrix and the threshold", list(models),
                            key="cm_model")
    column = models[cm_model]
    current = thresholds[column]
    value = st.slider(f"Operating threshold of {cm_model}", 0.0, 1.0, value=float(current.value),
                      step=0.005, format="%.3f", key=f"threshold_{column}",
                      help="A lesion is called malignant (biopsy recommended) when P(malignant) ≥ "
                           "threshold. Each model keeps its own threshold.")
    if abs(value - base[column].value) > 1e-12:
        user[column] = value
        thresholds[column] = Threshold(value, "user")
    elif column in user:
        user.pop(column)
        thresholds[column] = base[column]
    st.caption(f"{cm_model}: {thresholds[column].describe()}.")
    if st.button("Reset every threshold", key="reset_thresholds", disabled=not user):
        user.clear()
        for k in [k for k in st.session_state if str(k).startswith("threshold_")]:
            del st.session_state[k]
        st.rerun()

numbers = {c: t.value for c, t in thresholds.items()}
curves, delong, operating, calibration = subgroup_analysis(data_frame, models, subgroup, numbers, bins)
auc_rows = aucs[aucs["subgroup"] == subgroup].set_index("model")
labels = {m: cohort.legend_label(m, auc_rows.loc[m]) for m in models}
points = {r["model"]: (r["sensitivity"], r["specificity"]) for _, r in operating.iterrows()}
for m in models:
    note = auc_rows.loc[m, "note"]
    if note:
        st.info(f"{m}, {subgroup}: {note}.", icon=":material/info:")

with left:
    st.plotly_chart(figures.roc_figure(curves, labels, points, title=f"ROC, {subgroup} lesions "
                                       "(dots: each model at its own threshold)"), key="roc")
with right:
    matrix = cohort.confusion_matrix(data_frame, column, subgroup, numbers[column])
    st.plotly_chart(figures.confusion_figure(matrix, title=f"{cm_model} at threshold "
                                             f"{numbers[column]:.3f}"), key="confusion")
    st.download_button("Download confusion matrix (CSV)", csv_bytes(matrix, index=True), f"confusion_{subgroup}.csv",
                       "text/csv", key="download_confusion", on_click="ignore", icon=":material/download:")

st.markdown("**Thresholds used**")
st.dataframe(pd.DataFrame({"Model": list(models),
                           "Threshold": [f"{numbers[c]:.3f}" for c in models.values()],
                           "From": [thresholds[c].describe() for c in models.values()]}),
             hide_index=True, width="stretch")

st.subheader(f"Pairwise DeLong tests, {subgroup} lesions")
if delong.empty:
    st.caption("Choose two or more models to compare their AUCs.")
else:
    table_with_download(cohort.delong_display(delong), delong, f"delong_{subgroup}.csv", key="delong",
                        caption="DeLong's test for two correlated ROC curves (the same cases).")

st.subheader(f"Decisions at each model's threshold, {subgroup} lesions")
table_with_download(cohort.metrics_display(operating), operating, f"operating_point_{subgroup}.csv",
                    key="metrics", caption="Wilson 95% CIs. Called malignant when P(malignant) ≥ the model's threshold.")
st.markdown("**Biopsy recommendations**")
table_with_download(cohort.biopsy_display(operating), operating, f"biopsies_{subgroup}.csv", key="biopsy",
                    caption="Recommended = called malignant; unnecessary = recommended but benign at pathology "
                            "(share of recommended, as in the article); missed = malignant called benign.")
if not delong.empty:
    st.markdown("**Sensitivity and specificity compared, each model at its own threshold**")
    table_with_download(cohort.paired_tests_display(delong), delong, f"paired_tests_{subgroup}.csv",
                        key="paired")

st.subheader("Calibration")
calibrated = calibration_metrics(data_frame, models, subgroup)
table_with_download(cohort.calibration_display(calibrated), calibrated,
                    f"calibration_summary_{subgroup}.csv", key="calib_summary",
                    caption="Expected calibration error over 10 equal-count bins and Brier score. "
                            "A model is called calibrated only when its ECE is at most 0.05; "
                            "otherwise read its P(malignant) as a score, not a risk.")
st.slider("Bins", 5, 20, 10, key="bins")
st.plotly_chart(figures.calibration_figure(calibration, title=f"Calibration, {subgroup} lesions"),
                key="calibration")
calibration_long = pd.concat([t.assign(model=m) for m, t in calibration.items()], ignore_index=True)
calibration_long.insert(0, "model", calibration_long.pop("model"))
table_with_download(calibration_long.round(4), calibration_long, f"calibration_{subgroup}.csv", key="calib",
                    caption="Observed fraction malignant per bin of predicted probability, Wilson 95% CIs.",
                    height=250)

# ------------------------------------------------------------------------------ decision curves
st.subheader(f"Decision curves, {subgroup} lesions")
curves_nb, read_off, nb_notes = decision_analysis(data_frame, models, subgroup, numbers)
for note in nb_notes:
    st.info(note, icon=":material/info:")
st.plotly_chart(figures.decision_curve_figure(
    curves_nb, read_off, BIRADS_3_4_RISK, title=f"Net benefit of biopsy, {subgroup} lesions "
    "(dots: each model at its own threshold)",
    note="no decision curve: one class only" if curves_nb.empty else None), key="decision_curves")
table_with_download(net_benefit_display(read_off), read_off, f"net_benefit_{subgroup}.csv",
                    key="net_benefit",
                    caption="Net benefit = TP/n − FP/n · pt/(1 − pt) at threshold probability pt "
                            "(Vickers & Elkin 2006); biopsies avoided per 100 women = net reduction "
                            "in biopsies against biopsying all, at no loss of cancers found. 2% is "
                            "the BI-RADS 3/4 boundary (category 3: risk of malignancy ≤ 2%). A model "
                            "is useful where its curve lies above both biopsy-all and biopsy-none.")

# ------------------------------------------------------------------------ branch disagreement
st.subheader(f"When the branches disagree, {subgroup} lesions")
if not disagreement.has_branches(data_frame):
    st.info("This table has no DL-UM branch outputs (`p_dlum`, `p_us_head`, `p_mg_head`): "
            "branch disagreement cannot be shown.", icon=":material/info:")
else:
    every = {c: (user[c] if c in user else t.value) for c, t in base.items()}
    branch_rows, branch_cross = branch_analysis(data_frame, every, subgroup)
    table_with_download(disagreement.disagreement_display(branch_rows), branch_rows,
                        f"branch_disagreement_{subgroup}.csv", key="disagreement",
                        caption="Branches disagree: DL-UM's US head and MG head fall on opposite "
                                "sides of their own thresholds (US "
                                f"{every[disagreement.BRANCH_COLUMNS[0]]:.3f}, MG "
                                f"{every[disagreement.BRANCH_COLUMNS[1]]:.3f}) — the model's "
                                "analogue of discordant BI-RADS. DL-UM at its threshold "
                                f"{every[disagreement.FUSED_COLUMN]:.3f}; DeLong and Wilson 95% CIs.")
    table_with_download(disagreement.crosstab_display(branch_cross), branch_cross,
                        f"branches_by_birads_{subgroup}.csv", key="disagreement_crosstab",
                        caption="Branch agreement against BI-RADS concordance: cases (malignant).")

# ---------------------------------------------------------------- certain and uncertain cases
# (the checkpoint's own predictions only, when scripts/tta_cohort.py wrote its uncertainty.csv)
if source == CHECKPOINT and (ckpt / "uncertainty.csv").is_file() and "p_dlum" in frame.columns:
    from dlum.uncertainty_tables import (certainty_caption, certainty_display, certainty_table,
                                         read_uncertainty)

    st.subheader("Certain and uncertain cases")
    try:
        tta_intervals = read_uncertainty(ckpt / "uncertainty.csv",
                                         name=shown_path(ckpt / "uncertainty.csv"))
        certainty = certainty_table(frame, tta_intervals, {"p_dlum": base["p_dlum"]})
    except DLUMError as exc:
        show_error(exc, key="uncertainty")
    else:
        table_with_download(certainty_display(certainty), certainty, "certain_uncertain_test.csv",
                            key="certainty", caption=certainty_caption(
                                certainty, tta_intervals, card.name if card else ckpt.name))

with st.expander("How these numbers are computed"):
    st.markdown(
        "- **AUC** and its 95% CI: DeLong's method (fast midrank algorithm), CI clipped to [0, 1] as "
        "pROC does; pairwise tests are DeLong's test for correlated ROC curves on the same cases.\n"
        "- **Sensitivity, specificity, PPV, NPV**: Wilson score intervals; paired comparisons by "
        "McNemar's test (continuity corrected) and, as in the article, the chi-square test.\n"
        "- **Subgroups**: concordant when the US and MG BI-RADS fall on the same side of 3/4, "
        "discordant otherwise; *all* also holds cases with an undetermined subgroup.\n"
        "- **Decision curves**: net benefit of biopsy when P ≥ the threshold probability "
        "(Vickers & Elkin 2006), checked against the dcurves package; **branches disagree** when "
        "DL-UM's US and MG heads fall on opposite sides of their own thresholds.\n"
        "- Source: `dlum.stats` (checked against R's pROC, irr and vcd).")
