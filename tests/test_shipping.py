from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlum import cli
from dlum.errors import DLUMError
from dlum.predictions import read_predictions
from dlum.shipping import shipping_verdict, validation_figures, verdict_text
from dlum.stats import calibration_summary, roc_auc_ci

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"


@pytest.fixture(scope="module")
def held_out():
    return read_predictions(SHIPPED / "held_out_predictions.csv")


def test_the_verdict_reads_validation_rows_only(held_out):
    val = held_out[held_out.split == "validation"]
    verdict = shipping_verdict(held_out, min_auc=0.89)
    assert verdict.ships and verdict.pairs == len(val) and verdict.malignant == val.label.sum()
    assert verdict.figures["p_dlum"]["auc"] == pytest.approx(roc_auc_ci(val.label, val.p_dlum).auc)
    assert verdict.figures["p_dlum"]["ece"] == pytest.approx(calibration_summary(val.label, val.p_dlum).ece)
    # test and external rows shuffled and relabelled: nothing in the verdict moves
    rng = np.random.default_rng(0)
    scrambled = held_out.copy()
    rows = scrambled.split != "validation"
    for column in ("label", "p_dlum", "p_dlu", "p_dlm"):
        scrambled.loc[rows, column] = rng.permutation(scrambled.loc[rows, column].to_numpy())
    assert shipping_verdict(scrambled, min_auc=0.89) == verdict
    assert verdict_text(shipping_verdict(scrambled, min_auc=0.89)) == verdict_text(verdict)


def test_each_condition_can_fail(held_out):
    too_high = shipping_verdict(held_out, min_auc=0.95)
    assert not too_high.ships and [ok for _, ok in too_high.conditions] == [False, True]
    assert "FAILS" in verdict_text(too_high) and "Does not ship" in verdict_text(too_high)
    overconfident = held_out.assign(p_dlum=held_out.p_dlum.round())  # same order, P of 0 or 1
    verdict = shipping_verdict(overconfident, min_auc=0.0)
    assert [ok for _, ok in verdict.conditions] == [True, False]


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="split"), "no 'split' column"),
    (lambda f: f[f.split != "validation"], "found 0 validation rows"),
    (lambda f: f[(f.split != "validation") | (f.label == 0)], r"both benign and\s+malignant"),
    (lambda f: f.drop(columns="p_dlum"), "no p_dlum column"),
])
def test_a_table_that_cannot_be_judged_is_a_message(held_out, change, message):
    with pytest.raises(DLUMError, match=message):
        validation_figures(change(held_out))


def test_verdict_command_exit_status_says_whether_it_ships(tmp_path, held_out, capsys):
    shipped_csv = str(SHIPPED / "held_out_predictions.csv")
    assert cli.main(["verdict", "--held-out", shipped_csv, "--against", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "test and external rows set aside unused" in out and "Ships" in out
    candidate = tmp_path / "candidate.csv"
    held_out.assign(p_dlum=held_out.p_dlum.round()).to_csv(candidate, index=False)
    assert cli.main(["verdict", "--held-out", str(candidate), "--min-auc", "0.5"]) == 1
    assert "ECE" in capsys.readouterr().out
    assert cli.main(["verdict", "--held-out", str(candidate), "--against", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["verdict", "--held-out", str(candidate), "--min-auc", "1.5"]) == 2
    assert "must lie in [0, 1]" in capsys.readouterr().err
    pd.DataFrame({"case_id": ["a"], "label": [1], "p_dlum": [0.5], "split": ["test"]}).to_csv(
        tmp_path / "no_validation.csv", index=False)
    assert cli.main(["verdict", "--held-out", str(tmp_path / "no_validation.csv"),
                     "--min-auc", "0.5"]) == 2
    assert "validation rows" in capsys.readouterr().err
