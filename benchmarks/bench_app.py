"""Benchmark of the dashboard: time to first render of each page (Home, Case Review, Cohort ROC,
Reader Study) in a new session, with the DL-UM model already loaded, through Streamlit's AppTest.

Run:  python -m benchmarks.bench_app   Prints a table, writes benchmarks/results/app.json.

What is timed: ``AppTest.from_file(page).run()`` with a fresh AppTest for every repeat, i.e. the
first script run of a new browser session (no browser, no websocket: the server-side Python only).
The model is warm (and compiled, unless ``DLUM_COMPILE=0``): one untimed run of the Case Review page first loads the checkpoint into
``st.cache_resource``, as the first visitor of a running server does (its time is reported apart).
The ``--warmup`` untimed runs of each page also fill that page's ``st.cache_data`` (published
tables, cohort statistics), so the figures are those of a server that has already served the page.

One more row: a new session opens Case Review, picks "Example case" (the first example, a
synthetic phantom) and sees the result. The example's own cached entries (its images, thumbnails,
network crop and prediction) are cleared before each repeat, so every repeat runs a live inference.

Any page that raises or shows an error stops the benchmark with a message and a non-zero status.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import format_table, readme_row, timeit, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: (page name, script) in the order of the dashboard's navigation.
PAGES = (
    ("Home", REPO / "streamlit_app.py"),
    ("Case Review", REPO / "pages" / "1_Case_Review.py"),
    ("Cohort ROC", REPO / "pages" / "2_Cohort_ROC.py"),
    ("Reader Study", REPO / "pages" / "3_Reader_Study.py"),
)
CASE_REVIEW = PAGES[1][1]
#: Seconds AppTest waits for one script run (its own default, 3 s, is too short for a model load).
TIMEOUT = 300


class PageFailed(RuntimeError):
    """A page raised or showed an error: its timing would mean nothing."""


def _quiet_streamlit() -> None:
    """AppTest runs the pages in this process without a server: silence its bare-mode warnings."""
    from streamlit import config as st_config
    from streamlit import logger as st_logger

    st_config.get_option("logger.level")  # parse the config now: parsing resets the level
    st_logger.set_log_level(logging.ERROR)


def _check(at, name: str):
    for problems, what in ((at.exception, "raised"), (at.error, "showed an error")):
        if problems:
            raise PageFailed(f"{name}: the page {what}: " + " | ".join(str(e.value) for e in problems))
    return at


def _first_render(script: Path, name: str):
    from streamlit.testing.v1 import AppTest

    return _check(AppTest.from_file(str(script), default_timeout=TIMEOUT).run(), name)


def _clear_example_caches() -> None:
    """Forget everything cached about example cases, but keep the model and the catalogue."""
    from dlum.app import case_review as cr
    from dlum.app import resources as res

    for fn in (res.load_example, cr._thumbnail_png, cr.cached_network_patch, cr.cached_prediction):
        fn.clear()


def _example_case() -> None:
    """A new session: Case Review, then "Example case" (the first example) and its live result."""
    name = "Case Review, example case"
    _clear_example_caches()
    at = _first_render(CASE_REVIEW, name)
    at.segmented_control(key="source").set_value("Example case")
    _check(at.run(), name)
    if not any(m.label == "DL-UM P(malignant)" for m in at.metric):
        raise PageFailed(f"{name}: no DL-UM probability was shown")
    if any("(cached result)" in str(c.value) for c in at.caption):
        raise PageFailed(f"{name}: the prediction came from the cache, not a live inference")


def main(argv=None) -> int:
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"),
                        help="checkpoint folder (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    args = parser.parse_args(argv)
    _quiet_streamlit()

    from dlum.app.resources import CHECKPOINT_ENV, checkpoint_present
    from dlum.runtime import resolve_device

    checkpoint = Path(args.checkpoint).resolve()
    if not checkpoint_present(checkpoint):
        print(f"no checkpoint (card.json + model.safetensors) in {checkpoint}", file=sys.stderr)
        return 2
    previous = os.environ.get(CHECKPOINT_ENV)
    os.environ[CHECKPOINT_ENV] = str(checkpoint)
    device = resolve_device("auto").type  # where the app puts the model: "cpu" or "cuda"
    rows = []
    try:
        start = time.perf_counter()
        _first_render(CASE_REVIEW, "Case Review (model load)")
        load_s = time.perf_counter() - start
        # The dashboard compiles its model in the background (unless DLUM_COMPILE=0): time the
        # steady state a visitor meets once that is done, not pages racing the compiler for cores.
        from dlum.app.resources import get_predictor

        start = time.perf_counter()
        compiled = bool(get_predictor().wait_compiled(timeout=600))
        compile_wait_s = time.perf_counter() - start
        for name, script in PAGES:
            t = timeit(lambda: _first_render(script, name), args.repeats, args.warmup)
            row = {"task": f"first render: {name}", "median_s": t["median"], "iqr_s": t["iqr"],
                   "min_s": t["min"]}
            rows.append(readme_row(row, f"dashboard first render, {name} (warm model)",
                                   device=device))
        t = timeit(_example_case, args.repeats, args.warmup)
        row = {"task": "first render: Case Review + example case (live inference)",
               "median_s": t["median"], "iqr_s": t["iqr"], "min_s": t["min"]}
        rows.append(readme_row(row, "dashboard first render, Case Review, then an example case's "
                                    "live result (warm model)", device=device))
    except PageFailed as exc:
        print(f"bench_app: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is None:
            os.environ.pop(CHECKPOINT_ENV, None)
        else:
            os.environ[CHECKPOINT_ENV] = previous

    import streamlit
    import torch

    print(format_table(rows, ["task", "median_s", "iqr_s", "min_s"]))
    print(f"untimed first run (model load + Case Review): {load_s:.2f} s; "
          f"then {compile_wait_s:.1f} s until the background compile was done (compiled: {compiled}); "
          f"checkpoint {checkpoint.name}; threads: {torch.get_num_threads()}")
    extra = {"repeats": args.repeats, "warmup": args.warmup, "checkpoint": checkpoint.name,
             "model_load_first_render_s": load_s, "compiled": compiled,
             "compile_wait_s": compile_wait_s, "threads": torch.get_num_threads(),
             "streamlit": streamlit.__version__}
    print(f"wrote {write_results('app', rows, extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
