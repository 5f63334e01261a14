"""dlum.data.demo_study: the documented, seeded rule behind the shipped DEMO reads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlum import readers
from dlum.predictions import read_predictions
from dlum.data import demo_study as demo_reads


@pytest.fixture(scope="module")
def demo():
    c = demo_reads.synthetic_cohort(30, 30, seed=7)
    p = demo_reads.synthetic_predictions(c, seed=7)
    return c, p, demo_reads.build_demo_reads(c, p, threshold=0.5, seed=7)


def test_deterministic(demo):
    c, p, reads = demo
    pd.testing.assert_frame_equal(reads, demo_reads.build_demo_reads(c, p, threshold=0.5, seed=7))
    other = demo_reads.build_demo_reads(c, p, threshold=0.5, seed=8)
    assert not reads.equals(other)


def test_rule(demo):
    c, p, reads = demo
    reported = c.set_index("case_id")
    model = (p.set_index("case_id")["p_dlum"] >= 0.5).astype(int)
    calls = reads.assign(call01=(reads["call"] == "malignant").astype(int))
    unaided = calls[calls["session"] == "unaided"].set_index(["reader", "case_id"])
    aided = calls[calls["session"] == "aided"].set_index(["reader", "case_id"])
    # unaided: the modality's reported BI-RADS, moved at most one category; call = BI-RADS >= 4
    for (reader, case), row in unaided.iterrows():
        assert abs(row["birads"] - reported.loc[case, f"{row['modality']}_birads"]) <= 1
        assert row["call01"] == int(row["birads"] >= 4)
        assert row["accepted_ai"] == "" and row["requested_explanation"] == ""
    # aided: accepted -> the model's call; rejected -> the unaided call
    for key, row in aided.iterrows():
        if row["accepted_ai"] == "true":
            assert row["call01"] == model.loc[key[1]]
        else:
            assert row["call01"] == unaided.loc[key, "call01"] != model.loc[key[1]]
        assert row["requested_explanation"] in ("true", "false")
    # the simulated readers ask for explanations more often when they disagree with the model
    disagree = aided.index.map(lambda k: unaided.loc[k, "call01"] != model.loc[k[1]])
    asked = aided["requested_explanation"] == "true"
    assert asked[disagree].mean() > asked[~disagree].mean()


def test_outputs_pass_the_page_validators(demo, tmp_path):
    c, p, reads = demo
    frame = read_predictions(p.to_csv(index=False).encode())
    assert frame[[col for col in frame.columns if col.startswith("p_")]].stack().between(0, 1).all()
    joined = readers.join_reads(readers.read_reads(reads.to_csv(index=False).encode()),
                                readers.read_study_cohort(c.to_csv(index=False).encode()))
    assert len(joined) == len(reads) == 4 * 2 * len(c)


def test_shipped_files_are_the_documented_build(tmp_path):
    assert demo_reads.DEMO_DIR.parent.name == "data" and demo_reads.DEMO_DIR.name == "demo"
    assert demo_reads.DEMO_READS.is_file() and demo_reads.DEMO_COHORT.is_file()
    cohort_path, reads_path = demo_reads.write_demo_files(tmp_path)
    assert cohort_path.read_bytes() == demo_reads.DEMO_COHORT.read_bytes()
    assert reads_path.read_bytes() == demo_reads.DEMO_READS.read_bytes()


def test_synthetic_models_are_ordered(demo):
    from dlum.stats import roc_auc_ci

    c = demo_reads.synthetic_cohort()
    p = demo_reads.synthetic_predictions(c)
    y = (p["label"] == "malignant").astype(int)
    fused, us = roc_auc_ci(y, p["p_dlum"]).auc, roc_auc_ci(y, p["p_dlu"]).auc
    assert 0.8 < fused < 0.97 and fused > us
    assert np.isin(p["subgroup"], ["concordant", "discordant"]).all()
