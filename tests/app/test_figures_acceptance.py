"""dlum.app.figures.acceptance_bars: Fig. 5-style stacked bars drawn from an acceptance table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlum.app import figures


def table() -> pd.DataFrame:
    rows = [("All readers", "", "all", 10, 7), ("R1", "us", "all", 6, 3), ("R2", "mg", "all", 4, 4),
            ("All readers", "", "discordant", 0, 0), ("R1", "us", "discordant", 0, 0),
            ("R2", "mg", "discordant", 0, 0)]
    frame = pd.DataFrame(rows, columns=["reader", "modality", "subgroup", "reads", "accepted"])
    return frame.assign(rejected=frame["reads"] - frame["accepted"])


def test_stacked_shares_per_reader_and_subgroup():
    t = table()
    fig = figures.acceptance_bars(t, title="Fig. 5")
    assert fig.layout.barmode == "stack" and fig.layout.title.text == "Fig. 5"
    assert [a.text for a in fig.layout.annotations] == ["all", "discordant"]  # one panel per subgroup
    assert len(fig.data) == 4  # accepted + rejected in each panel
    accepted, rejected = fig.data[0], fig.data[1]
    assert list(accepted.y) == ["All readers", "R1 (US)", "R2 (MG)"]
    part = t[t["subgroup"] == "all"]
    assert np.allclose(accepted.x, 100 * part["accepted"] / part["reads"])
    assert np.allclose(np.asarray(accepted.x) + np.asarray(rejected.x), 100)
    assert accepted.name == "accepted" and rejected.name == "rejected" and not fig.data[2].showlegend


def test_a_subgroup_without_reads_draws_no_bars():
    fig = figures.acceptance_bars(table())
    empty = fig.data[2]
    assert np.isnan(np.asarray(empty.x, dtype=float)).all() and set(empty.text) == {""}


def test_an_empty_table_draws_empty_axes():
    fig = figures.acceptance_bars(table().iloc[0:0])
    assert len(fig.data) == 0


@pytest.mark.parametrize("subgroups", [["concordant"], ["all", "concordant", "discordant"]])
def test_panels_follow_the_subgroups_present(subgroups):
    t = pd.concat([table().assign(subgroup=g) for g in subgroups], ignore_index=True)
    assert [a.text for a in figures.acceptance_bars(t).layout.annotations] == subgroups
