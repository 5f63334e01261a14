"""DL-UM dashboard: the Home page, and the navigation over the pages in ``pages/``.

Run with ``make app`` (or ``streamlit run streamlit_app.py``). Pages live in ``pages/N_Name.py``
(listed in file order, titled from their names); all logic lives in ``dlum``: this file holds
layout and widgets only.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dlum.app import resources as res
from dlum.app.layout import page_config
from dlum.card import card_sections
from dlum.formatting import flat_rows

ROOT = Path(__file__).resolve().parent
PAGES = ROOT / "pages"

ABOUT = """
- **Two branches, one per modality.** The lesion's region of interest (ROI) on the ultrasound
  (US) image and on the mammogram (MG) is enlarged by 30% of its shortest side, cropped, resized
  to 224 × 224 and min–max normalised. Each crop goes through its own VGG19-style branch:
  five convolution blocks (2, 2, 4, 4, 4 layers; 64 → 512 filters).
- **Deep supervision.** After every block a small head (global average pooling → FC 64 → FC 1)
  predicts malignancy, so each branch gives five per-block probabilities; the block-5 head is
  the branch's own single-modality answer (as DL-U / DL-M).
- **Fusion.** The block-5 features of both branches (512 + 512) are concatenated and classified
  by a fusion head: the **DL-UM probability of malignancy**.
- **Why it matters.** When the BI-RADS categories of US and MG disagree (*discordant*: one says
  biopsy 4–5, the other follow-up 2–3), many biopsies turn out unnecessary; in the paper DL-UM
  helped radiologists most in exactly these cases.
- **Explanations.** Class activation maps (CAMs) of every block of both branches show which
  parts of each crop drove the output.
"""

DIAGRAM = r"""
digraph dlum {
  rankdir=TB; bgcolor="transparent"; nodesep=0.5; ranksep=0.3;
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=13,
        color="#9aa5b1", fillcolor="#f5f7fa", margin="0.15,0.08"];
  edge [color="#7b8794", fontname="Helvetica", fontsize=10];
  us [label="Ultrasound ROI\n224 × 224", fillcolor="#e3f0fb"];
  mg [label="Mammography ROI\n224 × 224", fillcolor="#fdf1e3"];
  ub [label="US branch\nVGG19: 5 blocks\n5 deep-supervision heads"];
  mb [label="MG branch\nVGG19: 5 blocks\n5 deep-supervision heads"];
  fuse [label="concatenate 512 + 512\nfusion head (FC 64 → FC 1)"];
  p [label="P(malignant)\nDL-UM", fillcolor="#e6f4ea"];
  us -> ub; mg -> mb; ub -> fuse [label=" GAP"]; mb -> fuse [label=" GAP"]; fuse -> p;
}
"""

#: (page file, title, icon, what it is for)
GUIDE = (
    ("1_Case_Review.py", "Case Review", ":material/radiology:",
     "Upload an ultrasound and a mammography image (PNG, JPEG or DICOM) or pick an example; drag "
     "a box around the lesion on each (on ultrasound the lesion finder suggests one to accept; on "
     "mammography a click on the lesion centre and a radius also work); set each modality's "
     "BI-RADS to see whether the case is concordant or discordant. DL-UM runs live: fused "
     "probability, branch outputs, the decision at the operating threshold, CAMs of every "
     "block, and a downloadable report. One image alone also works (that branch's output)."),
    ("2_Cohort_ROC.py", "Cohort ROC", ":material/monitoring:",
     "ROC curves of DL-UM, DL-U and DL-M on the checkpoint's test predictions or your own "
     "predictions CSV, for all / concordant / discordant cases, with DeLong tests, a threshold "
     "slider (sensitivity, specificity, PPV, NPV, biopsies) and calibration."),
    ("3_Reader_Study.py", "Reader Study", ":material/groups:",
     "The paper's reader-study tables recomputed, or your own reads CSV: per-reader accuracy and "
     "biopsy figures with and without AI, explanation effects, and weighted kappa."),
    ("4_Reading_Session.py", "Reading Session", ":material/assignment:", "Run your own reader study: readers read unaided, then after a washout with DL-UM; the admin sets it up and analyses it."),
)
CARD_SECTIONS = (
    ("identity", "Model"),
    ("data", "Training data"),
    ("pairing_rule", "Pairing rule"),
    ("operating_point", "Operating points"),
    ("results", "Held-out results"),
    ("training", "Training"),
    ("other", "Other card entries"),
)


def checkpoint_section() -> None:
    try:
        predictor = res.get_predictor()
    except Exception as exc:  # CheckpointError, SettingsError: a message, never a traceback
        res.show_error(exc)
        return
    if predictor is None:
        st.info(res.missing_checkpoint_message(), icon=":material/info:")
        st.caption(f"Device available to this app: {res.device_summary()}")
        return
    facts = res.model_facts(predictor)
    cols = st.columns(4)
    cols[0].metric("Checkpoint", facts["name"])
    cols[1].metric("Parameters", f"{facts['parameters'] / 1e6:.1f} M",
                   help=f"{facts['parameters']:,} parameters ({facts['arch']})")
    threshold = facts["threshold"]
    cols[2].metric("DL-UM threshold", "none" if threshold is None else f"{threshold:.3f}",
                   help="Fused P(malignant) at or above this value → biopsy recommended. Each "
                        "branch head and model has its own threshold (Operating points tab).")
    cols[3].metric("Device", "GPU" if facts["gpu"] else "CPU")
    st.caption(f"Device: {facts['device']}")

    sections = card_sections(predictor.card)
    present = [(key, title) for key, title in CARD_SECTIONS if sections.get(key)]
    tabs = st.tabs([title for _, title in present] + ["Full card (JSON)"])
    for tab, (key, _) in zip(tabs, present):
        value = sections[key]
        with tab:
            if key == "results":
                st.dataframe(pd.DataFrame(value), hide_index=True, width="stretch",
                             height=min(36 * (len(value) + 1) + 4, 640))
                st.caption("Held-out splits of the checkpoint's cohort; sensitivity and "
                           "specificity at each output's own operating threshold.")
            elif isinstance(value, dict):
                st.dataframe(pd.DataFrame(flat_rows(value)), hide_index=True, width="stretch")
            else:
                st.markdown(str(value))
    with tabs[-1]:
        st.json(predictor.card.to_dict(), expanded=False)
    if predictor.card.pseudo_paired:
        st.info("This checkpoint was trained and tested on **pseudo-pairs**: each ultrasound "
                "lesion is paired with a different woman's mammography lesion of the same "
                "pathology. Its metrics exercise the software; they are not clinical evidence.",
                icon=":material/info:")


def home() -> None:
    """The Home page."""
    st.title("DL-UM · ultrasound + mammography fusion")
    st.caption("An open implementation of DL-UM (Xu et al., *Breast Cancer Research* 2025): a deep "
               "network that reads the ultrasound and the mammography image of one breast lesion "
               "together and estimates the probability that it is malignant.")
    st.warning(res.DISCLAIMER, icon=":material/science:")

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("What DL-UM does")
        st.markdown(ABOUT)
        st.caption(f"Paper: {res.PAPER_CITATION} [{res.PAPER_URL}]({res.PAPER_URL})")
    with right:
        st.graphviz_chart(DIAGRAM, width="stretch")

    st.divider()
    st.subheader("Loaded checkpoint")
    checkpoint_section()

    st.divider()
    st.subheader("How to use each page")
    cols = st.columns(len(GUIDE))
    for col, (file, title, icon, text) in zip(cols, GUIDE):
        with col.container(border=True):
            if (PAGES / file).is_file():
                st.page_link(f"pages/{file}", label=title, icon=icon)
            else:
                st.markdown(f"**{title}**")
            st.caption(text)
    st.caption("Uploaded images stay in this app's memory and are never written to disk. "
               f"Upload limit: {res.upload_limit_mb()} MB per file.")


def pages() -> list:
    """Home, then every ``pages/N_Name.py`` in file order (title and URL from the file name)."""
    icons = {file: icon for file, _, icon, _ in GUIDE}
    out = [st.Page(home, title="Home", icon=":material/home:", default=True)]
    for path in sorted(PAGES.glob("[0-9]*_*.py")):
        out.append(st.Page(f"pages/{path.name}", icon=icons.get(path.name, ":material/article:")))
    return out


page_config("DL-UM")
st.navigation(pages()).run()
