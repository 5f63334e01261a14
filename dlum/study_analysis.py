"""Analysis of a study logged by the reading session (:mod:`dlum.study_store`).

Tables 2-4 come from :mod:`dlum.readers` unchanged (the store's joined table is the one the
Reader Study page analyses). Added here:

* a multi-reader multi-case comparison of unaided vs aided reading (:func:`mrmc_summary`),
  Obuchowski-Rockette with Hillis df (:func:`dlum.stats.mrmc`), readers and cases random, figure
  of merit = the empirical AUC of each reader's 0-100 confidence of malignancy;
* the readers' acceptance of DL-UM's suggestion, as Fig. 5 of Xu et al. (Breast Cancer Research
  2025: "73.1% of radiologists showed positive acceptance of DL-UM outputs"), per reader and for
  all cases / the concordant / the discordant subgroup (:func:`acceptance`);
* the study file a command opens (:func:`open_study_file`, :func:`study_file`), what to show
  when there is nothing to analyse yet (:func:`load_store_study`), the display tables and the
  text report of ``python -m dlum reader-study`` (:func:`analysis_report`).
"""
from __future__ import annotations

import re
import sqlite3
import warnings
from pathlib import Path

import pandas as pd

from dlum.constants import ALL, BENIGN, MALIGNANT, MG, SUBGROUPS, US
from dlum.errors import InputError, StudyError
from dlum.formatting import format_ci, format_number, format_p_value, format_pct_ci
from dlum.readers import plain_text, readers_in, text_section, text_table
from dlum.stats import proportion
from dlum.stats.mrmc import mrmc
from dlum.study_store import Admin, StudyStore
from dlum.tables import parse_flag

__all__ = [
    "MRMC_GROUPS",
    "ALL_READERS",
    "ACCEPTANCE_COLUMNS",
    "ACCEPTANCE_CAPTION",
    "MRMC_CAPTION",
    "mrmc_summary",
    "mrmc_note",
    "mrmc_display",
    "acceptance",
    "acceptance_note",
    "ai_call_note",
    "acceptance_display",
    "analysis_report",
    "study_file",
    "open_study_file",
    "load_store_study",
    "NO_STUDY_NOTE",
    "NO_READS_NOTE",
]

UNAIDED, AIDED = "unaided", "aided"
#: Reader groups of the MRMC summary: title -> modality (None = every reader).
MRMC_GROUPS = {"All readers": None, "US readers": US, "MG readers": MG}


def _crossed(part: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The fully crossed part (cases every reader read in both sessions) and a note on what was left out."""
    readers = sorted(part["reader"].unique())
    counts = part.groupby("case_id")[["reader", "session"]].apply(
        lambda g: len(set(zip(g["reader"], g["session"]))))
    full = counts.index[counts == 2 * len(readers)]
    dropped = part["case_id"].nunique() - len(full)
    note = (f"{dropped} case(s) not yet read by every reader in both sessions left out"
            if dropped else "")
    return part[part["case_id"].isin(set(full))], note


def mrmc_summary(joined: pd.DataFrame, conf_level: float = 0.95) -> pd.DataFrame:
    """Unaided vs aided AUC (confidence ratings), readers and cases random, per reader group.

    ``joined`` needs ``case_id, reader, modality, session, label, confidence``. One row per group:
    ``group, readers, cases, auc_unaided, auc_aided, difference`` (aided - unaided), ``ci_low,
    ci_high, df, p_value`` and ``note`` (why a group could not be analysed: fewer than two
    readers, one class of truth, no case read by everyone in both sessions, ...).
    """
    rows = []
    nan = float("nan")
    for title, modality in MRMC_GROUPS.items():
        part = joined if modality is None else joined[joined["modality"] == modality]
        part = part.dropna(subset=["confidence"])
        readers = part["reader"].nunique()
        row = {"group": title, "readers": readers, "cases": 0, "auc_unaided": nan, "auc_aided": nan,
               "difference": nan, "ci_low": nan, "ci_high": nan, "df": nan, "p_value": nan, "note": ""}
        if readers == 0:
            continue
        crossed, left_out = _crossed(part)
        row["cases"] = crossed["case_id"].nunique()
        if readers < 2:
            row["note"] = ("MRMC with random readers needs at least 2 readers; this group has 1 "
                           "(see the per-reader tables).")
        elif crossed.empty:
            row["note"] = "No case has been read by every reader in both sessions yet."
        else:
            reads = pd.DataFrame({"reader": crossed["reader"], "treatment": crossed["session"],
                                  "case": crossed["case_id"], "truth": crossed["label"].astype(int),
                                  "rating": crossed["confidence"].astype(float)})
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    res = mrmc(reads, metric="auc", cov="jackknife", readers="random", cases="random",
                               treatments=[AIDED, UNAIDED], conf_level=conf_level)
                row["note"] = "; ".join(str(w.message) for w in caught)
            except InputError as exc:
                row["note"] = f"Design too small for MRMC: {exc}"
            else:
                d = res.difference
                row.update(auc_unaided=res.treatment_means[UNAIDED], auc_aided=res.treatment_means[AIDED],
                           difference=d.estimate, ci_low=d.ci_low, ci_high=d.ci_high, df=d.df,
                           p_value=d.p_value)
        row["note"] = "; ".join(n for n in (row["note"], left_out) if n)
        rows.append(row)
    return pd.DataFrame(rows)


#: Caption of the MRMC table (page and report).
MRMC_CAPTION = ("Obuchowski–Rockette with Hillis df, readers and cases random, jackknife covariance; "
                "AUC of the 0-100 confidence of malignancy; difference = aided − unaided; only cases "
                "read by every reader of the group in both sessions.")


def mrmc_note(joined: pd.DataFrame) -> str | None:
    """Why :func:`mrmc_summary` cannot be computed for these reads (no 0-100 confidence ratings);
    None when it can."""
    if "confidence" not in joined.columns or joined["confidence"].isna().all():
        return ("MRMC needs each read's 0-100 confidence of malignancy (a `confidence` column, as the "
                "Reading Session records); these reads have none.")
    return None


def mrmc_display(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`mrmc_summary` as text: AUCs, difference [95% CI], Hillis df, p and the note."""
    if summary.empty:
        return summary
    return pd.DataFrame({
        "Readers": summary["group"],
        "Number of readers": summary["readers"],
        "Cases": summary["cases"],
        "AUC unaided": [format_number(v) for v in summary["auc_unaided"]],
        "AUC aided": [format_number(v) for v in summary["auc_aided"]],
        "Difference [95% CI]": [format_ci(d, lo, hi) for d, lo, hi in
                                zip(summary["difference"], summary["ci_low"], summary["ci_high"])],
        "df (Hillis)": [format_number(v, 1) for v in summary["df"]],
        "p": [format_p_value(v) for v in summary["p_value"]],
        "Note": summary["note"].fillna(""),
    })


# ------------------------------------------------------------------------------ Fig. 5 acceptance
ALL_READERS = "All readers"
#: Columns of :func:`acceptance` (rates are shares 0-1 with Wilson 95% CIs).
ACCEPTANCE_COLUMNS = (
    "reader", "modality", "subgroup", "reads", "accepted", "rejected", "accept_rate",
    "accept_rate_ci_low", "accept_rate_ci_high", "explanations",
    "ai_right", "accepted_when_right", "accept_rate_when_right", "accept_rate_when_right_ci_low",
    "accept_rate_when_right_ci_high",
    "ai_wrong", "accepted_when_wrong", "accept_rate_when_wrong", "accept_rate_when_wrong_ci_low",
    "accept_rate_when_wrong_ci_high",
    "correct_when_accepted", "accuracy_when_accepted", "accuracy_when_accepted_ci_low",
    "accuracy_when_accepted_ci_high",
    "correct_when_rejected", "accuracy_when_rejected", "accuracy_when_rejected_ci_low",
    "accuracy_when_rejected_ci_high", "note",
)
#: Caption of the acceptance table (page and report).
ACCEPTANCE_CAPTION = ("Aided reads where the reader accepted or rejected DL-UM's suggestion (Fig. 5 of "
                      "Xu et al. 2025: per reader, all cases and the concordant / discordant "
                      "subgroups); Wilson 95% CIs. DL-UM right = its call equals the pathology; a "
                      "correct final call = the reader's call equals the pathology.")
_AI_CALLS = {BENIGN: 0, "0": 0, MALIGNANT: 1, "1": 1}


def _flag(value) -> bool | None:
    """An accept / explanation flag as True / False / None (empty, NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        try:
            return parse_flag(value)
        except ValueError:
            return None
    return bool(value)


def _ai_call(value) -> float:
    """DL-UM's call as 1 (malignant) / 0 (benign) / NaN (no output shown: empty, None, NaN)."""
    key = value.strip().lower() if isinstance(value, str) else value
    return float(_AI_CALLS.get(key, float("nan"))) if isinstance(key, str) else (
        float(key) if key in (0, 1) else float("nan"))


def _decided(joined: pd.DataFrame) -> pd.DataFrame:
    """Aided reads with an accept / reject recorded, with ``accepted`` (bool)."""
    if "accepted_ai" not in joined.columns:
        return joined.iloc[0:0].assign(accepted=pd.Series(dtype=bool))
    aided = joined[joined["session"] == AIDED]
    flags = aided["accepted_ai"].map(_flag)
    keep = flags.notna()
    return aided[keep].assign(accepted=flags[keep].astype(bool))


def acceptance_note(joined: pd.DataFrame) -> str | None:
    """Why there is no acceptance table (Fig. 5) for these reads: no aided reads, or no accept /
    reject recorded; None when :func:`acceptance` has something to show."""
    if (joined["session"] == AIDED).sum() == 0:
        return ("No aided reads: DL-UM's suggestion is accepted or rejected in the aided session, and "
                "these reads have none.")
    if _decided(joined).empty:
        return ("No accept / reject recorded: the aided reads give no `accepted_ai` values (true/false), "
                "so the acceptance of DL-UM's suggestion (Fig. 5) cannot be computed.")
    return None


def ai_call_note(joined: pd.DataFrame) -> str | None:
    """Why acceptance when DL-UM was right vs wrong is not available (DL-UM's call not recorded);
    None when it is."""
    decided = _decided(joined)
    if "ai_call" not in joined.columns or decided.empty or decided["ai_call"].map(_ai_call).isna().all():
        return ("DL-UM's call shown to the reader (`ai_call`) is not recorded with these reads, so "
                "acceptance when DL-UM was right vs wrong is not available.")
    return None


def _share(prefix: str, x: int, n: int, level: float) -> dict:
    p = proportion(x, n, level=level)  # Wilson interval: statsmodels' proportion_confint
    return {prefix: p.estimate, f"{prefix}_ci_low": p.ci_low, f"{prefix}_ci_high": p.ci_high}


def acceptance(joined: pd.DataFrame, subgroups=SUBGROUPS, level: float = 0.95) -> pd.DataFrame:
    """Acceptance of DL-UM's suggestion, as Fig. 5 of Xu et al. 2025 (A: each radiologist, B: all
    cases, C: concordant, D: discordant subgroup), from the aided reads with ``accepted_ai`` given.

    One row per reader (display order of :func:`dlum.readers.readers_in`, after an
    :data:`ALL_READERS` row pooling every reader) and subgroup (``all`` = every case; the
    concordant / discordant reads as :mod:`dlum.readers` splits them): ``reads, accepted,
    rejected``, ``accept_rate`` with its Wilson CI and ``explanations`` (reads with the heatmap
    explanation requested). When the reads carry DL-UM's call (``ai_call``): ``ai_right`` (reads
    where DL-UM's call equals the pathology), ``accepted_when_right, accept_rate_when_right`` and
    the same when DL-UM was wrong; NaN otherwise (:func:`ai_call_note`). Then the final call's
    accuracy when accepting and when rejecting. A subgroup without reads gives NaN rates and a
    ``note``; empty (with :data:`ACCEPTANCE_COLUMNS`) when :func:`acceptance_note` says why.
    """
    if acceptance_note(joined) is not None:
        return pd.DataFrame(columns=list(ACCEPTANCE_COLUMNS))
    data = _decided(joined)
    with_ai = ai_call_note(joined) is None
    ai = data["ai_call"].map(_ai_call) if with_ai else pd.Series(float("nan"), index=data.index)
    correct = data["call"].astype(int) == data["label"].astype(int)
    if "requested_explanation" in data.columns:
        explained = data["requested_explanation"].map(_flag).fillna(False).astype(bool)
    else:
        explained = None
    data = data.assign(ai=ai, correct=correct)
    readers = readers_in(joined)
    groups = [(ALL_READERS, "", list(readers["reader"]))]
    groups += [(r, m, [r]) for r, m in readers.itertuples(index=False)]
    nan = float("nan")
    rows = []
    for name, modality, names in groups:
        for g in subgroups:
            sel = data[data["reader"].isin(names)]
            if g != ALL:
                sel = sel[sel["subgroup"] == g]
            n, acc = len(sel), int(sel["accepted"].sum())
            row = {"reader": name, "modality": modality, "subgroup": g, "reads": n, "accepted": acc,
                   "rejected": n - acc, **_share("accept_rate", acc, n, level),
                   "explanations": int(explained[sel.index].sum()) if explained is not None else nan}
            notes = []
            if n == 0:
                notes.append("no aided read with an accept / reject in this subgroup")
            if with_ai:
                right, wrong = sel[sel["ai"] == sel["label"]], sel[sel["ai"] == 1 - sel["label"]]
                for tag, part in (("right", right), ("wrong", wrong)):
                    k = int(part["accepted"].sum())
                    row.update({f"ai_{tag}": len(part), f"accepted_when_{tag}": k,
                                **_share(f"accept_rate_when_{tag}", k, len(part), level)})
                unknown = n - len(right) - len(wrong)
                if unknown:
                    notes.append(f"{unknown} read(s) without DL-UM's call left out of the right / wrong split")
            else:
                for tag in ("right", "wrong"):
                    row.update({f"ai_{tag}": nan, f"accepted_when_{tag}": nan, f"accept_rate_when_{tag}": nan,
                                f"accept_rate_when_{tag}_ci_low": nan, f"accept_rate_when_{tag}_ci_high": nan})
            for tag, part in (("accepted", sel[sel["accepted"]]), ("rejected", sel[~sel["accepted"]])):
                k = int(part["correct"].sum())
                row.update({f"correct_when_{tag}": k, **_share(f"accuracy_when_{tag}", k, len(part), level)})
            row["note"] = "; ".join(notes)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ACCEPTANCE_COLUMNS))


def _reader_label(reader: str, modality: str) -> str:
    return f"{reader} ({modality.upper()})" if modality else reader


def acceptance_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`acceptance` as text, ``x/n (rate% [95% CI])``; the DL-UM right / wrong columns only
    when DL-UM's call was recorded."""
    if table.empty:
        return table

    def cell(x, n, rate):
        return [f"{format_number(k, 0)}/{format_number(m, 0)} ({format_pct_ci(e, lo, hi)})"
                for k, m, e, lo, hi in zip(table[x], table[n], table[rate], table[f"{rate}_ci_low"],
                                           table[f"{rate}_ci_high"])]

    out = {
        "Reader": [_reader_label(r, m) for r, m in zip(table["reader"], table["modality"])],
        "Subgroup": table["subgroup"],
        "Accepted": cell("accepted", "reads", "accept_rate"),
        "Rejected": table["rejected"],
        "Explanations": [format_number(v, 0) for v in table["explanations"]],
    }
    if table["ai_right"].notna().any():
        out["Accepted when DL-UM right"] = cell("accepted_when_right", "ai_right", "accept_rate_when_right")
        out["Accepted when DL-UM wrong"] = cell("accepted_when_wrong", "ai_wrong", "accept_rate_when_wrong")
    out["Correct final call when accepting"] = cell("correct_when_accepted", "accepted", "accuracy_when_accepted")
    out["Correct final call when rejecting"] = cell("correct_when_rejected", "rejected", "accuracy_when_rejected")
    out["Note"] = table["note"].fillna("")
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------ text report
def analysis_report(joined: pd.DataFrame, *, markdown: bool = False, mrmc_section: bool | None = None) -> str:
    """The acceptance table (Fig. 5 style) and the MRMC table as text, after
    :func:`dlum.readers.study_report`'s Tables 2-4. ``mrmc_section``: None = only when the reads
    carry confidence ratings; True = always (a note when they do not)."""

    def text(note: str) -> str:
        return note if markdown else plain_text(note)

    parts = []
    note = acceptance_note(joined)
    if note is not None:
        body = text(note)
    else:
        body = text_table(acceptance_display(acceptance(joined)), markdown) + "\n" + ACCEPTANCE_CAPTION
        split = ai_call_note(joined)
        if split is not None:
            body += "\n" + text(split)
    parts.append(text_section("Acceptance of DL-UM's suggestion (Fig. 5 style)", body, markdown))
    note = mrmc_note(joined)
    if mrmc_section or (mrmc_section is None and note is None):
        body = text(note) if note is not None else (
            text_table(mrmc_display(mrmc_summary(joined)), markdown) + "\n" + MRMC_CAPTION)
        parts.append(text_section("MRMC: unaided vs aided", body, markdown))
    return "\n".join(parts)


# ------------------------------------------------------------------------------ the study file
_SQLITE_MAGIC = b"SQLite format 3\x00"


def study_file(name: str, environ=None) -> Path:
    """The file of the study named ``name``: ``<DLUM_STUDY_DIR>/<name>.sqlite`` (the dashboard's
    study is ``study``, i.e. :data:`dlum.study_store.STORE_FILE`)."""
    from dlum.settings import study_dir

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(name)):
        raise StudyError(f"Study name {name!r}: use letters, digits, '_', '-' or '.' (e.g. 'study'), "
                         "not a path; give a file with --store.")
    return study_dir(environ) / f"{name}.sqlite"


def open_study_file(path) -> StudyStore:
    """The study store in an existing file, or StudyError: no such file, not an SQLite file (read
    first, so that a wrong path is never written to), or a file without a study."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file.")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise StudyError(f"{path}: cannot be read ({err.strerror or err}).") from None
    if head != _SQLITE_MAGIC:
        raise StudyError(f"{path}: not a study file (not an SQLite database).")
    store = StudyStore(path)
    try:
        study = store.study()
    except sqlite3.DatabaseError as err:
        raise StudyError(f"{path}: not a study file ({err}).") from None
    if study is None:
        raise StudyError(f"{path}: no study has been set up in this file.")
    return store


NO_STUDY_NOTE = "No study has been set up yet: the study admin sets one up on the Reading Session page."
NO_READS_NOTE = "The study has no reads yet: readers read on the Reading Session page."


def load_store_study(store: StudyStore, admin: Admin) -> tuple[pd.DataFrame | None, str | None]:
    """``(joined, None)`` for :meth:`~dlum.study_store.StudyStore.load_joined`, or ``(None,
    message)`` when there is nothing to analyse yet (no study, no reads)."""
    if store.study() is None:
        return None, NO_STUDY_NOTE
    if store.reads_frame(admin).empty:
        return None, NO_READS_NOTE
    return store.load_joined(admin), None
