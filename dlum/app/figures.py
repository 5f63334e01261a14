"""Plotly figures of the dashboard's analysis pages (ROC, calibration, confusion matrix, kappa, biopsies).

Each builder takes tables computed by ``dlum.evaluation`` / ``dlum.readers`` (themselves
from ``dlum.stats``) and only draws them: no statistics here.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dlum.constants import MODEL_COLORS, SUBGROUPS

__all__ = [
    "MODEL_COLORS",
    "SESSION_COLORS",
    "roc_figure",
    "calibration_figure",
    "confusion_figure",
    "kappa_heatmap",
    "kappa_forest",
    "biopsy_bars",
    "acceptance_bars",
]

SESSION_COLORS = {"unaided": "#9aa5b1", "aided": "#1f4e9c"}
_FALLBACK = ["#6a4c93", "#c0392b", "#16a085", "#8e44ad", "#2c3e50"]

_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=50, b=50),
               font=dict(size=13), legend=dict(bgcolor="rgba(255,255,255,0.85)"))


def _style(fig: go.Figure, **overrides) -> None:
    """The common look, with per-figure overrides (e.g. legend placement)."""
    fig.update_layout(**{**_LAYOUT, **overrides})


def _color(name: str, i: int) -> str:
    return MODEL_COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def roc_figure(curves: Mapping[str, pd.DataFrame], labels: Mapping[str, str] | None = None,
               operating_points: Mapping[str, tuple[float, float]] | None = None,
               title: str = "ROC curves") -> go.Figure:
    """ROC curves (1 - specificity vs sensitivity), one per model, legend labels with AUC [CI];
    ``operating_points`` marks (sensitivity, specificity) at the chosen threshold."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Chance",
                             line=dict(color="#c8ccd0", dash="dot"), hoverinfo="skip", showlegend=False))
    for i, (name, curve) in enumerate(curves.items()):
        label = (labels or {}).get(name, name)
        color = _color(name, i)
        dash = "dash" if "branch" in name else "solid"
        if curve.empty:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=label,
                                     line=dict(color=color, dash=dash)))
            continue
        thr = curve["threshold"].to_numpy(dtype=float)
        custom = np.column_stack([np.where(np.isfinite(thr), thr, np.nan), curve["specificity"]])
        fig.add_trace(go.Scatter(
            x=curve["fpr"], y=curve["tpr"], mode="lines", name=label,
            line=dict(color=color, width=2.5, dash=dash), customdata=custom,
            hovertemplate=(f"{name}<br>threshold %{{customdata[0]:.3f}}<br>sensitivity %{{y:.3f}}"
                           "<br>specificity %{customdata[1]:.3f}<extra></extra>"),
        ))
        if operating_points and name in operating_points:
            sens, spec = operating_points[name]
            if np.isfinite(sens) and np.isfinite(spec):
                fig.add_trace(go.Scatter(x=[1 - spec], y=[sens], mode="markers", showlegend=False,
                                         marker=dict(color=color, size=11, symbol="circle",
                                                     line=dict(color="white", width=2)),
                                         hovertemplate=f"{name} at threshold<br>sensitivity {sens:.3f}"
                                                       f"<br>specificity {spec:.3f}<extra></extra>"))
    _style(fig, title=title, height=480,
                      legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom",
                                  bgcolor="rgba(255,255,255,0.85)"))
    fig.update_xaxes(title="1 − specificity", range=[-0.01, 1.01], constrain="domain")
    fig.update_yaxes(title="Sensitivity", range=[-0.01, 1.01], scaleanchor="x", scaleratio=1)
    return fig


def calibration_figure(tables: Mapping[str, pd.DataFrame], title: str = "Calibration") -> go.Figure:
    """Observed fraction malignant (Wilson CI) against mean predicted probability per bin."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Perfect calibration",
                             line=dict(color="#c8ccd0", dash="dot"), hoverinfo="skip"))
    for i, (name, table) in enumerate(tables.items()):
        t = table[table["n"] > 0]
        fig.add_trace(go.Scatter(
            x=t["mean_predicted"], y=t["observed"], mode="lines+markers", name=name,
            line=dict(color=_color(name, i), dash="dash" if "branch" in name else "solid"),
            error_y=dict(type="data", symmetric=False, array=t["observed_ci_high"] - t["observed"],
                         arrayminus=t["observed"] - t["observed_ci_low"], thickness=1),
            customdata=t["n"], hovertemplate=(f"{name}<br>mean predicted %{{x:.2f}}<br>observed %{{y:.2f}}"
                                              "<br>n = %{customdata}<extra></extra>")))
    _style(fig, title=title, height=420)
    fig.update_xaxes(title="Mean predicted P(malignant)", range=[0, 1])
    fig.update_yaxes(title="Observed fraction malignant", range=[0, 1.02])
    return fig


def confusion_figure(matrix: pd.DataFrame, title: str = "Confusion matrix") -> go.Figure:
    """A 2x2 count table as an annotated heatmap (rows = pathology, columns = call)."""
    z = matrix.to_numpy()
    fig = go.Figure(go.Heatmap(
        z=z, x=list(matrix.columns), y=list(matrix.index), colorscale="Blues", showscale=False,
        text=z, texttemplate="%{text}", textfont=dict(size=20),
        hovertemplate="%{y} / %{x}: %{z}<extra></extra>"))
    _style(fig, title=title, height=320)
    fig.update_yaxes(autorange="reversed", title=matrix.index.name)
    fig.update_xaxes(title=matrix.columns.name, side="bottom", tickangle=0)
    return fig


def kappa_heatmap(matrices: Mapping[str, pd.DataFrame], title: str = "Agreement between readers (kappa)"
                  ) -> go.Figure:
    """Reader x reader kappa heatmaps side by side (e.g. unaided, aided), on one -1..1 colour scale."""
    names = list(matrices)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.12)
    for i, name in enumerate(names, start=1):
        m = matrices[name]
        z = m.to_numpy(dtype=float)
        text = np.where(np.isfinite(z), np.char.mod("%.2f", np.nan_to_num(z)), "n/a")
        fig.add_trace(go.Heatmap(z=z, x=list(m.columns), y=list(m.index), zmin=-1, zmax=1,
                                 colorscale="RdBu", showscale=i == len(names), text=text,
                                 texttemplate="%{text}", colorbar=dict(title="kappa"),
                                 hovertemplate="%{y} vs %{x}: %{text}<extra></extra>"), row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    _style(fig, title=title, height=420)
    return fig


def kappa_forest(table: pd.DataFrame, label_column: str = "comparison", session_column: str = "session",
                 title: str = "Weighted kappa with 95% CI") -> go.Figure:
    """Kappa with CI per comparison, one marker colour per session (unaided / aided), one panel per
    subgroup present."""
    groups = [g for g in SUBGROUPS if g in set(table["subgroup"])]
    fig = make_subplots(rows=1, cols=max(len(groups), 1), subplot_titles=groups, shared_yaxes=True,
                        horizontal_spacing=0.04)
    for col, g in enumerate(groups, start=1):
        part = table[table["subgroup"] == g]
        for session, color in SESSION_COLORS.items():
            s = part[part[session_column] == session]
            if s.empty:
                continue
            fig.add_trace(go.Scatter(
                x=s["kappa"], y=s[label_column], mode="markers", name=session, legendgroup=session,
                showlegend=col == 1, marker=dict(color=color, size=10),
                error_x=dict(type="data", symmetric=False, array=s["ci_high"] - s["kappa"],
                             arrayminus=s["kappa"] - s["ci_low"], thickness=1.2),
                hovertemplate="%{y}<br>kappa %{x:.3f}<extra>" + session + "</extra>"), row=1, col=col)
        fig.add_vline(x=0, line=dict(color="#c8ccd0", dash="dot"), row=1, col=col)
        fig.update_xaxes(range=[-1, 1], title="kappa", row=1, col=col)
    _style(fig, title=title, height=140 + 45 * max(table[label_column].nunique(), 1))
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return fig


def biopsy_bars(table: pd.DataFrame, metric: str = "unnecessary_biopsies", metric_label: str | None = None,
                title: str | None = None) -> go.Figure:
    """Bars of a biopsy figure per reader, unaided vs aided, one panel per subgroup (from
    ``dlum.readers.reader_performance``)."""
    groups = [g for g in SUBGROUPS if g in set(table["subgroup"])]
    fig = make_subplots(rows=1, cols=max(len(groups), 1), subplot_titles=groups, shared_yaxes=True,
                        horizontal_spacing=0.04)
    percent = metric.endswith("_rate")
    for col, g in enumerate(groups, start=1):
        part = table[table["subgroup"] == g]
        for session, color in SESSION_COLORS.items():
            s = part[part["session"] == session]
            if s.empty:
                continue
            y = s[metric] * (100 if percent else 1)
            fig.add_trace(go.Bar(x=s["reader"], y=y, name=session, legendgroup=session, showlegend=col == 1,
                                 marker_color=color,
                                 text=[f"{v:.1f}%" if percent else f"{v:.0f}" for v in y],
                                 textposition="outside", cliponaxis=False,
                                 hovertemplate="%{x}: %{y}<extra>" + session + "</extra>"), row=1, col=col)
    label = metric_label or metric.replace("_", " ")
    _style(fig, barmode="group", title=title or label.capitalize() + " by reader",
                      height=420, legend=dict(orientation="h", y=-0.2))
    fig.update_yaxes(title=label + (" (%)" if percent else ""), row=1, col=1)
    return fig


#: Accepted / rejected DL-UM suggestions (Fig. 5 style bars).
ACCEPTANCE_COLORS = {"accepted": "#1f4e9c", "rejected": "#e07a1f"}


def acceptance_bars(table: pd.DataFrame, title: str = "Acceptance of DL-UM's suggestion") -> go.Figure:
    """Stacked horizontal bars, accepted vs rejected share of each reader's aided reads, one panel
    per subgroup, as Fig. 5 of Xu et al. 2025 (from ``dlum.study_analysis.acceptance``; a reader
    without reads in a subgroup has no bar)."""
    groups = [g for g in SUBGROUPS if g in set(table["subgroup"])]
    fig = make_subplots(rows=1, cols=max(len(groups), 1), subplot_titles=groups, shared_yaxes=True,
                        horizontal_spacing=0.04)
    for col, g in enumerate(groups, start=1):
        part = table[table["subgroup"] == g]
        labels = [f"{r} ({m.upper()})" if m else r for r, m in zip(part["reader"], part["modality"])]
        reads = part["reads"].to_numpy(dtype=float)
        for kind, color in ACCEPTANCE_COLORS.items():
            count = part[kind].to_numpy(dtype=float)
            share = np.divide(100 * count, reads, out=np.full_like(count, np.nan), where=reads > 0)
            fig.add_trace(go.Bar(
                y=labels, x=share, orientation="h", name=kind, legendgroup=kind, showlegend=col == 1,
                marker_color=color, customdata=np.column_stack([count, reads]),
                text=[f"{v:.0f}%" if np.isfinite(v) else "" for v in share], textposition="inside",
                hovertemplate="%{y}: %{customdata[0]:.0f} of %{customdata[1]:.0f} reads (%{x:.1f}%)"
                              f"<extra>{kind}, {g}</extra>"), row=1, col=col)
        fig.update_xaxes(range=[0, 100], title="% of aided reads", row=1, col=col)
    n_rows = table["reader"].nunique() if len(table) else 1
    _style(fig, barmode="stack", title=title, height=160 + 40 * n_rows, legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(autorange="reversed")
    return fig


# ------------------------------------------------------------------------------- decision curves
__all__ += ["decision_curve_figure"]


def decision_curve_figure(curves: pd.DataFrame, operating: pd.DataFrame | None = None,
                          risk: float | None = 0.02, title: str = "Decision curves",
                          note: str | None = None) -> go.Figure:
    """Net benefit against threshold probability (Vickers & Elkin 2006), one line per model,
    with treat-all and treat-none; a dashed marker at ``risk`` (2%: the BI-RADS 3/4 boundary).

    ``curves`` is ``dlum.stats.decision_curves``' long table; ``operating`` (from
    ``dlum.stats.net_benefit_at``) adds a dot at each model's operating threshold. The y-axis runs
    from a little below 0 to a little above the largest net benefit (treat-all plunges to −∞ as
    the threshold nears 1). An empty table draws the axes and ``note``.
    """
    fig = go.Figure()
    names = list(dict.fromkeys(curves["model"])) if len(curves) else []
    if names:
        first = curves[curves["model"] == names[0]]
        fig.add_trace(go.Scatter(x=first["threshold"], y=first["treat_all"], mode="lines",
                                 name="Biopsy all", line=dict(color="#9aa5b1", width=1.5),
                                 hovertemplate="biopsy all<br>threshold %{x:.3f}<br>net benefit "
                                               "%{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=first["threshold"], y=first["treat_none"], mode="lines",
                                 name="Biopsy none", line=dict(color="#2c3e50", width=1.2),
                                 hoverinfo="skip"))
    for i, name in enumerate(names):
        part = curves[curves["model"] == name]
        color = _color(name, i)
        fig.add_trace(go.Scatter(
            x=part["threshold"], y=part["net_benefit"], mode="lines", name=name,
            line=dict(color=color, width=2.5, dash="dash" if "branch" in name else "solid"),
            customdata=part["biopsies_avoided_per_100"],
            hovertemplate=(f"{name}<br>threshold %{{x:.3f}}<br>net benefit %{{y:.4f}}"
                           "<br>biopsies avoided per 100: %{customdata:.1f}<extra></extra>")))
        if operating is not None and name in set(operating["model"]):
            row = operating[operating["model"] == name].iloc[0]
            if np.isfinite(row["net_benefit"]):
                fig.add_trace(go.Scatter(
                    x=[row["threshold"]], y=[row["net_benefit"]], mode="markers", showlegend=False,
                    marker=dict(color=color, size=11, line=dict(color="white", width=2)),
                    hovertemplate=(f"{name} at its threshold {row['threshold']:.3f}<br>net benefit "
                                   f"{row['net_benefit']:.4f}<extra></extra>")))
    values = (curves[["net_benefit", "treat_all"]].to_numpy(dtype=float).ravel()
              if names else np.array([]))
    values = values[np.isfinite(values)]
    top = float(values.max()) if values.size and values.max() > 0 else 0.1
    if risk is not None:
        fig.add_vline(x=risk, line=dict(color="#c0392b", dash="dash", width=1.5))
        fig.add_annotation(x=risk, y=top * 1.08, text=f"BI-RADS 3/4 ({100 * risk:g}%)",
                           showarrow=False, xanchor="left", yanchor="top", xshift=4,
                           font=dict(color="#c0392b", size=12))
    if note:
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", text=note, showarrow=False,
                           font=dict(size=14, color="#7f8c9a"))
    _style(fig, title=title, height=460, legend=dict(x=0.98, y=0.98, xanchor="right",
                                                     yanchor="top", bgcolor="rgba(255,255,255,0.85)"))
    fig.update_xaxes(title="Threshold probability of malignancy (biopsy when P ≥ threshold)",
                     range=[0, 1])
    fig.update_yaxes(title="Net benefit", range=[-max(0.02, 0.25 * top), top * 1.1])
    return fig
