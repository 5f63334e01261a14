"""README figures of held-out predictions, as static SVG: reliability diagrams and ROC curves.

Observed fraction malignant (Wilson 95% interval) against mean predicted P(malignant) per bin,
one line per model (calibration plots: Niculescu-Mizil A, Caruana R, ICML 2005), each labelled
with its ECE over 10 equal-count bins and its Brier score, the figures the results table and
Cohort ROC give (Xu et al. 2025 ask for calibrated probabilities; ``dlum.stats.calibration``).

The ROC curves (one per model, AUC with DeLong's 95% CI in the legend, each model's operating
point at its card threshold marked) are the ones Cohort ROC draws, from the same functions
(:mod:`dlum.evaluation`). The bins and the scores come from the tested statistics
(:func:`dlum.stats.calibration_table`, :func:`dlum.stats.calibration_summary`); this module
only draws them. It draws with matplotlib
rather than plotly, which the dashboard uses, because plotly's static export needs a browser
engine and the README figures are written by ``python -m dlum report`` on any machine.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from dlum.constants import HELD_OUT_SPLITS, MODEL_COLORS
from dlum.errors import InputError
from dlum.evaluation import auc_table, legend_label, operating_point_table, roc_curves
from dlum.formatting import format_number
from dlum.predictions import model_columns, model_name
from dlum.stats import calibration_summary, calibration_table

__all__ = ["FIGURE_MODELS", "reliability_figure", "roc_figure", "figure_svg", "readme_svgs",
           "figure_folder", "write_figures"]

#: The models a README reliability diagram shows: the fusion and its two branches.
FIGURE_MODELS = ("p_dlum", "p_dlu", "p_dlm")
#: Equal-width bins of the diagram (the dashboard's default); the ECE uses equal-count bins.
DIAGRAM_BINS = 10
ECE_BINS = 10


def reliability_figure(predictions: pd.DataFrame, split: str | None = None, *,
                       title: str | None = None, bins: int = DIAGRAM_BINS) -> Figure:
    """The reliability diagram of one split's rows (all rows when ``split`` is None).

    Raises:
        InputError: no rows of that split, or no model column.
    """
    rows, columns = _rows_and_models(predictions, split, "a reliability diagram")
    y = rows["label"].to_numpy().astype(int)
    fig = Figure(figsize=(5.0, 4.4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9aa0a6", linewidth=1, label="perfect calibration")
    for column in columns:
        p = rows[column].to_numpy().astype(float)
        table = calibration_table(y, p, bins=bins)
        t = table[table["n"] > 0]
        score = calibration_summary(y, p, bins=ECE_BINS)
        name = model_name(column)
        ax.errorbar(t["mean_predicted"], t["observed"],
                    yerr=[t["observed"] - t["observed_ci_low"], t["observed_ci_high"] - t["observed"]],
                    color=MODEL_COLORS.get(name), marker="o", markersize=3.5, linewidth=1.4,
                    elinewidth=0.8, capsize=2, gid=column,
                    label=f"{name}: ECE {format_number(score.ece)}, "
                          f"Brier {format_number(score.brier)}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Mean predicted P(malignant)",
           ylabel="Observed fraction malignant",
           title=title or f"Reliability, {split or 'all'} rows (n = {len(rows)})")
    ax.title.set_fontsize(10)
    ax.grid(color="#e6e8eb", linewidth=0.6)
    ax.legend(loc="upper left", fontsize=7.5, frameon=False)
    return fig


def roc_figure(predictions: pd.DataFrame, split: str | None = None, *,
               thresholds: dict[str, float] | None = None, title: str | None = None) -> Figure:
    """ROC curves of one split's rows (all rows when ``split`` is None), DeLong CIs in the
    legend, and each model's (1 - specificity, sensitivity) at ``thresholds`` (column → value).

    Raises:
        InputError: no rows of that split, or no model column.
    """
    rows, columns = _rows_and_models(predictions, split, "ROC curves")
    models = {model_name(c): c for c in columns}
    curves = roc_curves(rows, models, "all")
    # the legend gives DeLong's CI only, so the cluster bootstrap is not run
    aucs = auc_table(rows, models, subgroups=["all"], cluster=False).set_index("model")
    marked = {}
    if thresholds:
        table = operating_point_table(rows, models, "all",
                                      {c: thresholds[c] for c in columns if c in thresholds})
        marked = {r["model"]: (1 - r["specificity"], r["sensitivity"]) for _, r in table.iterrows()}
    fig = Figure(figsize=(5.0, 4.4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9aa0a6", linewidth=1, label="chance")
    for name, curve in curves.items():
        color = MODEL_COLORS.get(name)
        ax.plot(1 - curve["specificity"], curve["sensitivity"], color=color, linewidth=1.5,
                gid=models[name], label=legend_label(name, aucs.loc[name]))
        if name in marked:
            ax.plot(*marked[name], marker="o", markersize=5, color=color, linestyle="none")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity", ylabel="Sensitivity",
           title=title or f"ROC curves, {split or 'all'} rows (n = {len(rows)})")
    ax.title.set_fontsize(10)
    ax.grid(color="#e6e8eb", linewidth=0.6)
    ax.legend(loc="lower right", fontsize=7.5, frameon=False,
              title="dots: each model at its threshold" if marked else None, title_fontsize=7.5)
    return fig


def _rows_and_models(predictions: pd.DataFrame, split: str | None, what: str
                     ) -> tuple[pd.DataFrame, list[str]]:
    rows = predictions if split is None else predictions[predictions["split"] == split]
    if rows.empty:
        raise InputError(f"no {split} rows to draw {what} of" if split
                         else f"no rows to draw {what} of")
    present = model_columns(rows)
    columns = [c for c in FIGURE_MODELS if c in present.values()] or list(present.values())
    if not columns:
        raise InputError("the predictions have no probability column to draw")
    return rows, columns


def figure_svg(fig: Figure) -> str:
    """A figure as SVG text, byte-identical from run to run (fixed ids, no date, text as text)."""
    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": "dlum", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def readme_svgs(predictions: pd.DataFrame, titles: dict[str, str] | None = None,
                thresholds: dict[str, float] | None = None) -> dict[str, str]:
    """``{"roc_<split>.svg": …, "reliability_<split>.svg": …}`` (SVG text) for each held-out split
    in ``predictions``; ``thresholds`` (column → value, the card's) marks the operating points."""
    if "split" not in predictions.columns:
        raise InputError("the predictions have no 'split' column (test / external)")
    splits = [s for s in HELD_OUT_SPLITS if (predictions["split"] == s).any()]
    if not splits:
        raise InputError("the predictions have no test or external rows to draw")
    texts = {}
    for split in splits:
        n = int((predictions["split"] == split).sum())
        title = f"{(titles or {}).get(split, split)} (n = {n})"
        texts[f"roc_{split}.svg"] = figure_svg(roc_figure(predictions, split, thresholds=thresholds,
                                                          title=title))
        texts[f"reliability_{split}.svg"] = figure_svg(reliability_figure(predictions, split, title=title))
    return texts


def figure_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a folder figures can go into (refused when it is a file)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder to write the figures into")
    return out


def write_figures(texts: dict[str, str], out_dir: str | Path) -> list[Path]:
    """Write ``{file name: text}`` into ``out_dir`` (made if absent); the paths written."""
    out = figure_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written
