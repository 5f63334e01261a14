"""What every dashboard page shares: the model, the checkpoint, the device, errors, examples.

* The DL-UM checkpoint (Xu et al., Breast Cancer Research 2025) is ``$DLUM_CHECKPOINT``, else
  ``checkpoints/dlum-public-v2`` in the repository. It is loaded once per process with
  ``st.cache_resource`` and shared by every session: nobody mutates it (CAMs work on a private
  copy, see :mod:`dlum.visualize.cam`).
* The ultrasound lesion finder (:mod:`dlum.localize`) is ``$DLUM_FINDER``, else
  ``checkpoints/us-finder-v1``; loaded once per process too (:func:`get_finder`). Without one,
  Case Review says so in one line and the lesion box is drawn by hand, as before.
* :func:`show_error` turns dlum's errors into an ``st.error`` message, never a traceback.
* The example catalogue: synthetic phantoms (always), and public pseudo-pairs when the public data
  folder (``$DLUM_DATA_DIR`` or ``../shared/data``) is present: a BUS-BRA ultrasound lesion with a
  mini-MIAS mammography lesion of the same pathology from a DIFFERENT woman.

torch is only imported when a model is loaded, so pages that need no model stay light.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from dlum.constants import MODALITY_NAMES
from dlum.data import examples
from dlum.data.examples import PHANTOM, PSEUDO_PAIR, ExampleCase  # noqa: F401  (re-exported)
from dlum.errors import CohortError, DLUMError

if TYPE_CHECKING:  # pragma: no cover
    from dlum.inference import Predictor
    from dlum.localize import LesionFinder

__all__ = [
    "CHECKPOINT_ENV",
    "COMPILE_ENV",
    "DATA_ENV",
    "DEFAULT_CHECKPOINT",
    "DISCLAIMER",
    "FINDER_ENV",
    "FinderStatus",
    "PAPER_CITATION",
    "PAPER_URL",
    "PHANTOM",
    "PSEUDO_PAIR",
    "REPO_ROOT",
    "ExampleCase",
    "checkpoint_dir",
    "checkpoint_present",
    "data_dir",
    "device_summary",
    "example_catalogue",
    "finder_dir",
    "get_finder",
    "get_predictor",
    "load_example",
    "load_finder",
    "load_predictor",
    "dashboard_precision",
    "missing_checkpoint_message",
    "modality_name",
    "model_facts",
    "model_key",
    "require_predictor",
    "show_error",
    "upload_limit_mb",
]

log = logging.getLogger(__name__)

from dlum.settings import (  # noqa: E402  (re-exported for the pages)
    CHECKPOINT_ENV,
    COMPILE_ENV,
    DATA_ENV,
    DEFAULT_CHECKPOINT,
    FINDER_ENV,
    PRECISION_ENV,
    REPO_ROOT,
    read_settings,
)

PAPER_CITATION = (
    "Xu Z, Zhong S, Gao Y, et al. Optimizing breast lesions diagnosis and decision-making with a "
    "deep learning fusion model integrating ultrasound and mammography: a dual-center "
    "retrospective study. Breast Cancer Research, 2025."
)
PAPER_URL = "https://doi.org/10.1186/s13058-025-02033-6"

from dlum.constants import DISCLAIMER  # noqa: E402  (one text: pages and the PDF report)

# ------------------------------------------------------------------------------------ checkpoint
def checkpoint_dir() -> Path:
    """``$DLUM_CHECKPOINT``, else ``checkpoints/dlum-public-v2`` under the repository root."""
    return read_settings().checkpoint


def checkpoint_present(path: str | os.PathLike | None = None) -> bool:
    """True when the folder holds both ``card.json`` and ``model.safetensors``."""
    path = Path(path) if path is not None else checkpoint_dir()
    return (path / "card.json").is_file() and (path / "model.safetensors").is_file()


def _stamp(path: Path) -> float:
    """The weights' modification time: a new checkpoint in the same folder is a new cache key."""
    try:
        return (path / "model.safetensors").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading the DL-UM model…", max_entries=2)
def load_predictor(path: str, stamp: float = 0.0, precision: str | None = None) -> Predictor:
    """One :class:`dlum.inference.Predictor` per checkpoint (and precision) per process, shared
    by all sessions.

    ``stamp`` (the weights' mtime) is only part of the cache key; ``precision`` defaults to
    ``$DLUM_PRECISION``. Raises CheckpointError or SettingsError.
    """
    import numpy as np
    import torch

    from dlum.errors import CheckpointError
    from dlum.inference import Predictor

    settings = read_settings()
    predictor = Predictor(path, device="auto", precision=precision or settings.precision.value)
    # Warm up once here, while the spinner says the model is loading: the first pass through
    # the network picks its kernels (seconds on a CPU), and grad-cam is a heavy import.
    size = predictor.input_size
    out = predictor.forward(torch.zeros(1, 3, size, size), torch.zeros(1, 3, size, size))
    broken = {"p_dlum": "p_dlum", "us_blocks": "p_us_head", "mg_blocks": "p_mg_head"}
    broken = [name for key, name in broken.items() if not np.isfinite(out[key]).all()]
    if broken:  # damaged weights: refuse now, on every page, rather than give NaN later
        raise CheckpointError(f"{path}: the weights give a non-finite output ({', '.join(broken)}) "
                              "on a blank image: they are damaged; no prediction can be made")
    import pytorch_grad_cam  # noqa: F401

    if settings.compile:
        predictor.compile_in_background()  # opt-in: ≤ 9% gain measured on 2-core CPUs
    log.info("loaded %s on %s", path, predictor.device_name)
    return predictor


def dashboard_precision() -> str:
    """``$DLUM_PRECISION`` (auto, fp32 or bf16); another value is a SettingsError naming it."""
    return read_settings().precision.value


def get_predictor() -> Predictor | None:
    """The shared predictor, or None when no checkpoint is present. Raises CheckpointError."""
    path = checkpoint_dir()
    if not checkpoint_present(path):
        return None
    return load_predictor(str(path), _stamp(path), read_settings().precision.value)


def missing_checkpoint_message() -> str:
    path = checkpoint_dir()
    try:
        shown = path.relative_to(REPO_ROOT)
    except ValueError:
        shown = path
    return (
        f"No DL-UM checkpoint found at `{shown}` (a folder with `model.safetensors` and "
        f"`card.json`). Train one (`python -m dlum train …`) or point `{CHECKPOINT_ENV}` at a "
        "checkpoint folder, then reload this page."
    )


def require_predictor() -> Predictor:
    """The shared predictor; otherwise show why there is none and stop the page here."""
    try:
        predictor = get_predictor()
    except DLUMError as exc:
        show_error(exc)
        st.stop()
    if predictor is None:
        st.info(missing_checkpoint_message(), icon=":material/info:")
        st.stop()
    return predictor


def model_key(predictor: Predictor) -> str:
    """A string naming the loaded weights, for keys of cached results."""
    path = Path(predictor.checkpoint)
    return f"{path.resolve()}@{_stamp(path)}:{predictor.version}"


def device_summary(predictor: Predictor | None = None) -> str:
    """'GPU: <name>' or 'CPU: <name> (n threads)' plus the precision used for probabilities."""
    if predictor is not None:
        kind = "GPU" if predictor.device.type == "cuda" else "CPU"
        name = predictor.device_name
        name = name if name.startswith(kind) else f"{kind}: {name}"
        precision = str(predictor.dtype).replace("torch.", "")
        return f"{name} · probabilities in {precision}, CAMs in float32"
    from dlum.runtime import describe_device, resolve_device

    device = resolve_device("auto")
    name = describe_device(device)
    return name if device.type != "cuda" else f"GPU: {name}"


def model_facts(predictor: Predictor) -> dict[str, Any]:
    """Name, architecture, parameter count, input size, threshold and device of the loaded model."""
    from dlum.networks import count_parameters

    return {
        "name": predictor.version,
        "arch": predictor.card.arch.title,
        "parameters": int(count_parameters(predictor.model)),
        "input_size": predictor.input_size,
        "threshold": predictor.card.threshold,
        "device": device_summary(predictor),
        "gpu": predictor.device.type == "cuda",
    }


# --------------------------------------------------------------------------------- lesion finder
@dataclass(frozen=True)
class FinderStatus:
    """The shared ultrasound lesion finder, or why there is none.

    ``key`` names the loaded weights (for keys of cached findings); ``message`` says, for a
    person, why ``finder`` is None."""

    finder: LesionFinder | None
    key: str = ""
    message: str = ""


def finder_dir() -> Path:
    """``$DLUM_FINDER``, else ``checkpoints/us-finder-v1`` under the repository root."""
    return read_settings().finder


def _finder_stamp(path: Path) -> float:
    """Newest modification time of the finder's card and weights (part of the cache key)."""
    stamps = []
    for name in ("card.json", "model.safetensors"):
        try:
            stamps.append((path / name).stat().st_mtime)
        except OSError:
            pass
    return max(stamps, default=0.0)


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(REPO_ROOT)
    except ValueError:
        return path


@st.cache_resource(show_spinner="Loading the lesion finder…", max_entries=2)
def load_finder(path: str, stamp: float = 0.0) -> FinderStatus:
    """The finder of ``path``, loaded once per process (``stamp``, the files' mtime, is only part
    of the cache key). A finder that cannot be loaded gives a status with the reason, cached
    too, so that a damaged checkpoint is not read again on every rerun."""
    from dlum.localize import load_finder as _load

    folder = Path(path)
    try:
        finder = _load(folder)
    except DLUMError as exc:
        log.warning("lesion finder not loaded: %s", exc)
        return FinderStatus(None, "", f"The ultrasound lesion finder could not be loaded ({exc}): "
                                      "draw the lesion box by hand.")
    except Exception as exc:  # a bug, not a user error: logged, and the page goes on without it
        log.exception("unexpected error loading the lesion finder", exc_info=exc)
        return FinderStatus(None, "", f"The ultrasound lesion finder could not be loaded "
                                      f"({type(exc).__name__}; details in the server log): "
                                      "draw the lesion box by hand.")
    log.info("loaded the lesion finder %s", folder)
    return FinderStatus(finder, f"{folder.resolve()}@{stamp}:{finder.name}")


def get_finder() -> FinderStatus:
    """The shared ultrasound lesion finder, or a status saying why there is none (no folder,
    damaged files). Never raises for a missing or damaged finder: the page works without one."""
    try:
        path = finder_dir()
    except DLUMError as exc:
        return FinderStatus(None, "", f"{exc}: draw the lesion box by hand.")
    if not path.is_dir():
        return FinderStatus(None, "", f"No ultrasound lesion finder at `{_shown(path)}`: draw the "
                                      f"lesion box by hand (or point `{FINDER_ENV}` at a finder "
                                      "checkpoint folder).")
    return load_finder(str(path), _finder_stamp(path))


# --------------------------------------------------------------------------------------- errors
#: Problems of a table listed on a page; the rest are counted and offered as a download.
SHOWN_PROBLEMS = 20


def show_error(exc: BaseException, *, container: Any = None, key: str = "problems") -> None:
    """Show an error as a message for a person (``st.error``), never as a traceback.

    dlum's own errors carry a message meant for the user; a CohortError shows its first
    :data:`SHOWN_PROBLEMS` problems, the count of the rest, and the full list as a CSV download.
    Anything else is logged on the server and reported in one line.
    """
    target = container if container is not None else st
    if isinstance(exc, CohortError):
        from dlum.tables import csv_bytes, problems_frame

        head = f"**{exc.source}**: " if exc.source else ""
        items = "\n".join(f"- {p}" for p in exc.problems[:SHOWN_PROBLEMS])
        rest = exc.count - min(len(exc.problems), SHOWN_PROBLEMS)
        more = f"\n\n… and {rest} more problem(s)." if rest > 0 else ""
        target.error(f"{head}{exc.count} problem(s) in the table:\n\n{items}{more}",
                     icon=":material/error:")
        if rest > 0:
            note = (f" (the first {len(exc.problems)}; {exc.more} more were counted, not listed)"
                    if exc.more else "")
            target.download_button(f"Download all problems (CSV){note}",
                                   csv_bytes(problems_frame(exc)),
                                   file_name="problems.csv", mime="text/csv", on_click="ignore",
                                   key=f"download_{key}", icon=":material/download:")
    elif isinstance(exc, DLUMError):
        target.error(str(exc), icon=":material/error:")
    else:
        log.exception("unexpected error in the dashboard", exc_info=exc)
        target.error(
            f"Something went wrong ({type(exc).__name__}). The details are in the server log.",
            icon=":material/error:",
        )


def upload_limit_mb() -> int:
    """The upload limit per file (``server.maxUploadSize`` in ``.streamlit/config.toml``)."""
    try:
        return int(st.get_option("server.maxUploadSize"))
    except Exception:  # pragma: no cover - option always exists in supported versions
        return 200


# ------------------------------------------------------------------------------------- examples
def data_dir() -> Path | None:
    """The public data folder (``$DLUM_DATA_DIR`` or ``../shared/data``), or None when absent."""
    from dlum.data.public import default_data_dir

    return default_data_dir()


@st.cache_data(show_spinner=False, ttl=3600)
def example_catalogue(root: str | None = "auto") -> list[ExampleCase]:
    """:func:`dlum.data.examples.example_catalogue` (phantoms, then public test-split
    pseudo-pairs of the loaded checkpoint), cached; ``root=None`` gives phantoms only."""
    folder = data_dir() if root == "auto" else (Path(root) if root else None)
    return examples.example_catalogue(folder, checkpoint_dir())


@st.cache_data(show_spinner=False, max_entries=8, ttl=3600)
def load_example(case: ExampleCase) -> dict[str, Any]:
    """:func:`dlum.data.examples.load_example`, cached."""
    return examples.load_example(case)


def modality_name(modality: str) -> str:
    return MODALITY_NAMES.get(modality, modality)
