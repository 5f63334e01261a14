"""DEMO data: a synthetic cohort, synthetic model outputs and demo reader-study reads.

Nothing here is study data. The paper's reader study (Xu et al., Breast Cancer Research 2025,
DL-UM: four readers, 157 external lesions, each read unaided and, after a washout, with DL-UM) has
no public case-level reads, and the project's real (pseudo-paired) cohort and checkpoint predictions
are not available yet. So the shipped demo files ``demo/demo_cohort.csv`` and ``demo/demo_reads.csv``
(beside this module; used by the dashboard and ``python -m dlum reader-study --demo``) are built from:

1. :func:`synthetic_cohort` — seeded lesions with a pathology and a US and an MG BI-RADS drawn from
   per-pathology category probabilities (:data:`US_BIRADS_GIVEN_LABEL`, roughly the published
   BI-RADS mix of the BUS-BRA ultrasound set; :data:`MG_BIRADS_GIVEN_LABEL`, chosen by hand), the two
   modalities independent given pathology; ``subgroup`` follows from the two BI-RADS.
2. :func:`synthetic_predictions` — seeded model probabilities (``p_dlum``, ``p_dlu``, ``p_dlm`` and the
   two branch heads) from latent per-modality evidence (documented in the function).
3. :func:`build_demo_reads` — the reads, by a fixed rule that also works on a real cohort and real
   ``predictions.csv`` (rebuild the demo with them once they exist):

   * unaided, each reader gives their modality's reported BI-RADS, moved one category up or down
     with the reader's ``shift`` probability (clipped to 2-5); call = malignant when BI-RADS >= 4;
   * aided, the reader sees DL-UM's call (``p_dlum >= threshold``). Where it agrees with their
     unaided call they keep it (``accepted_ai`` true) and request the heatmap explanation with
     probability ``explain_when_agree``. Where it disagrees they request the explanation with
     probability ``explain_when_disagree`` and accept the model's call with probability
     ``accept_after_explanation`` (explanation seen) or ``accept_without_explanation``; an accepted
     call moves the BI-RADS to 4 (now malignant) or 3 (now benign).

   Every random draw comes from ``numpy.random.default_rng([seed, reader index])``: the same inputs
   and seed give the same file.

Rebuild the shipped files with ``python -m dlum.data.demo_study`` (``--help`` for options).
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import BENIGN, BIRADS_LEVELS, DEFAULT_THRESHOLD, MALIGNANT, MG, US
from dlum.data.manifest import derive_subgroup, parse_birads, parse_label

__all__ = [
    "DEMO_DIR",
    "DEMO_READS",
    "DEMO_COHORT",
    "DEMO_SEED",
    "DEMO_READERS",
    "US_BIRADS_GIVEN_LABEL",
    "MG_BIRADS_GIVEN_LABEL",
    "synthetic_cohort",
    "synthetic_predictions",
    "build_demo_reads",
    "write_demo_files",
]

#: Where the shipped demo files live (package data).
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_READS = DEMO_DIR / "demo_reads.csv"
DEMO_COHORT = DEMO_DIR / "demo_cohort.csv"
DEMO_SEED = 2025

#: Demo readers: name -> (modality, probability that their BI-RADS differs by one category from
#: the reported one): reader 2 of each modality strays from the report twice as often as reader 1.
DEMO_READERS: dict[str, tuple[str, float]] = {
    "us_reader_1": (US, 0.15),
    "us_reader_2": (US, 0.30),
    "mg_reader_1": (MG, 0.15),
    "mg_reader_2": (MG, 0.30),
}

#: P(BI-RADS 2, 3, 4, 5 | pathology) for the synthetic US assessment (about BUS-BRA's published mix).
US_BIRADS_GIVEN_LABEL = {0: (0.43, 0.34, 0.22, 0.01), 1: (0.02, 0.05, 0.68, 0.25)}
#: P(BI-RADS 2, 3, 4, 5 | pathology) for the synthetic MG assessment (chosen by hand for the demo).
MG_BIRADS_GIVEN_LABEL = {0: (0.30, 0.35, 0.30, 0.05), 1: (0.03, 0.10, 0.42, 0.45)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def synthetic_cohort(n_malignant: int = 78, n_benign: int = 79, seed: int = DEMO_SEED) -> pd.DataFrame:
    """A seeded synthetic cohort: ``case_id, label (benign|malignant), us_birads, mg_birads,
    subgroup``; sizes default to the paper's external set (78 malignant, 79 benign).

    >>> df = synthetic_cohort(5, 5, seed=1)
    >>> len(df), sorted(df["label"].unique())
    (10, ['benign', 'malignant'])
    """
    rng = np.random.default_rng(seed)
    y = np.array([1] * n_malignant + [0] * n_benign)
    rng.shuffle(y)
    levels = np.array(BIRADS_LEVELS)
    us = np.array([rng.choice(levels, p=US_BIRADS_GIVEN_LABEL[int(v)]) for v in y])
    mg = np.array([rng.choice(levels, p=MG_BIRADS_GIVEN_LABEL[int(v)]) for v in y])
    return pd.DataFrame({
        "case_id": [f"demo_{i + 1:03d}" for i in range(len(y))],
        "label": np.where(y == 1, MALIGNANT, BENIGN),
        "us_birads": us,
        "mg_birads": mg,
        "subgroup": derive_subgroup(us, mg),
    })


def synthetic_predictions(cohort: pd.DataFrame, seed: int = DEMO_SEED) -> pd.DataFrame:
    """Seeded synthetic model outputs for a cohort (NOT model output): a predictions table with
    ``case_id, label, subgroup, p_dlum, p_us_head, p_mg_head, p_dlu, p_dlm``.

    Rule: per case, latent US and MG evidence e_us ~ N(0.5 s, 1), e_mg ~ N(0.45 s, 1) with
    s = +1 malignant / -1 benign, each nudged by 0.05 x (its BI-RADS - 3.5); the single-modality
    models see one of them (p_dlu = sigmoid(e_us + N(0, 0.3)), p_dlm likewise), the fused model both
    (p_dlum = sigmoid(e_us + e_mg)), the branch heads their own one. With the default cohort this gives
    AUCs of about 0.90 (fused), 0.83 (US) and 0.81 (MG).
    """
    rng = np.random.default_rng([seed, 1])
    y = np.array([parse_label(v) for v in cohort["label"]])
    s = 2.0 * y - 1.0
    us_b = np.array([parse_birads(v) or 3.5 for v in cohort["us_birads"]], dtype=float)
    mg_b = np.array([parse_birads(v) or 3.5 for v in cohort["mg_birads"]], dtype=float)
    e_us = rng.normal(0.5 * s, 1.0) + 0.05 * (us_b - 3.5)
    e_mg = rng.normal(0.45 * s, 1.0) + 0.05 * (mg_b - 3.5)
    subgroup = cohort["subgroup"] if "subgroup" in cohort else derive_subgroup(cohort["us_birads"],
                                                                               cohort["mg_birads"])
    out = pd.DataFrame({
        "case_id": cohort["case_id"].to_numpy(),
        "label": np.where(y == 1, MALIGNANT, BENIGN),
        "subgroup": np.asarray(subgroup),
        "p_dlum": _sigmoid(e_us + e_mg),
        "p_us_head": _sigmoid(e_us + rng.normal(0, 0.2, len(y))),
        "p_mg_head": _sigmoid(e_mg + rng.normal(0, 0.2, len(y))),
        "p_dlu": _sigmoid(e_us + rng.normal(0, 0.3, len(y))),
        "p_dlm": _sigmoid(e_mg + rng.normal(0, 0.3, len(y))),
        "split": "test",
    })
    prob = [c for c in out.columns if c.startswith("p_")]
    out[prob] = out[prob].round(4)
    return out


def build_demo_reads(
    cohort: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    readers: Mapping[str, tuple[str, float]] | None = None,
    explain_when_agree: float = 0.05,
    explain_when_disagree: float = 0.6,
    accept_after_explanation: float = 0.85,
    accept_without_explanation: float = 0.5,
    seed: int = DEMO_SEED,
) -> pd.DataFrame:
    """Demo reads (unaided and aided) by the documented rule of this module's docstring.

    Args:
        cohort: ``case_id`` with the reported ``us_birads`` and ``mg_birads``.
        predictions: ``case_id`` and ``p_dlum`` (the checkpoint's predictions or synthetic ones).
        threshold: DL-UM's operating threshold (called malignant when ``p_dlum >= threshold``).
        readers: name -> (modality, shift probability); default :data:`DEMO_READERS`.
        seed: base seed; reader i draws from ``default_rng([seed, i])``.

    Returns:
        ``case_id, reader, modality, session, call, birads, accepted_ai, requested_explanation``; a
        reader reads only cases that have their modality's BI-RADS. ``accepted_ai`` and
        ``requested_explanation`` are empty on unaided reads.
    """
    readers = dict(DEMO_READERS if readers is None else readers)
    merged = cohort[["case_id", "us_birads", "mg_birads"]].merge(
        predictions[["case_id", "p_dlum"]], on="case_id", how="inner", validate="one_to_one")
    model_call = (merged["p_dlum"].to_numpy(dtype=float) >= threshold).astype(int)
    rows = []
    for index, (reader, (modality, shift)) in enumerate(readers.items()):
        rng = np.random.default_rng([seed, index])
        reported = [parse_birads(v) for v in merged[f"{modality}_birads"]]
        n = len(merged)
        # draw every random number up front, in a fixed order, so the result does not depend on
        # which branch a case takes
        moves = rng.random(n) < shift
        steps = rng.choice([-1, 1], size=n)
        u_explain = rng.random(n)
        u_accept = rng.random(n)
        for i in range(n):
            if reported[i] not in BIRADS_LEVELS:
                continue
            case = merged["case_id"].iat[i]
            birads = int(np.clip(reported[i] + (steps[i] if moves[i] else 0), 2, 5))
            call = int(birads >= 4)
            rows.append((case, reader, modality, "unaided", call, birads, None, None))
            ai = int(model_call[i])
            if call == ai:
                explained = bool(u_explain[i] < explain_when_agree)
                aided_call, aided_birads, accepted = call, birads, True
            else:
                explained = bool(u_explain[i] < explain_when_disagree)
                p_accept = accept_after_explanation if explained else accept_without_explanation
                accepted = bool(u_accept[i] < p_accept)
                aided_call = ai if accepted else call
                aided_birads = birads if not accepted else (4 if ai == 1 else 3)
            rows.append((case, reader, modality, "aided", aided_call, aided_birads, accepted, explained))
    out = pd.DataFrame(rows, columns=["case_id", "reader", "modality", "session", "call", "birads",
                                      "accepted_ai", "requested_explanation"])
    out["call"] = np.where(out["call"] == 1, MALIGNANT, BENIGN)
    for col in ("accepted_ai", "requested_explanation"):
        out[col] = out[col].map({True: "true", False: "false"}).fillna("")
    return out


def write_demo_files(folder: str | Path = DEMO_DIR, *, seed: int = DEMO_SEED,
                     threshold: float = DEFAULT_THRESHOLD) -> tuple[Path, Path]:
    """Write ``demo_cohort.csv`` (case_id, label, us_birads, mg_birads) and ``demo_reads.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cohort = synthetic_cohort(seed=seed)
    predictions = synthetic_predictions(cohort, seed=seed)
    reads = build_demo_reads(cohort, predictions, threshold=threshold, seed=seed)
    cohort_path, reads_path = folder / DEMO_COHORT.name, folder / DEMO_READS.name
    cohort[["case_id", "label", "us_birads", "mg_birads"]].to_csv(cohort_path, index=False)
    reads.to_csv(reads_path, index=False)
    return cohort_path, reads_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write the DEMO reader-study files (synthetic, not study data).")
    parser.add_argument("--out", default=str(DEMO_DIR), help="folder to write into")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)
    for path in write_demo_files(args.out, seed=args.seed, threshold=args.threshold):
        print(path)


if __name__ == "__main__":
    main()
