"""Statistics behind every ROC curve, table and p-value of dlum, checked against R (pROC, irr, vcd).

- ``roc``: AUC with DeLong variance/CI, paired and unpaired DeLong tests, bootstrap CI, curve points,
  operating thresholds, calibration table.
- ``proportions``: Wilson / exact (Clopper–Pearson) / continuity-corrected intervals.
- ``decisions``: sensitivity, specificity, PPV, NPV, biopsy figures, McNemar and chi-square tests.
- ``agreement``: Cohen's kappa, unweighted or linear/quadratic weighted, over declared levels;
  Landis & Koch wording (``kappa_band``).
- ``cluster``: AUC CIs from a two-way cluster bootstrap (US patients x MG women) for pseudo-pairs.
- ``calibration``: expected calibration error (equal-count bins) and Brier score.
- ``decision_curve``: net benefit of biopsy by a model, treat-all and treat-none, and net biopsies
  avoided per 100 women (Vickers & Elkin 2006; checked against dcurves).
- ``mrmc``: multi-reader multi-case comparison of treatments (Obuchowski–Rockette with Hillis df, as
  R's MRMCaov): AUC, sensitivity or specificity; random or fixed readers or cases.
- ``subgroups``: one tidy table per rater and subgroup (all / concordant / discordant).
- ``tables``: the article's Tables 2-4 as data, Tables 2-3 recomputed from their counts, and each
  printed table beside its recomputation (``published_table2/3/4``).
"""
from __future__ import annotations

from dlum.stats._validate import DegenerateDataWarning, collect_notes
from dlum.stats.agreement import Kappa, agreement_table, kappa_band, weighted_kappa
from dlum.stats.calibration import (
    CALIBRATED_ECE,
    Calibration,
    calibration_summary,
    expected_calibration_error,
)
from dlum.stats.cluster import (
    ClusterBootstrapAuc,
    cluster_bootstrap_auc_ci,
    pair_clusters,
    weighted_auc,
)
from dlum.stats.decision_curve import (
    BIRADS_3_4_RISK,
    DECISION_THRESHOLDS,
    decision_curves,
    net_benefit,
    net_benefit_at,
    net_benefit_display,
)
from dlum.stats.decisions import (
    BinaryMetrics,
    BiopsyMetrics,
    Chi2Test,
    McNemarTest,
    binary_metrics,
    biopsy_metrics,
    chi2_test,
    mcnemar_test,
)
from dlum.stats.mrmc import (
    MRMCAnova,
    MRMCComponents,
    MRMCDifference,
    MRMCMeanCI,
    MRMCReaderDifference,
    MRMCReaderTreatmentCI,
    MRMCResult,
    mrmc,
)
from dlum.stats.proportions import Proportion, proportion, proportion_ci
from dlum.stats.roc import (
    BootstrapAuc,
    DelongTest,
    DelongUnpairedTest,
    RocAuc,
    bootstrap_auc_ci,
    calibration_table,
    delong_test,
    delong_test_unpaired,
    roc_auc_ci,
    roc_curve_points,
    threshold_for_sensitivity,
    youden_threshold,
)
from dlum.stats.subgroups import subgroup_comparisons, subgroup_summary
from dlum.stats.tables import (
    load_paper_tables,
    published_table2,
    published_table3,
    published_table4,
    recompute_table2,
    recompute_table3,
    reconstructed_calls,
    table2,
    table3,
    table4,
)

__all__ = [
    "CALIBRATED_ECE",
    "Calibration",
    "calibration_summary",
    "expected_calibration_error",
    "ClusterBootstrapAuc",
    "cluster_bootstrap_auc_ci",
    "pair_clusters",
    "weighted_auc",
    # issue 3 API
    "roc_auc_ci",
    "delong_test",
    "delong_test_unpaired",
    "proportion_ci",
    "binary_metrics",
    "mcnemar_test",
    "chi2_test",
    "weighted_kappa",
    "biopsy_metrics",
    "subgroup_summary",
    # decision curves (Vickers & Elkin 2006)
    "BIRADS_3_4_RISK",
    "DECISION_THRESHOLDS",
    "net_benefit",
    "decision_curves",
    "net_benefit_at",
    "net_benefit_display",
    # multi-reader multi-case analysis
    "mrmc",
    # curves, operating points and tables for the app and benchmarks
    "bootstrap_auc_ci",
    "roc_curve_points",
    "youden_threshold",
    "threshold_for_sensitivity",
    "calibration_table",
    "proportion",
    "agreement_table",
    "kappa_band",
    "subgroup_comparisons",
    # the article's tables
    "load_paper_tables",
    "table2",
    "table3",
    "table4",
    "recompute_table2",
    "recompute_table3",
    "reconstructed_calls",
    "published_table2",
    "published_table3",
    "published_table4",
    # result types and the warning category
    "RocAuc",
    "DelongTest",
    "DelongUnpairedTest",
    "BootstrapAuc",
    "Proportion",
    "BinaryMetrics",
    "BiopsyMetrics",
    "McNemarTest",
    "Chi2Test",
    "Kappa",
    "MRMCResult",
    "MRMCAnova",
    "MRMCComponents",
    "MRMCDifference",
    "MRMCMeanCI",
    "MRMCReaderDifference",
    "MRMCReaderTreatmentCI",
    "DegenerateDataWarning",
    "collect_notes",
]
