"""Honest pseudo-pairing of public single-modality lesions into a DL-UM demonstration cohort.

No public dataset holds ultrasound (US) and mammography (MG) of the same lesion. To exercise
DL-UM (Xu et al., Breast Cancer Research 2025) on real images, each US lesion is paired with a
*different woman's* MG lesion of the same pathology (:data:`PAIRING_RULE`). The rules that keep
this honest:

1. two centres, as in the paper: the development centre's patients (BUS-BRA ultrasound,
   mini-MIAS mammography) are split per modality into train / validation / test (7:1:2),
   stratified by pathology (a patient counts as malignant when any of her lesions is), seeded;
   the external centre is BrEaST-Lesions-USG (another country, devices and readers), every
   lesion ``split = external``, paired with mini-MIAS lesions of the test split (in no training
   or validation split);
2. pairs are formed inside a split only, so no image and no patient appears in two of the
   train / validation / test splits;
3. each US lesion gets an MG lesion of the same pathology from its split; MG lesions, far fewer,
   are reused in turn (round-robin over a seeded shuffle) so that reuse is spread evenly;
4. the US BI-RADS is the dataset's (``reported``); mini-MIAS gives none, so one is drawn per MG
   lesion from CBIS-DDSM's empirical distribution of ``assessment`` given pathology and lesion
   kind (:func:`simulate_mg_birads`, ``simulated:cbis-ddsm``);
5. the table says ``pairing = pseudo``. Pathology and BI-RADS never enter the network.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dlum.constants import BIRADS_LEVELS, DEVELOPMENT_SPLITS, EXTERNAL, PSEUDO, TEST
from dlum.data.manifest import COLUMNS, derive_subgroup
from dlum.data.public import (
    BREAST_LESIONS_USG,
    BUSBRA,
    CBIS_DDSM,
    MIAS,
    read_breast_lesions_usg,
    read_busbra,
    read_cbis_ddsm_labels,
    read_mias,
)
from dlum.errors import CohortError

__all__ = [
    "EXTERNAL_DATASET",
    "MIN_CELL",
    "PAIRING_RULE",
    "SIMULATED_CBIS",
    "SPLIT_FRACTIONS",
    "birads_distribution",
    "build_public_cohort",
    "pair_lesions",
    "public_lesions",
    "simulate_mg_birads",
    "split_patients",
]

#: Fractions of patients in train, validation and test.
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)

#: ``mg_birads_source`` of a BI-RADS drawn from CBIS-DDSM's empirical distribution.
SIMULATED_CBIS = "simulated:cbis-ddsm"

#: Fewest CBIS-DDSM rows a (lesion kind, pathology) cell needs before it is used on its own;
#: smaller cells fall back to (mass or calcification, pathology), then to pathology alone.
MIN_CELL = 10

PAIRING_RULE = (
    "Public demonstration cohort: these are NOT same-patient pairs. No public dataset images one "
    "lesion with both ultrasound and mammography, so each ultrasound lesion is paired with a "
    "mammography lesion of a different woman (mini-MIAS) with the same pathology (benign or "
    "malignant). Two centres, as in the DL-UM paper: the development centre is BUS-BRA "
    "(ultrasound) with mini-MIAS; its patients are first split per modality into train, "
    "validation and test (7:1:2, stratified by pathology, seed recorded), and pairs are formed "
    "only inside a split, so no patient or image appears in two splits. The external centre is "
    "BrEaST-Lesions-USG (another country, devices and readers, split 'external'), paired with "
    "the mini-MIAS lesions of the test split, which no training or validation step sees. The 95 "
    "mammography lesions are far fewer than the ultrasound lesions, so each is reused many "
    "times, in turn over a seeded shuffle so that reuse is even. The ultrasound BI-RADS "
    "is the one reported with the dataset. mini-MIAS gives no BI-RADS, so the mammography "
    "BI-RADS is simulated: one value per lesion, drawn (seeded by the lesion id) from the "
    "distribution of the radiologists' assessments (2-5; 0 and 1 left out) in CBIS-DDSM for "
    "the same pathology and lesion kind (circumscribed, spiculated or ill-defined mass, "
    "architectural distortion, asymmetry, calcification); its source reads "
    "'simulated:cbis-ddsm'. Pathology and BI-RADS are never inputs of the network. Results on "
    "this cohort show that the software works; they are not clinical performance."
)


# ------------------------------------------------------------------------------------ splitting
def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` with the largest-remainder rule (ties: later split)."""
    exact = [f * n for f in fractions]
    counts = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), -i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_patients(
    lesions: pd.DataFrame,
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    strata: Sequence[str] = ("dataset",),
) -> pd.Series:
    """Assign each patient to train / validation / test, stratified by pathology, seeded.

    A patient's stratum is her columns ``strata`` plus whether any of her lesions is malignant.
    Within a stratum, patients (sorted by id, then shuffled with ``seed``) are cut 7:1:2 by the
    largest-remainder rule. Written here rather than with scikit-learn's splitters because those
    stratify lesions, not patients, need two members per class and round each call separately;
    this gives exact per-stratum proportions at patient level in one pass.

    Returns:
        Series indexed like ``lesions`` with the split of each lesion's patient.
    """
    if len(fractions) != len(DEVELOPMENT_SPLITS) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be {len(DEVELOPMENT_SPLITS)} numbers summing to 1, got {fractions}")
    patients = lesions.groupby("patient_id", sort=True).agg(
        malignant=("label", "max"), **{s: (s, "first") for s in strata}
    )
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    keys = list(strata) + ["malignant"]
    for _, group in patients.groupby(keys, sort=True):
        ids = np.array(sorted(group.index))
        rng.shuffle(ids)
        start = 0
        for name, count in zip(DEVELOPMENT_SPLITS, _allocate(len(ids), fractions)):
            split_of.update({pid: name for pid in ids[start : start + count]})
            start += count
    return lesions["patient_id"].map(split_of).rename("split")


# ------------------------------------------------------------------------------ simulated BI-RADS
def birads_distribution(cbis: pd.DataFrame, min_cell: int = MIN_CELL) -> dict[tuple[str, int], dict]:
    """CBIS-DDSM's empirical P(assessment | lesion kind, pathology), assessments 2-5 only.

    Every CBIS-DDSM row (one abnormality in one view) counts once. Assessments 0 (incomplete) and
    1 (negative) are left out: the cohort keeps BI-RADS 2-5 only, as DL-UM does.

    Returns:
        ``{(kind, label): {"levels": (2, 3, 4, 5), "p": array, "n": rows, "cell": description}}``
        for every kind seen and both labels; small cells fall back as :data:`MIN_CELL` says.
    """
    data = cbis[cbis["assessment"].isin(BIRADS_LEVELS)].copy()
    data["assessment"] = data["assessment"].astype(int)
    data["group"] = np.where(data["abnormality_type"].str.startswith("calc"), "calcification", "mass")
    levels = tuple(BIRADS_LEVELS)

    def dist(rows: pd.DataFrame) -> np.ndarray:
        counts = rows["assessment"].value_counts().reindex(levels, fill_value=0).to_numpy(float)
        return counts / counts.sum()

    table: dict[tuple[str, int], dict] = {}
    for kind in sorted(k for k in data["kind"].dropna().unique()):
        group = "calcification" if kind == "calcification" else "mass"
        for label in (0, 1):
            name = "malignant" if label else "benign"
            for rows, cell in (
                (data[(data["kind"] == kind) & (data["label"] == label)], f"{kind}, {name}"),
                (data[(data["group"] == group) & (data["label"] == label)], f"{group}, {name}"),
                (data[data["label"] == label], name),
            ):
                if len(rows) >= min_cell:
                    table[(kind, label)] = {"levels": levels, "p": dist(rows), "n": len(rows), "cell": cell}
                    break
    return table


def _lesion_uniform(lesion_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, lesion id): independent of table order."""
    digest = hashlib.sha256(f"{seed}:{lesion_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).random()


def simulate_mg_birads(
    lesions: pd.DataFrame, cbis: pd.DataFrame, seed: int = 0
) -> pd.DataFrame:
    """Draw one MG BI-RADS per lesion from CBIS-DDSM given its pathology and kind.

    The draw for a lesion depends only on ``seed`` and its ``lesion_id`` (a SHA-256 of both
    seeds the generator), so adding or removing other lesions never changes it.

    Returns:
        ``lesions`` with ``birads`` filled, ``birads_source = simulated:cbis-ddsm`` and
        ``birads_rule`` (the CBIS-DDSM cell used and its size).
    """
    dist = birads_distribution(cbis)
    out = lesions.copy()
    birads, rules = [], []
    for lesion_id, kind, label in zip(out["lesion_id"], out["kind"], out["label"]):
        entry = dist.get((kind, int(label)))
        if entry is None:
            raise CohortError(
                [f"lesion {lesion_id}: no {CBIS_DDSM} assessments for kind {kind!r}"], CBIS_DDSM
            )
        u = _lesion_uniform(str(lesion_id), seed)
        index = int(np.searchsorted(np.cumsum(entry["p"]), u, side="right"))
        birads.append(float(entry["levels"][min(index, len(entry["levels"]) - 1)]))
        rules.append(f"{CBIS_DDSM} {entry['cell']} (n={entry['n']})")
    out["birads"] = birads
    out["birads_source"] = SIMULATED_CBIS
    out["birads_rule"] = rules
    return out


# ------------------------------------------------------------------------------------- pairing
def pair_lesions(us: pd.DataFrame, mg: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Pair each US lesion with an MG lesion of the same pathology from the same split.

    Within each (split, pathology) the US lesions (sorted by id) and the MG lesions are each
    shuffled with ``seed``; the i-th US lesion takes MG lesion ``i mod n_mg``, so every MG lesion
    is used ``floor`` or ``ceil`` of (US / MG) times. US lesions of the ``external`` split take MG
    lesions of the ``test`` split (no training or validation step sees those).

    Args:
        us, mg: lesion tables (``dlum.data.public`` columns) with a ``split`` column; MG lesions
            with their (simulated) ``birads``.

    Returns:
        Cohort table (:data:`dlum.data.manifest.COLUMNS` + ``subgroup``, ``us_lesion_id``,
        ``mg_lesion_id``), ``pairing = pseudo``.

    Raises:
        CohortError: a (split, pathology) with US lesions but no MG lesion to pair them with.
    """
    rng = np.random.default_rng(seed)
    problems, parts = [], []
    for split in (*DEVELOPMENT_SPLITS, EXTERNAL):
        mg_split = TEST if split == EXTERNAL else split  # the external centre: unseen MG lesions
        for label in (0, 1):
            u = us[(us["split"] == split) & (us["label"] == label)].sort_values("lesion_id")
            m = mg[(mg["split"] == mg_split) & (mg["label"] == label)].sort_values("lesion_id")
            if u.empty:
                continue
            if m.empty:
                name = "malignant" if label else "benign"
                problems.append(
                    f"split {split!r}: {len(u)} {name} US lesion(s) but no {name} MG lesion to "
                    "pair them with"
                )
                continue
            u = u.iloc[rng.permutation(len(u))]
            m = m.iloc[rng.permutation(len(m))]
            partner = m.iloc[np.arange(len(u)) % len(m)]
            parts.append((u.reset_index(drop=True), partner.reset_index(drop=True)))
    if problems:
        raise CohortError(problems, "pseudo-pairing")
    u = pd.concat([p[0] for p in parts], ignore_index=True)
    m = pd.concat([p[1] for p in parts], ignore_index=True)
    cohort = pd.DataFrame(
        {
            "case_id": u["lesion_id"].astype(str) + "+" + m["lesion_id"].astype(str),
            "patient_id": u["patient_id"].astype(str) + "+" + m["patient_id"].astype(str),
            "us_image": u["image"],
            "mg_image": m["image"],
            **{f"us_{c}": u[c].astype(float) for c in ("x0", "y0", "x1", "y1")},
            **{f"mg_{c}": m[c].astype(float) for c in ("x0", "y0", "x1", "y1")},
            "label": u["label"].astype(np.int64),
            "us_birads": u["birads"].astype(float),
            "mg_birads": m["birads"].astype(float),
            "us_birads_source": u["birads_source"],
            "mg_birads_source": m["birads_source"],
            "pairing": PSEUDO,
            "source": u["dataset"] + "+" + m["dataset"],
            "split": u["split"],
        }
    )
    # Order: by split, then by US lesion (dataset, id): stable whatever the shuffles did.
    cohort["us_lesion_id"] = u["lesion_id"].to_numpy()
    cohort["mg_lesion_id"] = m["lesion_id"].to_numpy()
    order = cohort["split"].map({s: i for i, s in enumerate((*DEVELOPMENT_SPLITS, EXTERNAL))})
    cohort = cohort.assign(_order=order, _dataset=u["dataset"].to_numpy())
    cohort = cohort.sort_values(["_order", "_dataset", "us_lesion_id"], kind="stable")
    cohort = cohort.drop(columns=["_order", "_dataset"]).reset_index(drop=True)
    cohort = cohort[list(COLUMNS) + ["us_lesion_id", "mg_lesion_id"]]
    cohort.insert(len(COLUMNS), "subgroup", derive_subgroup(cohort["us_birads"], cohort["mg_birads"]))
    return cohort


#: The ultrasound dataset of the external centre (every lesion ``split = external``).
EXTERNAL_DATASET = BREAST_LESIONS_USG


def public_lesions(data_dir: str | os.PathLike, seed: int = 0) -> pd.DataFrame:
    """Every public lesion (US: BUS-BRA + BrEaST-Lesions-USG; MG: mini-MIAS) with its split.

    BUS-BRA patients are split 7:1:2 stratified by pathology, mini-MIAS women likewise;
    BrEaST-Lesions-USG, the external centre, is ``external`` whole. MG lesions get their
    simulated BI-RADS (:func:`simulate_mg_birads`). ``attrs`` carries the readers' notes
    (BrEaST normals dropped, MIAS lesions skipped / whole-film / widened / clamped).
    """
    busbra = read_busbra(data_dir)
    breast = read_breast_lesions_usg(data_dir)
    mias = read_mias(data_dir)
    cbis = read_cbis_ddsm_labels(data_dir)
    busbra["split"] = split_patients(busbra, seed, strata=("dataset",))
    breast["split"] = EXTERNAL
    us = pd.concat([busbra, breast], ignore_index=True)
    mg = simulate_mg_birads(mias, cbis, seed)
    mg["split"] = split_patients(mg, seed, strata=("dataset",))
    lesions = pd.concat([us, mg], ignore_index=True)
    lesions.attrs = {
        "seed": int(seed),
        BREAST_LESIONS_USG: dict(breast.attrs),
        MIAS: dict(mias.attrs),
        CBIS_DDSM: {"rows": int(len(cbis))},
        BUSBRA: dict(busbra.attrs),
    }
    return lesions


def build_public_cohort(
    data_dir: str | os.PathLike, seed: int = 0, *, lesions: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The public pseudo-paired DL-UM cohort (:data:`PAIRING_RULE`), one row per US lesion.

    Args:
        data_dir: folder laid out like ``../shared/data``.
        seed: fixes the splits, the pairs and the simulated MG BI-RADS.
        lesions: the output of :func:`public_lesions` when already computed.

    Returns:
        Cohort table in the schema of :mod:`dlum.data.manifest` plus ``subgroup``,
        ``us_lesion_id`` and ``mg_lesion_id``; ``attrs["lesions"]`` is not set (tables stay
        light), call :func:`public_lesions` for the per-lesion view.
    """
    if lesions is None:
        lesions = public_lesions(data_dir, seed)
    us = lesions[lesions["modality"] == "us"]
    mg = lesions[lesions["modality"] == "mg"]
    return pair_lesions(us, mg, seed)
