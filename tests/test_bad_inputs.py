"""Every bad input gets a clear message, changes no file and stays within memory bounds.

The corpus (``tests/corpus.py``, generated here) holds malformed and hostile images, lesion
boxes, checkpoints, options, tables and settings. Each is run through the command line (in
process): exit status 2, ``dlum <command>: error: …`` holding the case's phrase, no traceback,
and every file under the corpus folder hashed identical before and after. Image and checkpoint
cases also go through the dashboard (AppTest): a message on the page, never an exception. The
decompression bombs run in a child process whose memory growth is measured.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from dlum import cli
from tests.checkpoints import write_test_checkpoint
from tests.corpus import build, snapshot

pytestmark = pytest.mark.slow

#: Largest memory growth allowed for one bad input (bytes).
MEMORY_BOUND = 1 << 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    checkpoint = write_test_checkpoint(tmp_path_factory.mktemp("corpus-ckpt") / "ckpt")
    return build(tmp_path_factory.mktemp("corpus"), checkpoint)


def test_the_corpus_is_large_and_covers_every_class(corpus):
    kinds = {c.kind for c in corpus.cases}
    assert kinds == {"image", "roi", "checkpoint", "option", "table", "setting"}
    assert len(corpus.cases) >= 60
    assert len({c.name for c in corpus.cases}) == len(corpus.cases)


def _run(case, monkeypatch, capsys) -> tuple[int, str, str]:
    with monkeypatch.context() as m:
        for key, value in case.env.items():
            m.setenv(key, value)
        capsys.readouterr()
        code = cli.main(list(case.argv))
        out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["image", "roi", "checkpoint", "option", "table", "setting"])
def test_every_bad_input_is_a_message_and_changes_no_file(corpus, kind, monkeypatch, capsys):
    failures = []
    for case in corpus.by_kind(kind):
        before = snapshot(corpus.root)
        code, out, err = _run(case, monkeypatch, capsys)
        problems = []
        if code != case.exit_code:
            problems.append(f"exit {code}")
        if not err.startswith(f"dlum {case.argv[0]}: error: "):
            problems.append("not one `dlum <command>: error:` message")
        if case.phrase not in err:
            problems.append(f"no {case.phrase!r} in the message")
        if "Traceback" in err or "internal error" in err:
            problems.append("a traceback / internal error")
        if out.strip() and case.argv[0] != "info":  # info prints its report, errors included
            problems.append("printed a result")
        if snapshot(corpus.root) != before:
            problems.append("changed files")
        if problems:
            failures.append(f"{case.name}: {', '.join(problems)}\n    {err.strip()[:300]}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------- dashboard
def _app_errors(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    return " ".join(str(e.value) for e in at.error)


def test_every_bad_image_is_a_message_on_case_review(corpus, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO_ROOT

    monkeypatch.setenv("DLUM_CHECKPOINT", str(corpus.cases[0].argv[2]))
    failures = []
    for case in corpus.by_kind("image"):
        if case.upload is None:
            continue
        at = AppTest.from_file(str(REPO_ROOT / "pages" / "1_Case_Review.py"), default_timeout=120)
        at.run()
        name = next(a for a in case.argv if "/images/" in a).rsplit("/", 1)[1]
        at.file_uploader(key="mg_file").set_value((name, case.upload, "application/octet-stream"))
        at.run()
        if at.exception:
            failures.append(f"{case.name}: exception {at.exception[0].value}")
            continue
        shown = " ".join(str(e.value) for e in at.error) + " " + " ".join(
            str(w.value) for w in at.warning)
        if case.phrase not in shown or "Something went wrong" in shown:
            failures.append(f"{case.name}: page shows {shown[:200]!r}")
    assert not failures, "\n".join(failures)


def test_every_bad_checkpoint_is_a_message_on_home_and_case_review(corpus, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO_ROOT

    failures = []
    for case in corpus.by_kind("checkpoint"):
        if case.home is None:
            continue
        monkeypatch.setenv("DLUM_CHECKPOINT", str(case.home))
        # Cohort ROC reads only the card and the predictions, not the weights: it must not fail,
        # and says what it can
        for page in ("streamlit_app.py", "pages/1_Case_Review.py", "pages/2_Cohort_ROC.py"):
            at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=120)
            at.run()
            if at.exception:
                failures.append(f"{case.name} on {page}: exception {at.exception[0].value}")
                continue
            shown = " ".join(str(e.value) for e in at.error) + " ".join(
                str(i.value) for i in at.info)
            if "Something went wrong" in shown:
                failures.append(f"{case.name} on {page}: {shown[:200]!r}")
            elif "Cohort_ROC" not in page and (not shown or case.phrase not in shown):
                failures.append(f"{case.name} on {page}: page shows {shown[:200]!r}")
    assert not failures, "\n".join(failures)


def test_every_bad_table_is_a_message_on_cohort_roc_and_reader_study(corpus, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO_ROOT

    monkeypatch.setenv("DLUM_CHECKPOINT", str(corpus.root / "no-checkpoint"))
    from dlum.readers import DEMO_COHORT

    demo_cohort = DEMO_COHORT.read_bytes()
    tables = sorted((corpus.root / "tables").glob("*.csv"))
    assert len(tables) >= 12
    failures = []
    # one session per page, each bad table uploaded in turn (as a user trying one file after
    # another would): every rerun must show that table's message, not the previous one's
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "2_Cohort_ROC.py"), default_timeout=120)
    at.run()
    at.radio(key="source").set_value("Upload a predictions CSV")
    at.run()
    rs = AppTest.from_file(str(REPO_ROOT / "pages" / "3_Reader_Study.py"), default_timeout=120)
    rs.run()
    rs.file_uploader(key="cohort_upload").set_value(("cohort.csv", demo_cohort, "text/csv"))
    for path in tables:
        data = path.read_bytes()
        at.file_uploader(key="predictions_upload").set_value((path.name, data, "text/csv"))
        at.run()
        rs.file_uploader(key="reads_upload").set_value((path.name, data, "text/csv"))
        rs.run()
        for page, app in (("Cohort ROC", at), ("Reader Study", rs)):
            if app.exception:
                failures.append(f"{path.name} on {page}: exception {app.exception[0].value}")
                continue
            shown = " ".join(str(e.value) for e in app.error)
            if "Something went wrong" in shown or path.name not in shown:
                failures.append(f"{path.name} on {page}: page shows {shown[:200]!r}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------- memory
# VmHWM, the peak resident size of this process's memory (ru_maxrss would carry the parent's
# peak across exec on Linux); growth is measured from after the imports.
_MEASURE = textwrap.dedent("""
    import json, sys
    import torch, dlum.inference, dlum.data.io, dlum.visualize.cam  # imported before measuring
    from dlum import cli

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    before = status("VmRSS")
    code = cli.main(sys.argv[1:])
    print(json.dumps({"code": code, "growth": status("VmHWM") - before}))
""")


def _growth(argv, env=None) -> dict:
    import os

    proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "err": proc.stderr}


@pytest.mark.parametrize("name", ["deflated dicom inflating to 1 GiB", "png header of 90 Mpx",
                                  "png header of 4 billion px"])
def test_decompression_bombs_are_refused_within_the_memory_bound(corpus, name):
    case = next(c for c in corpus.cases if c.name == name)
    result = _growth(case.argv, case.env)
    assert result["code"] == 2 and case.phrase in result["err"], result["err"]
    assert result["growth"] < MEMORY_BOUND, result


def test_an_image_at_the_pixel_limit_is_read_within_the_memory_bound(corpus, tmp_path):
    """A colour PNG just under the pixel limit (the costliest accepted image) is predicted."""
    import numpy as np
    from PIL import Image

    from dlum.settings import limits

    side = int(limits().max_pixels ** 0.5) - 1
    rgb = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    path = tmp_path / "large.png"
    Image.fromarray(rgb).save(path, compress_level=1)
    del rgb
    ck = corpus.cases[0].argv[2]
    result = _growth(["predict", "--checkpoint", ck, "--us", str(path), "--us-roi",
                      f"10,10,{side // 2},{side // 2}", "--precision", "fp32"])
    assert result["code"] == 0, result["err"]
    assert result["growth"] < MEMORY_BOUND, result


def test_formula_cells_are_escaped_in_what_evaluate_writes(corpus, capsys):
    """OWASP CSV injection: a case id that a spreadsheet would run is written inert."""
    import pandas as pd

    us, mg = (corpus.root / "good" / f"phantom-12-{m}.png" for m in ("us", "mg"))
    table = corpus.root.parent / "formula.csv"
    table.write_text("case_id,patient_id,us_image,mg_image,label\n"
                     f"\"=cmd|' /C calc'!A0\",p1,{us},{mg},1\n=HYPERLINK(\"x\"),p2,{us},{mg},0\n")
    out = corpus.root.parent / "formula-predictions.csv"
    assert cli.main(["evaluate", "--checkpoint", corpus.cases[0].argv[2], "--cohort", str(table),
                     "--out", str(out), "--quiet", "--precision", "fp32"]) == 0
    written = pd.read_csv(out, dtype=str)["case_id"].tolist()
    assert written == ["'=cmd|' /C calc'!A0", "'=HYPERLINK(\"x\")"]
