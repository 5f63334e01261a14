"""Reader Study: the article's Tables 2-4 recomputed, and the same analysis of your own reads
(uploaded, or logged by the Reading Session), with the acceptance of DL-UM's suggestion (Fig. 5)
and the unaided vs aided MRMC comparison.

Layout and widgets only; every number comes from dlum.readers and dlum.study_analysis (dlum.stats
underneath).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dlum import readers as rs
from dlum import study_analysis as sa
from dlum import study_store as ss
from dlum.app import figures
from dlum.app.layout import page_config, table_with_download
from dlum.app.resources import show_error
from dlum.app.study_sections import acceptance_section, mrmc_section
from dlum.constants import SUBGROUPS
from dlum.errors import DLUMError
from dlum.stats import load_paper_tables

page_config("Reader Study · DL-UM")


@st.cache_data(show_spinner="Recomputing the published tables…")
def published():
    return rs.published_table2(), rs.published_table3(), rs.published_table4()


@st.cache_data(show_spinner=False, max_entries=8)
def load_study(reads: bytes | None, reads_name: str, cohort: bytes | None, cohort_name: str) -> pd.DataFrame:
    if reads is None:
        return rs.load_demo()
    return rs.join_reads(rs.read_reads(reads, name=reads_name), rs.read_study_cohort(cohort, name=cohort_name))


@st.cache_data(show_spinner="Analysing the reads…", max_entries=8)
def analyse(joined: pd.DataFrame, rating: str, weights: str | None):
    return (rs.reader_performance(joined), rs.session_changes(joined), rs.explanation_effects(joined),
            rs.agreement(joined, rating=rating, weights=weights))


@st.cache_data(show_spinner=False, max_entries=32)
def kappa_matrices(joined: pd.DataFrame, subgroup: str, rating: str, weights: str | None):
    return {f"{s} reads": rs.kappa_matrix(joined, s, subgroup, rating, weights) for s in rs.SESSIONS}


st.title("Reader Study")
st.caption("Radiologists reading each lesion without and with DL-UM: diagnostic and biopsy figures (Table 2), "
           "explanation requests (Table 3) and inter-reader agreement (Table 4) of Xu et al., "
           "Breast Cancer Research 2025, for all lesions and the concordant / discordant subgroups.")

published_tab, own_tab = st.tabs(["Published study", "Your study"])

# --------------------------------------------------------------------------------- published study
with published_tab:
    t2, t3, t4 = published()
    notes = load_paper_tables()
    st.markdown("Values as printed in the article beside the values **recomputed by `dlum.stats`** from the "
                "printed counts (external test set: 157 lesions, 78 malignant / 79 benign; readers R7 and R9 "
                "read ultrasound, R8 and R10 mammography; R7/R8 junior, R9/R10 senior).")
    st.subheader("Table 2 · Diagnostic performance and biopsy recommendations")
    table_with_download(rs.published_table2_display(t2), t2, "paper_table2_recomputed.csv", key="pub_t2",
                        caption="printed | recomputed. AUC of a dichotomous reader = (sensitivity + specificity) / 2. "
                                + notes["table2"]["intervals_note"])
    st.subheader("Table 3 · Explanation (heatmap) requests and their effect")
    table_with_download(rs.published_table3_display(t3), t3, "paper_table3_recomputed.csv", key="pub_t3",
                        caption="x/n: printed % | recomputed %. Unnecessary biopsies are counted among the reads "
                                "with an explanation request, as a share of all recommended biopsies; missed "
                                "malignancies as a share of all benign calls. p: chi-square test, without vs "
                                "with DL-UM, recomputed from the printed counts.")
    st.subheader("Table 4 · Inter-reader agreement (weighted kappa)")
    table_with_download(rs.published_table4_display(t4), t4, "paper_table4.csv", key="pub_t4",
                        caption="Printed values. Kappa needs case-level reads, which the article does not "
                                "publish, so it cannot be recomputed here: load reads in *Your study*. "
                                + notes["table4"]["comparisons_note"])
    forest = t4.rename(columns={"comparison_label": "label"}).assign(
        session=t4["assisted"].map({False: "unaided", True: "aided"}))
    st.plotly_chart(figures.kappa_forest(forest, label_column="label",
                                         title="Published kappa without (grey) and with (blue) DL-UM"),
                    key="pub_forest")

# -------------------------------------------------------------------------------------- your study
with own_tab:
    sources = {"upload": "Uploaded reads (or the demo)", "store": "Study store (Reading Session)"}
    source = st.radio("Reads from", list(sources), format_func=sources.get, horizontal=True, key="study_source")
    if source == "store":
        try:
            store = ss.default_store()
            if store.study() is None:
                st.info(sa.NO_STUDY_NOTE, icon=":material/info:")
                st.stop()
            admin = st.session_state.get("admin")
            if admin is None:
                st.markdown("The study's reads need the **admin code** (the one set on the Reading Session "
                            "page).")
                code = st.text_input("Admin code", type="password", key="store_admin_code")
                if not st.button("Sign in as admin", key="store_sign_in"):
                    st.stop()
                admin = st.session_state["admin"] = store.admin_sign_in(code)
            joined, note = sa.load_store_study(store, admin)
        except DLUMError as exc:
            show_error(exc)
            st.stop()
        if joined is None:
            st.info(note, icon=":material/info:")
            st.stop()
    else:
        st.markdown("Upload a **reads table** (one row per read: `case_id, reader, modality (us|mg), "
                    "session (unaided|aided), call (benign|malignant)`, optional `birads, accepted_ai, "
                    "requested_explanation, confidence` (0-100, for MRMC), `ai_call` (DL-UM's suggestion)) "
                    "and the **cohort table** of those cases (`case_id, label, us_birads, mg_birads`, or "
                    "`case_id, label, subgroup`; a full cohort CSV works too).")
        up1, up2 = st.columns(2)
        reads_file = up1.file_uploader("Reads CSV", type=["csv"], key="reads_upload")
        cohort_file = up2.file_uploader("Cohort CSV", type=["csv"], key="cohort_upload")
        up1.download_button("Demo reads (template)", rs.DEMO_READS.read_bytes(), "demo_reads.csv", "text/csv",
                            key="download_demo_reads", on_click="ignore", icon=":material/download:")
        up2.download_button("Demo cohort (template)", rs.DEMO_COHORT.read_bytes(), "demo_cohort.csv", "text/csv",
                            key="download_demo_cohort", on_click="ignore", icon=":material/download:")

        use_demo = reads_file is None or cohort_file is None
        if use_demo and (reads_file is not None or cohort_file is not None):
            st.info("Upload both the reads and the cohort table; the demo is shown meanwhile.",
                    icon=":material/info:")
        try:
            if use_demo:
                joined = load_study(None, "", None, "")
            else:
                joined = load_study(reads_file.getvalue(), reads_file.name, cohort_file.getvalue(),
                                    cohort_file.name)
        except DLUMError as exc:
            show_error(exc)
            st.stop()
        if use_demo:
            st.warning(rs.DEMO_NOTE, icon=":material/science:")

    st.caption(rs.study_summary(joined))
    has_birads = "birads" in joined.columns and joined["birads"].notna().any()
    o1, o2 = st.columns(2)
    rating = o1.radio("Agreement on", ["call", "birads"] if has_birads else ["call"], horizontal=True,
                      key="rating", format_func=lambda r: {"call": "benign / malignant call",
                                                           "birads": "BI-RADS (2-5)"}[r])
    weights = o2.radio("Kappa weights", ["linear", "quadratic", "unweighted"], horizontal=True, key="weights",
                       help="With two levels (benign / malignant calls) all three give Cohen's kappa.")
    weights_arg = None if weights == "unweighted" else weights
    perf, changes, explain, kappas = analyse(joined, rating, weights_arg)

    st.subheader("Performance and biopsies without and with AI (Table 2 style)")
    table_with_download(rs.performance_display(perf), perf, "reader_performance.csv", key="perf", height=360,
                        caption="AUC of a dichotomous reader = (sensitivity + specificity) / 2 (DeLong CI); "
                                "Wilson 95% CIs.")
    st.markdown("**Change with AI, per reader**")
    table_with_download(rs.changes_display(changes), changes, "reader_changes.csv", key="changes",
                        caption="p: chi-square (as in the article) / McNemar on the cases read in both sessions.")
    metric_names = {"unnecessary_biopsies": "unnecessary biopsies",
                    "unnecessary_rate": "unnecessary biopsies, share of recommended",
                    "recommended_biopsies": "recommended biopsies",
                    "missed_malignancies": "missed malignancies"}
    metric = st.selectbox("Bars of", list(metric_names), format_func=metric_names.get, key="bar_metric")
    st.plotly_chart(figures.biopsy_bars(perf, metric, metric_names[metric]), key="biopsy_bars")

    st.subheader("Explanation requests (Table 3 style)")
    if explain.empty:
        st.info(rs.explanation_note(joined) or "No explanation requests to show.", icon=":material/info:")
    else:
        table_with_download(rs.explanation_display(explain), explain, "explanation_effects.csv", key="explain",
                            caption="Among reads whose reader requested the explanation: unnecessary biopsies "
                                    "as a share of all recommended biopsies of the session, missed malignancies "
                                    "as a share of all benign calls (the article's denominators). p: chi-square.")

    st.subheader("Acceptance of DL-UM's suggestion (Fig. 5 style)")
    acceptance_section(joined, key="own")

    st.subheader("Agreement between readers (Table 4 style)")
    table_with_download(rs.agreement_display(kappas), kappas, "agreement_kappa.csv", key="kappa",
                        caption="Weighted kappa with 95% CI (Fleiss–Cohen–Everitt SE). US vs MG: the i-th US "
                                "reader paired with the i-th MG reader, pairs stacked.")
    heat_group = st.radio("Heatmap subgroup", list(SUBGROUPS), horizontal=True, key="heat_subgroup")
    st.plotly_chart(figures.kappa_heatmap(kappa_matrices(joined, heat_group, rating, weights_arg),
                                          title=f"Kappa between readers, {heat_group} lesions"), key="kappa_heatmap")

    st.subheader("MRMC: unaided vs aided")
    mrmc_section(joined, key="own")
