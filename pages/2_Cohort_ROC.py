"""Cohort ROC: how DL-UM, DL-U and DL-M separate benign from malignant lesions, by subgroup.

Layout and widgets only; every number comes from dlum.app.cohort (dlum.stats underneath).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dlum.app import cohort, figures
from dlum.app.demo_reads import synthetic_cohort, synthetic_predictions
from dlum.app.layout import table_with_download
from dlum.app.resources import REPO_ROOT, checkpoint_dir, show_error
from dlum.constants import SUBGROUPS, TEST
from dlum.errors import DLUMError

st.set_page_config(page_title="Cohort ROC · DL-UM", page_icon=":material/monitoring:", layout="wide")

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
def subgroup_analysis(frame: pd.DataFrame, models: dict, subgroup: str, threshold: float, bins: int):
    return (cohort.roc_curves(frame, models, subgroup),
            cohort.delong_table(frame, models, subgroup, threshold),
            cohort.operating_point_table(frame, models, subgroup, threshold),
            cohort.calibration_tables(frame, models, subgroup, bins))


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
card = cohort.read_card_json(ckpt)
default_path = cohort.checkpoint_predictions_path(ckpt)
sources = [CHECKPOINT, UPLOAD, SYNTHETIC] if default_path else [UPLOAD, SYNTHETIC]
if default_path is None:
    st.info(f"No `predictions.csv` in the checkpoint folder `{shown_path(ckpt)}` yet. Upload a predictions "
            f"CSV (columns `{', '.join(cohort.REQUIRED_COLUMNS)}`, optional "
            f"`{', '.join(cohort.OPTIONAL_COLUMNS)}`), or look at the synthetic example.",
            icon=":material/info:")
source = st.radio("Predictions", sources, horizontal=True, key="source")

declared_pseudo = False
if source == CHECKPOINT:
    data, name = default_path.read_bytes(), shown_path(default_path)
elif source == UPLOAD:
    upload = st.file_uploader("Predictions CSV", type=["csv"], key="predictions_upload",
                              help="One row per lesion: " + ", ".join(cohort.REQUIRED_COLUMNS)
                              + "; probabilities in [0, 1]; label benign/malignant or 0/1.")
    declared_pseudo = st.checkbox("This cohort is pseudo-paired (US and MG lesions from different women)",
                                  key="declared_pseudo")
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
               "(`dlum/app/demo_reads.py`) that show how the page works.", icon=":material/science:")
if cohort.is_pseudo_paired(card if source == CHECKPOINT else None, frame) or declared_pseudo:
    st.warning(cohort.PSEUDO_PAIRING_NOTE, icon=":material/warning:")

# ---------------------------------------------------------------------------------------- controls
models_all = cohort.models_in(frame)
splits = cohort.splits_in(frame)
c1, c2, c3 = st.columns([2, 2, 1])
default_models = [m for m in ("DL-UM", "DL-U", "DL-M") if m in models_all] or list(models_all)
chosen = c1.multiselect("Models", list(models_all), default=default_models, key="models")
threshold = c2.slider("Operating threshold on P(malignant)", 0.0, 1.0,
                      value=cohort.operating_threshold(card if source == CHECKPOINT else None),
                      step=0.005, format="%.3f", key="threshold",
                      help="A lesion is called malignant (biopsy recommended) when P(malignant) ≥ threshold. "
                           "Defaults to the checkpoint card's operating threshold, else 0.5.")
split = None
if len(splits) > 1:
    split = c3.selectbox("Split", splits, index=splits.index(TEST) if TEST in splits else 0, key="split")
if not chosen:
    st.info("Choose at least one model.", icon=":material/info:")
    st.stop()
models = {m: models_all[m] for m in chosen}
data_frame = cohort.select_split(frame, split)
if data_frame.empty:
    st.info("No cases in this split.", icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------------------------- AUC summary
st.subheader("AUC by subgroup")
aucs = auc_table(data_frame, models)
table_with_download(cohort.auc_display(aucs), aucs, "auc_by_subgroup.csv", key="auc",
                    caption="DeLong 95% CIs. A subgroup with one class has no AUC (n/a, with a note).")

# -------------------------------------------------------------------------------- per subgroup
counts = cohort.subgroup_counts(data_frame).set_index("subgroup")
subgroup = st.radio("Subgroup", list(SUBGROUPS), horizontal=True, key="subgroup",
                    format_func=lambda g: f"{g} (n={counts.loc[g, 'n']})")
bins = int(st.session_state.get("bins", 10))  # the slider lives in the calibration section below
curves, delong, operating, calibration = subgroup_analysis(data_frame, models, subgroup, threshold, bins)
auc_rows = aucs[aucs["subgroup"] == subgroup].set_index("model")
labels = {m: cohort.legend_label(m, auc_rows.loc[m]) for m in models}
points = {r["model"]: (r["sensitivity"], r["specificity"]) for _, r in operating.iterrows()}
for m in models:
    note = auc_rows.loc[m, "note"]
    if note:
        st.info(f"{m}, {subgroup}: {note}.", icon=":material/info:")

left, right = st.columns([3, 2], gap="large")
with left:
    st.plotly_chart(figures.roc_figure(curves, labels, points, title=f"ROC, {subgroup} lesions "
                                       f"(dots: threshold {threshold:.3f})"), key="roc")
with right:
    cm_model = st.selectbox("Confusion matrix of", list(models), key="cm_model")
    matrix = cohort.confusion_matrix(data_frame, models[cm_model], subgroup, threshold)
    st.plotly_chart(figures.confusion_figure(matrix, title=f"{cm_model} at threshold {threshold:.3f}"),
                    key="confusion")
    st.download_button("Download confusion matrix (CSV)", matrix.to_csv().encode(), f"confusion_{subgroup}.csv",
                       "text/csv", key="download_confusion", on_click="ignore", icon=":material/download:")

st.subheader(f"Pairwise DeLong tests, {subgroup} lesions")
if delong.empty:
    st.caption("Choose two or more models to compare their AUCs.")
else:
    table_with_download(cohort.delong_display(delong), delong, f"delong_{subgroup}.csv", key="delong",
                        caption="DeLong's test for two correlated ROC curves (the same cases).")

st.subheader(f"Decisions at threshold {threshold:.3f}, {subgroup} lesions")
table_with_download(cohort.metrics_display(operating), operating, f"operating_point_{subgroup}.csv",
                    key="metrics", caption="Wilson 95% CIs. Called malignant when P(malignant) ≥ threshold.")
st.markdown("**Biopsy recommendations**")
table_with_download(cohort.biopsy_display(operating), operating, f"biopsies_{subgroup}.csv", key="biopsy",
                    caption="Recommended = called malignant; unnecessary = recommended but benign at pathology "
                            "(share of recommended, as in the article); missed = malignant called benign.")
if not delong.empty:
    st.markdown("**Sensitivity and specificity compared at this threshold**")
    table_with_download(cohort.paired_tests_display(delong), delong, f"paired_tests_{subgroup}.csv",
                        key="paired")

st.subheader("Calibration")
st.slider("Bins", 5, 20, 10, key="bins")
st.plotly_chart(figures.calibration_figure(calibration, title=f"Calibration, {subgroup} lesions"),
                key="calibration")
calibration_long = pd.concat([t.assign(model=m) for m, t in calibration.items()], ignore_index=True)
calibration_long.insert(0, "model", calibration_long.pop("model"))
table_with_download(calibration_long.round(4), calibration_long, f"calibration_{subgroup}.csv", key="calib",
                    caption="Observed fraction malignant per bin of predicted probability, Wilson 95% CIs.",
                    height=250)

with st.expander("How these numbers are computed"):
    st.markdown(
        "- **AUC** and its 95% CI: DeLong's method (fast midrank algorithm), CI clipped to [0, 1] as "
        "pROC does; pairwise tests are DeLong's test for correlated ROC curves on the same cases.\n"
        "- **Sensitivity, specificity, PPV, NPV**: Wilson score intervals; paired comparisons by "
        "McNemar's test (continuity corrected) and, as in the article, the chi-square test.\n"
        "- **Subgroups**: concordant when the US and MG BI-RADS fall on the same side of 3/4, "
        "discordant otherwise; *all* also holds cases with an undetermined subgroup.\n"
        "- Source: `dlum.stats` (checked against R's pROC, irr and vcd).")
