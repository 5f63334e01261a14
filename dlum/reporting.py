"""From held-out predictions to a checkpoint's reported results (card metrics, README table).

The operating threshold is chosen on the VALIDATION split (never on the test split): the highest
threshold that still catches ``MIN_SENSITIVITY`` of the cancers, since a missed malignancy costs
more than an unnecessary biopsy. Test-split metrics follow the paper's evaluation (Xu et al. 2025):
AUC with DeLong 95% CI per subgroup, sensitivity and specificity with Wilson CIs, DeLong tests of
DL-UM against DL-U and DL-M.
"""
from __future__ import annotations

import re
import warnings
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.card import Card, Estimate, OperatingPoint, OutputMetrics, SubgroupMetrics
from dlum.constants import ALL, HELD_OUT_SPLITS, SUBGROUPS, VALIDATION
from dlum.errors import DLUMError
from dlum.formatting import format_number, format_p_value
from dlum.predictions import MIN_SENSITIVITY, MODEL_NAMES, model_columns, model_name
from dlum.stats import (
    binary_metrics,
    calibration_summary,
    cluster_bootstrap_auc_ci,
    delong_test,
    pair_clusters,
    roc_auc_ci,
    threshold_for_sensitivity,
)
from dlum.files import write_text_atomic

__all__ = [
    "MIN_SENSITIVITY",
    "choose_threshold",
    "assemble_predictions",
    "subgroup_metrics",
    "held_out_metrics",
    "results_markdown",
    "update_readme",
    "update_readme_block",
    "predict_example_markdown",
    "finalise_card",
    "validation_rows",
    "precision_agreement",
]

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"

#: Replicates of the cluster bootstrap of each AUC (seed 0: the card is reproducible).
CLUSTER_BOOT = 2000

#: How the README names each held-out split.
SPLIT_TITLES = {"test": "Test split", "external": "External split (a second centre)"}


def choose_threshold(y_true, scores, min_sensitivity: float = MIN_SENSITIVITY) -> float:
    """Highest threshold with sensitivity >= ``min_sensitivity`` (use validation data)."""
    return float(threshold_for_sensitivity(y_true, scores, min_sensitivity))


def assemble_predictions(dlum: pd.DataFrame, dlu: pd.DataFrame | None = None,
                         dlm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join DL-UM's held-out predictions with DL-U's and DL-M's on ``case_id``."""
    out = dlum.copy()
    for frame, column in ((dlu, "p_dlu"), (dlm, "p_dlm")):
        if frame is not None:
            out = out.merge(frame[["case_id", column]], on="case_id", how="left", validate="1:1")
    return out


def _subsets(predictions: pd.DataFrame):
    for name in SUBGROUPS:
        rows = predictions if name == ALL else predictions[predictions["subgroup"] == name]
        yield name, rows


def _estimate(value, low=None, high=None) -> Estimate:
    value = None if value is None or not np.isfinite(value) else float(value)
    ci = (float(low), float(high)) if value is not None and np.isfinite([low, high]).all() else None
    return Estimate(value, ci)


def subgroup_metrics(predictions: pd.DataFrame, thresholds: dict[str, float]
                     ) -> dict[str, SubgroupMetrics]:
    """Metrics of every model column per subgroup (all / concordant / discordant), each model at
    its own threshold: AUC with DeLong CI, sensitivity and specificity with Wilson CIs, DeLong
    p of DL-UM against every other model (Xu et al. 2025)."""
    models = list(model_columns(predictions).values())
    result: dict[str, SubgroupMetrics] = {}
    for name, rows in _subsets(predictions):
        y = rows["label"].to_numpy().astype(int)
        outputs: dict[str, OutputMetrics] = {}
        delong: dict[str, float | None] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clusters = pair_clusters(rows["patient_id"]) if "patient_id" in rows else None
            for column in models if len(rows) else ():
                auc = roc_auc_ci(y, rows[column])
                calls = (rows[column].to_numpy() >= thresholds[column]).astype(int)
                bm = binary_metrics(y, calls)
                cluster_ci = None
                if clusters is not None and np.isfinite(auc.auc):
                    boot = cluster_bootstrap_auc_ci(y, rows[column], clusters, n_boot=CLUSTER_BOOT,
                                                    seed=0)
                    cluster_ci = _estimate(boot.auc, boot.ci_low, boot.ci_high).ci
                cal = calibration_summary(y, rows[column], bins=10)
                outputs[column] = OutputMetrics(
                    _estimate(auc.auc, auc.ci_low, auc.ci_high),
                    _estimate(bm.sensitivity.estimate, bm.sensitivity.ci_low, bm.sensitivity.ci_high),
                    _estimate(bm.specificity.estimate, bm.specificity.ci_low, bm.specificity.ci_high),
                    auc_cluster_ci=cluster_ci,
                    ece=cal.ece if np.isfinite(cal.ece) else None,
                    brier=cal.brier if np.isfinite(cal.brier) else None)
            if "p_dlum" in rows and len(rows):
                for other in models:
                    if other in ("p_dlum", "p_us_head", "p_mg_head"):
                        continue
                    p = delong_test(y, rows["p_dlum"], rows[other]).p_value
                    delong[other] = float(p) if np.isfinite(p) else None
        result[name] = SubgroupMetrics(int(len(rows)), int(y.sum()), int(len(y) - y.sum()),
                                       outputs, delong)
    return result


def held_out_metrics(predictions: pd.DataFrame, thresholds: dict[str, float]
                     ) -> dict[str, dict[str, SubgroupMetrics]]:
    """:func:`subgroup_metrics` for each held-out split present (``test``, ``external``)."""
    return {split: subgroup_metrics(predictions[predictions["split"] == split].reset_index(drop=True),
                                    thresholds)
            for split in HELD_OUT_SPLITS if (predictions["split"] == split).any()}


def results_markdown(card: Card) -> str:
    """The README results tables, one section per held-out split, from a card's metrics."""
    if not card.metrics:
        raise DLUMError(f"the card of {card.name or 'this checkpoint'} has no held-out metrics "
                        "(run python -m dlum report --held-out)")
    op = card.operating_point
    cohort = "pseudo-paired public cohort" if card.pseudo_paired else "cohort"
    rule = (f"highest with validation sensitivity ≥ {op.min_sensitivity:.2f}"
            if op is not None and op.min_sensitivity is not None else "from the card")
    fused = format_number(card.threshold)
    sections = []
    for split, groups in card.metrics.items():
        lines = [
            f"**{SPLIT_TITLES.get(split, split)}** of the {cohort}, checkpoint `{card.name}`; each "
            f"model at its own threshold chosen on the validation split ({rule}; DL-UM: {fused}).",
            "",
            "| subgroup (n: malignant/benign) | model | AUC [DeLong 95% CI] | AUC cluster-bootstrap "
            "95% CI | sensitivity | specificity | ECE | Brier | DeLong p vs DL-UM |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for subgroup in SUBGROUPS:
            entry = groups.get(subgroup)
            if entry is None:
                continue
            label = f"{subgroup} ({entry.malignant}/{entry.benign})"
            ordered = [c for c in MODEL_NAMES if c in entry.outputs]
            ordered += [c for c in entry.outputs if c not in MODEL_NAMES]
            for column in ordered:
                m = entry.outputs[column]
                lo, hi = m.auc.ci or (None, None)
                p = format_p_value(entry.delong_p.get(column)) if column in entry.delong_p else ""
                clo, chi = m.auc_cluster_ci or (None, None)
                cluster = f"[{format_number(clo)}, {format_number(chi)}]" if m.auc_cluster_ci else ""
                lines.append(
                    f"| {label} | {model_name(column)} | {format_number(m.auc.value)} "
                    f"[{format_number(lo)}, {format_number(hi)}] | {cluster} | "
                    f"{format_number(m.sensitivity.value)} | {format_number(m.specificity.value)} "
                    f"| {format_number(m.ece)} | {format_number(m.brier)} | {p} |")
                label = ""
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def update_readme(readme: str | Path, markdown: str) -> bool:
    """Replace the results table between the results markers of ``readme``; True when it changed."""
    return update_readme_block(readme, markdown, README_START, README_END)


def validation_rows(held_out: pd.DataFrame, purpose: str) -> pd.DataFrame:
    """The validation rows of a held-out predictions table, which must hold both classes.

    Raises:
        DLUMError: no ``split`` column, or no validation rows with both classes.
    """
    if "split" not in held_out.columns:
        raise DLUMError("the held-out predictions have no 'split' column (validation / test / "
                        "external)")
    val = held_out[held_out["split"] == VALIDATION]
    if val["label"].nunique() != 2:
        raise DLUMError(f"the held-out predictions need validation rows with both benign and "
                        f"malignant cases {purpose}; found {len(val)} validation rows "
                        f"({int(val['label'].sum())} malignant)")
    return val


def finalise_card(card: Card, held_out: pd.DataFrame,
                  min_sensitivity: float = MIN_SENSITIVITY) -> tuple[Card, pd.DataFrame]:
    """Add the validation-chosen operating points and held-out metrics to a DL-UM card.

    ``held_out`` is a predictions table (:mod:`dlum.predictions`) with validation rows and test
    and/or external rows. Each model's threshold is the highest with validation sensitivity
    >= ``min_sensitivity`` — never chosen on a held-out split. Returns the card and the
    held-out rows for ``predictions.csv``.

    Raises:
        DLUMError: no ``split`` column, no validation rows with both classes, or no held-out rows
            (nothing is written then).
    """
    val = validation_rows(held_out, "to choose thresholds")
    held = held_out[held_out["split"].isin(HELD_OUT_SPLITS)].reset_index(drop=True)
    if held.empty:
        raise DLUMError("the held-out predictions have no test or external rows to report on")
    columns = list(model_columns(held_out).values())
    thresholds = {c: choose_threshold(val["label"], val[c], min_sensitivity) for c in columns}
    val_calls = (val["p_dlum"].to_numpy() >= thresholds["p_dlum"]).astype(int)
    val_bm = binary_metrics(val["label"].to_numpy().astype(int), val_calls)
    op = OperatingPoint(
        thresholds=thresholds,
        chosen_on=VALIDATION,
        rule=f"highest threshold with validation sensitivity >= {min_sensitivity:.2f}",
        min_sensitivity=min_sensitivity,
        validation_sensitivity=val_bm.sensitivity.estimate,
        validation_specificity=val_bm.specificity.estimate,
    )
    return card.with_results(op, held_out_metrics(held, thresholds)), held


def precision_agreement(reference: pd.DataFrame, other: pd.DataFrame, threshold: float,
                        column: str = "p_dlum") -> dict[str, Any]:
    """How far ``other``'s predictions (e.g. bf16) stray from ``reference``'s (fp32) on the same cases.

    Both are ``predictions.csv`` frames (``case_id``, ``label``, ``column``); they are joined on
    ``case_id`` and must hold the same cases. Returns the number of cases, the largest and median
    absolute difference in P(malignant), both AUCs with DeLong's paired test of their difference,
    how many decisions differ at ``threshold`` (biopsy when P >= threshold), and how close to the
    threshold the reference put those cases (``flipped_max_distance``).

    Raises InputError when the case sets differ or a column is missing.
    """
    from dlum.errors import InputError

    for name, frame in (("reference", reference), ("other", other)):
        missing = [c for c in ("case_id", "label", column) if c not in frame.columns]
        if missing:
            raise InputError(f"precision_agreement: {name} predictions lack {', '.join(missing)}")
    ref = reference[["case_id", "label", column]].astype({"case_id": str})
    new = other[["case_id", column]].astype({"case_id": str})
    if set(ref["case_id"]) != set(new["case_id"]) or len(ref) != len(new):
        raise InputError("precision_agreement: the two prediction sets are not of the same cases")
    both = ref.merge(new, on="case_id", suffixes=("_ref", "_new"), validate="1:1")
    a, b = both[f"{column}_ref"].to_numpy(float), both[f"{column}_new"].to_numpy(float)
    diff = np.abs(a - b)
    flipped = (a >= threshold) != (b >= threshold)
    test = delong_test(both["label"].astype(int), a, b)
    return {
        "n": int(len(both)),
        "column": column,
        "max_abs_diff": float(diff.max()),
        "median_abs_diff": float(np.median(diff)),
        "auc_reference": test.auc_a,
        "auc_other": test.auc_b,
        "delong_p": test.p_value,
        "threshold": float(threshold),
        "decisions_differ": int(flipped.sum()),
        "flipped_max_distance": float(np.abs(a[flipped] - threshold).max()) if flipped.any() else 0.0,
    }


#: The README's one-case example: the shipped phantom pair (``examples/``) through ``predict``.
PREDICT_START = "<!-- predict:start -->"
PREDICT_END = "<!-- predict:end -->"
PREDICT_EXAMPLE = [
    "predict", "--checkpoint", "checkpoints/dlum-public-v2", "--precision", "fp32",
    "--us", "examples/phantom-12-us.png", "--us-roi", "98,45,192,179",
    "--mg", "examples/phantom-12-mg.png", "--mg-roi", "49,88,141,186",
]


def predict_example_markdown(root: str | Path) -> str:
    """The README's ``predict`` example: the command and the JSON it prints, produced by running
    that very command (``dlum.cli.main``) from the repository root ``root``."""
    import contextlib
    import io
    import os

    from dlum.cli import main

    out = io.StringIO()
    previous = os.getcwd()
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(out):
            status = main(PREDICT_EXAMPLE)
    finally:
        os.chdir(previous)
    if status != 0:
        raise DLUMError(f"the README's predict example failed (exit {status})")
    args = PREDICT_EXAMPLE
    command = ("python -m dlum " + " ".join(args[:5]) + " \\\n    " + " ".join(args[5:9])
               + " \\\n    " + " ".join(args[9:]))
    return f"```bash\n{command}\n```\n\n```json\n{out.getvalue().strip()}\n```"


def update_readme_block(readme: str | Path, markdown: str, start: str, end: str) -> bool:
    """Replace the text between ``start`` and ``end`` in ``readme``; True when it changed."""
    path = Path(readme)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DLUMError(f"{path}: cannot be read ({exc})") from None
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise DLUMError(f"{path}: no {start} … {end} markers to put the text between")
    new = pattern.sub(lambda _: f"{start}\n{markdown}\n{end}", text)
    if new != text:
        write_text_atomic(path, new)
    return new != text
