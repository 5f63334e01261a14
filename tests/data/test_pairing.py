"""dlum.data.pairing: patient splits, same-pathology pseudo-pairs inside a split, simulated MG BI-RADS."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlum.data.manifest import COLUMNS
from dlum.data.pairing import (
    PAIRING_RULE,
    SIMULATED_CBIS,
    _allocate,
    birads_distribution,
    build_public_cohort,
    pair_lesions,
    public_lesions,
    simulate_mg_birads,
    split_patients,
)
from dlum.errors import CohortError


def fake_lesions(modality: str, n_patients: int, per_patient: int = 2, seed: int = 0,
                 dataset: str = "D") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        malignant = int(rng.random() < 0.35)
        for k in range(per_patient):
            rows.append({
                "modality": modality, "dataset": dataset, "lesion_id": f"{modality}{p:03d}-{k}",
                "patient_id": f"{dataset}:{p}", "image": f"/img/{modality}{p:03d}-{k}.png",
                "x0": 1.0, "y0": 1.0, "x1": 9.0, "y1": 9.0, "label": malignant,
                "birads": 4.0 if malignant else 3.0, "birads_source": "reported",
                "kind": "spiculated_mass" if malignant else "circumscribed_mass",
            })
    return pd.DataFrame(rows)


def fake_cbis() -> pd.DataFrame:
    rows = []
    for kind, label, counts in [
        ("spiculated_mass", 1, {4: 30, 5: 70}),
        ("spiculated_mass", 0, {3: 10, 4: 10}),
        ("circumscribed_mass", 0, {2: 20, 3: 60, 4: 20, 0: 50}),
        ("circumscribed_mass", 1, {4: 2}),  # too small: falls back to "mass, malignant"
    ]:
        for level, n in counts.items():
            rows += [{"kind": kind, "label": label, "assessment": level,
                      "abnormality_type": "mass"}] * n
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 11, 99, 1064])
def test_allocate_sums_and_tracks_fractions(n):
    counts = _allocate(n, (0.7, 0.1, 0.2))
    assert sum(counts) == n
    assert all(abs(c - f * n) < 1 for c, f in zip(counts, (0.7, 0.1, 0.2)))


def test_split_patients_is_seeded_grouped_and_stratified():
    lesions = fake_lesions("us", 200)
    a, b = split_patients(lesions, seed=3), split_patients(lesions, seed=3)
    assert a.equals(b)
    assert not a.equals(split_patients(lesions, seed=4))
    assert (lesions.assign(split=a).groupby("patient_id")["split"].nunique() == 1).all()
    patients = lesions.assign(split=a).groupby("patient_id").agg(split=("split", "first"), m=("label", "max"))
    for malignant, group in patients.groupby("m"):
        share = group["split"].value_counts(normalize=True)
        assert share["train"] == pytest.approx(0.7, abs=0.02)
        assert share["validation"] == pytest.approx(0.1, abs=0.02)
        assert share["test"] == pytest.approx(0.2, abs=0.02)


def test_pair_lesions_same_pathology_same_split_even_reuse():
    us = fake_lesions("us", 150, seed=1)
    mg = fake_lesions("mg", 40, per_patient=1, seed=2)
    us["split"] = split_patients(us, 0)
    mg["split"] = split_patients(mg, 0)
    cohort = pair_lesions(us, mg, seed=0)
    assert list(cohort.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert len(cohort) == len(us) and cohort["case_id"].is_unique
    mg_by_id = mg.set_index("lesion_id")
    us_by_id = us.set_index("lesion_id")
    assert (mg_by_id.loc[cohort["mg_lesion_id"], "label"].to_numpy() == cohort["label"].to_numpy()).all()
    assert (us_by_id.loc[cohort["us_lesion_id"], "label"].to_numpy() == cohort["label"].to_numpy()).all()
    assert (mg_by_id.loc[cohort["mg_lesion_id"], "split"].to_numpy() == cohort["split"].to_numpy()).all()
    assert (cohort["pairing"] == "pseudo").all()
    for _, group in cohort.groupby(["split", "label"]):
        available = mg[(mg["split"] == group["split"].iloc[0]) & (mg["label"] == group["label"].iloc[0])]
        uses = group["mg_lesion_id"].value_counts().reindex(available["lesion_id"], fill_value=0)
        assert uses.max() - uses.min() <= 1  # reuse spread evenly over every MG lesion
    again = pair_lesions(us, mg, seed=0)
    pd.testing.assert_frame_equal(cohort, again)


def test_pair_lesions_refuses_a_split_without_partner():
    us = fake_lesions("us", 30, seed=1)
    mg = fake_lesions("mg", 30, seed=2)
    us["split"] = "train"
    mg["split"] = "train"
    mg = mg[mg["label"] == 0]
    with pytest.raises(CohortError, match="no malignant MG lesion"):
        pair_lesions(us, mg)


def test_birads_distribution_excludes_0_and_falls_back():
    dist = birads_distribution(fake_cbis(), min_cell=10)
    p = dict(zip(dist[("circumscribed_mass", 0)]["levels"], dist[("circumscribed_mass", 0)]["p"]))
    assert p == pytest.approx({2: 0.2, 3: 0.6, 4: 0.2, 5: 0.0})  # the 50 assessment-0 rows are out
    assert dist[("circumscribed_mass", 1)]["cell"] == "mass, malignant"  # 2 rows < 10: fallback
    assert dist[("circumscribed_mass", 1)]["n"] == 102


def test_simulated_birads_follow_the_distribution_and_are_per_lesion():
    lesions = pd.DataFrame({
        "lesion_id": [f"L{i}" for i in range(4000)], "label": 1, "kind": "spiculated_mass",
    })
    out = simulate_mg_birads(lesions, fake_cbis(), seed=0)
    share = out["birads"].value_counts(normalize=True)
    assert share[5] == pytest.approx(0.7, abs=0.03) and share[4] == pytest.approx(0.3, abs=0.03)
    assert set(out["birads"]) == {4, 5}
    assert (out["birads_source"] == SIMULATED_CBIS).all()
    # a lesion's draw depends on its id and the seed only, not on its neighbours
    subset = simulate_mg_birads(lesions.iloc[::-7], fake_cbis(), seed=0)
    assert (subset.set_index("lesion_id")["birads"] == out.set_index("lesion_id").loc[subset["lesion_id"], "birads"]).all()
    other_seed = simulate_mg_birads(lesions, fake_cbis(), seed=1)
    assert (other_seed["birads"] != out["birads"]).any()


def test_pairing_rule_says_it_is_not_same_patient():
    assert "NOT same-patient" in PAIRING_RULE and "simulated:cbis-ddsm" in PAIRING_RULE


# ------------------------------------------------------------------------------- the real data
@pytest.fixture(scope="module")
def public(shared_data):
    lesions = public_lesions(shared_data, seed=0)
    return lesions, build_public_cohort(shared_data, seed=0, lesions=lesions)


def test_public_cohort_counts_and_labels(public):
    lesions, cohort = public
    counts = lesions.groupby("dataset").size().to_dict()
    assert counts == {"BUS-BRA": 1875, "BrEaST-Lesions-USG": 252, "mini-MIAS": 95}
    assert len(cohort) == 1875 + 252
    assert cohort["case_id"].is_unique
    assert (cohort["pairing"] == "pseudo").all()
    assert (cohort["mg_birads_source"] == SIMULATED_CBIS).all()
    assert (cohort["us_birads_source"] == "reported").all()
    assert set(cohort["source"]) == {"BUS-BRA+mini-MIAS", "BrEaST-Lesions-USG+mini-MIAS"}
    assert set(cohort["us_birads"]) | set(cohort["mg_birads"]) <= {2, 3, 4, 5}
    assert set(cohort["subgroup"]) == {"concordant", "discordant"}


def test_public_cohort_no_patient_or_image_in_two_splits(public):
    """Train, validation and test never share a patient or an image; the external centre's
    rows reuse only the test split's MG lesions."""
    lesions, cohort = public
    assert (lesions.groupby(["modality", "patient_id"])["split"].nunique() == 1).all()
    development = cohort[cohort["split"] != "external"]
    for modality in ("us", "mg"):
        assert (development.groupby(f"{modality}_image")["split"].nunique() == 1).all()
        patients = development["patient_id"].str.split("+").str[0 if modality == "us" else 1]
        assert (development.assign(p=patients).groupby("p")["split"].nunique() == 1).all()
    external = cohort[cohort["split"] == "external"]
    assert set(external["source"]) == {"BrEaST-Lesions-USG+mini-MIAS"}
    assert set(external["mg_image"]) <= set(cohort.loc[cohort["split"] == "test", "mg_image"])
    seen_in_training = cohort.loc[cohort["split"].isin(["train", "validation"]), "mg_image"]
    assert not set(external["mg_image"]) & set(seen_in_training)
    assert (cohort.loc[cohort["source"] == "BUS-BRA+mini-MIAS", "split"] != "external").all()
    # the check training runs finds nothing either, by path or by bytes
    from dlum.data.crops import file_digest
    from dlum.data.manifest import split_overlaps

    assert not split_overlaps(cohort)
    digests = {m: [file_digest(p) for p in cohort[f"{m}_image"]] for m in ("us", "mg")}
    assert not split_overlaps(cohort, digests=digests)


def test_public_cohort_pairs_share_pathology(public):
    lesions, cohort = public
    label = lesions.set_index("lesion_id")["label"]
    assert (label.loc[cohort["us_lesion_id"]].to_numpy() == cohort["label"].to_numpy()).all()
    assert (label.loc[cohort["mg_lesion_id"]].to_numpy() == cohort["label"].to_numpy()).all()


def test_public_cohort_split_proportions(public):
    lesions, _ = public
    us_patients = lesions[lesions["dataset"] == "BUS-BRA"].drop_duplicates("patient_id")
    assert set(lesions.loc[lesions["dataset"] == "BrEaST-Lesions-USG", "split"]) == {"external"}
    share = us_patients["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.01)
    assert share["validation"] == pytest.approx(0.1, abs=0.01)
    assert share["test"] == pytest.approx(0.2, abs=0.01)


def test_public_cohort_same_seed_same_table(public, shared_data):
    _, cohort = public
    again = build_public_cohort(shared_data, seed=0)
    pd.testing.assert_frame_equal(cohort, again)
    other = build_public_cohort(shared_data, seed=1)
    assert not other["case_id"].equals(cohort["case_id"])
