"""A small Reading Session study on a real SQLite store, for the reader-study analysis tests:
three readers (two US, one MG) read six cases unaided, then with DL-UM's output, accepting or
rejecting it (DL-UM is wrong on two cases) and asking for the explanation of case c1."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dlum import study_store as ss

ADMIN_CODE = "admin-code"
CASES = pd.DataFrame({"case_id": [f"c{i}" for i in range(6)], "label": [0, 1] * 3,
                      "subgroup": ["concordant"] * 3 + ["discordant"] * 3})
READERS = (("R1", "us"), ("R2", "us"), ("R3", "mg"))
#: DL-UM's P(malignant) per case (threshold 0.5): wrong on c2 (benign, 0.7) and c5 (malignant, 0.3).
AI_PROBABILITY = {"c0": 0.1, "c1": 0.9, "c2": 0.7, "c3": 0.8, "c4": 0.2, "c5": 0.3}


def build_study(path: Path, *, reads: bool = True) -> tuple[ss.StudyStore, ss.Admin]:
    """The study in ``path``; with ``reads``, every reader reads every case in both sessions."""
    store = ss.StudyStore(path)
    admin = store.set_admin_code(ADMIN_CODE)
    store.create_study(admin, CASES, cohort_ref="test", washout_days=0, seed=3)
    for i, (name, modality) in enumerate(READERS):
        store.add_reader(admin, name, modality, "junior", f"code-{name}")
        if not reads:
            continue
        reader = store.sign_in(name, f"code-{name}")
        status = store.status(reader)
        while not status.finished:
            case = status.case_id
            k, label = int(case[1:]), int(case[1:]) % 2
            if status.session == ss.UNAIDED:
                call = label if (k + i) % 3 else 1 - label  # every third read wrong
                status = store.submit_read(reader, case, birads="4a" if call else "3",
                                           call=ss.CALLS[call], confidence=30 + 30 * call + 5 * i + k)
                continue
            if k == 1:
                store.request_explanation(reader, case)
            p = AI_PROBABILITY[case]
            ai_call = int(p >= 0.5)
            accept = (k + i) % 4 != 0  # most suggestions accepted, some rejected
            call = ai_call if accept else 1 - ai_call
            status = store.submit_read(reader, case, birads="4b" if call else "3", call=ss.CALLS[call],
                                       confidence=20 + 50 * call + 3 * i + k, accepted_ai=accept,
                                       ai=ss.AIOutput(p, 0.5, ss.CALLS[ai_call]))
    return store, admin
