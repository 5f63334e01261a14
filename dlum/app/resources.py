"""What every dashboard page shares: the model, the checkpoint, the device, errors, examples.

* The DL-UM checkpoint (Xu et al., Breast Cancer Research 2025) is ``$DLUM_CHECKPOINT``, else
  ``checkpoints/dlum-public-v1`` in the repository. It is loaded once per process with
  ``st.cache_resource`` and shared by every session: nobody mutates it (CAMs work on a private
  copy, see :mod:`dlum.visualize.cam`).
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

from dlum.constants import MG, MODALITY_NAMES, US
from dlum.errors import CohortError, DLUMError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from dlum.inference import Predictor

__all__ = [
    "CHECKPOINT_ENV",
    "COMPILE_ENV",
    "DATA_ENV",
    "DEFAULT_CHECKPOINT",
    "DISCLAIMER",
    "PAPER_CITATION",
    "PAPER_URL",
    "PHANTOM",
    "PSEUDO_PAIR",
    "REPO_ROOT",
    "ExampleCase",
    "card_overview",
    "card_table",
    "OUTPUT_NAMES",
    "test_metrics_table",
    "checkpoint_dir",
    "checkpoint_present",
    "data_dir",
    "device_summary",
    "example_catalogue",
    "get_predictor",
    "load_example",
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

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_ENV = "DLUM_CHECKPOINT"
DATA_ENV = "DLUM_DATA_DIR"
#: ``DLUM_COMPILE=1`` makes the dashboard ``torch.compile`` its model in a background thread
#: (see ``Predictor.compile_pair_path``; off by default: ≤ 9% gain measured on the project's CPUs).
COMPILE_ENV = "DLUM_COMPILE"
#: ``DLUM_PRECISION`` = ``auto`` (default: bf16 on GPUs and CPUs with native bf16, else fp32),
#: ``fp32`` (reproduces ``predictions.csv`` to ~1e-6) or ``bf16``: the precision of probabilities.
PRECISION_ENV = "DLUM_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16")
#: The shipped checkpoint, relative to the repository root.
DEFAULT_CHECKPOINT = Path("checkpoints", "dlum-public-v1")

PAPER_CITATION = (
    "Xu Z, Zhong S, Gao Y, et al. Optimizing breast lesions diagnosis and decision-making with a "
    "deep learning fusion model integrating ultrasound and mammography: a dual-center "
    "retrospective study. Breast Cancer Research, 2025."
)
PAPER_URL = "https://doi.org/10.1186/s13058-025-02033-6"

DISCLAIMER = (
    "**For research use only.** Not a medical device and not for clinical decisions. "
    "The shipped model was trained on public single-modality datasets paired across different "
    "women (pseudo-pairs); its outputs describe that demonstration cohort, not your patients."
)

#: Kinds of example case.
PHANTOM = "synthetic phantom"
PSEUDO_PAIR = "public pseudo-pair"


# ------------------------------------------------------------------------------------ checkpoint
def checkpoint_dir() -> Path:
    """``$DLUM_CHECKPOINT``, else ``checkpoints/dlum-public-v1`` under the repository root."""
    env = os.environ.get(CHECKPOINT_ENV, "").strip()
    path = Path(env) if env else DEFAULT_CHECKPOINT
    return path if path.is_absolute() else REPO_ROOT / path


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
def load_predictor(path: str, stamp: float = 0.0) -> Predictor:
    """One :class:`dlum.inference.Predictor` per checkpoint per process, shared by all sessions.

    ``stamp`` (the weights' mtime) is only part of the cache key. Raises CheckpointError.
    """
    import torch

    from dlum.inference import Predictor

    predictor = Predictor(path, device="auto", precision=dashboard_precision())
    # Warm up once here, while the spinner says the model is loading: the first pass through
    # the network picks its kernels (seconds on a CPU), and grad-cam is a heavy import.
    size = predictor.input_size
    predictor.forward(torch.zeros(1, 3, size, size), torch.zeros(1, 3, size, size))
    import pytorch_grad_cam  # noqa: F401

    if os.environ.get(COMPILE_ENV, "0") == "1":
        predictor.compile_in_background()  # opt-in: ≤ 9% gain measured on 2-core CPUs
    log.info("loaded %s on %s", path, predictor.device_name)
    return predictor


def dashboard_precision() -> str:
    """``$DLUM_PRECISION`` when it is one of :data:`PRECISIONS`, else ``"auto"`` (with a warning)."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if value not in PRECISIONS:
        log.warning("%s=%r is not one of %s; using auto", PRECISION_ENV, value, ", ".join(PRECISIONS))
        return "auto"
    return value


def get_predictor() -> Predictor | None:
    """The shared predictor, or None when no checkpoint is present. Raises CheckpointError."""
    path = checkpoint_dir()
    if not checkpoint_present(path):
        return None
    return load_predictor(str(path), _stamp(path))


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
        "arch": str(predictor.card.get("arch", "dlum")),
        "parameters": int(count_parameters(predictor.model)),
        "input_size": predictor.input_size,
        "threshold": predictor.threshold,
        "device": device_summary(predictor),
        "gpu": predictor.device.type == "cuda",
    }


# ----------------------------------------------------------------------------------------- card
def card_overview(card: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint card the Home page shows, each only when the card has it.

    Keys: ``identity`` (name, architecture, initialisation, input), ``data``, ``pairing_rule``
    (top level or inside ``data``), ``operating_point``, ``test_metrics``, ``training`` (a short
    summary), ``other`` (any remaining top-level sections).
    """
    card = dict(card or {})
    out: dict[str, Any] = {}
    identity = {}
    for key, label in (("name", "name"), ("arch", "architecture"),
                       ("initialisation", "initialisation"), ("code_commit", "code commit")):
        if card.get(key) not in (None, ""):
            identity[label] = card[key]
    if isinstance(card.get("input"), dict):
        for key, value in card["input"].items():
            identity[f"input {key.replace('_', ' ')}"] = value
    out["identity"] = identity
    data = card.get("data")
    if isinstance(data, dict):
        data = dict(data)
        if "pairing_rule" in data and not card.get("pairing_rule"):
            card["pairing_rule"] = data.pop("pairing_rule")
        card["data"] = data
    for key in ("data", "pairing_rule", "operating_point", "test_metrics"):
        if card.get(key) not in (None, "", {}, []):
            out[key] = card[key]
    training = card.get("training")
    if isinstance(training, dict):
        keep = ("epochs", "epochs_run", "epoch_kept", "best_val_loss", "best_val_auc", "train_rows",
                "validation_rows", "batch_size", "lr", "precision", "seconds")
        out["training"] = {k: training[k] for k in keep if k in training}
    shown = {"name", "arch", "initialisation", "code_commit", "input", "model", "data",
             "pairing_rule", "operating_point", "test_metrics", "training"}
    other = {k: v for k, v in card.items() if k not in shown}
    if other:
        out["other"] = other
    return out


#: Output columns of ``predictions.csv`` / keys of a card's test metrics, as the pages name them.
OUTPUT_NAMES = {
    "p_dlum": "DL-UM (fused)",
    "p_dlu": "DL-U (US only model)",
    "p_dlm": "DL-M (MG only model)",
    "p_us_head": "DL-UM US branch head",
    "p_mg_head": "DL-UM MG branch head",
}


def test_metrics_table(metrics: Any) -> list[dict[str, Any]] | None:
    """Rows (subgroup, output, n, AUC [95% CI], sensitivity, specificity) of a card's
    ``test_metrics`` laid out as ``{subgroup: {n, malignant, benign, <output>: {auc, auc_ci,
    sensitivity, sensitivity_ci, specificity, specificity_ci}}}``; None for any other layout.
    """
    if not isinstance(metrics, dict):
        return None
    rows: list[dict[str, Any]] = []
    for subgroup, block in metrics.items():
        if not isinstance(block, dict):
            return None
        counts = ", ".join(f"{block[k]} {k}" for k in ("malignant", "benign") if k in block)
        for output, values in block.items():
            if not (isinstance(values, dict) and "auc" in values):
                continue
            rows.append({
                "subgroup": str(subgroup),
                "output": OUTPUT_NAMES.get(output, output),
                "cases": f"{block.get('n', '')}" + (f" ({counts})" if counts else ""),
                "AUC [95% CI]": _with_ci(values.get("auc"), values.get("auc_ci"), ".3f"),
                "sensitivity [95% CI]": _with_ci(values.get("sensitivity"),
                                                 values.get("sensitivity_ci"), ".1%"),
                "specificity [95% CI]": _with_ci(values.get("specificity"),
                                                 values.get("specificity_ci"), ".1%"),
            })
    return rows or None


def _with_ci(value: Any, ci: Any, fmt: str) -> str:
    try:
        text = format(float(value), fmt)
    except (TypeError, ValueError):
        return ""
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        try:
            text += f" [{format(float(ci[0]), fmt)}, {format(float(ci[1]), fmt)}]"
        except (TypeError, ValueError):
            pass
    return text


def card_table(section: Any) -> list[dict[str, str]]:
    """Rows ``{"item", "value"}`` for one card section; nested keys joined with " · "."""
    rows: list[dict[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix} · {key}" if prefix else str(key), sub)
        else:
            rows.append({"item": prefix.replace("_", " "), "value": _format_value(value)})

    walk("", section)
    return rows


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return "[" + ", ".join(_format_value(v) for v in value) + "]"
        return ", ".join(_format_value(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------------------- errors
def show_error(exc: BaseException, *, container: Any = None) -> None:
    """Show an error as a message for a person (``st.error``), never as a traceback.

    dlum's own errors carry a message meant for the user; a CohortError lists every problem.
    Anything else is logged on the server and reported in one line.
    """
    target = container if container is not None else st
    if isinstance(exc, CohortError):
        head = f"**{exc.source}**: " if exc.source else ""
        items = "\n".join(f"- {p}" for p in exc.problems)
        target.error(f"{head}{len(exc.problems)} problem(s) in the table:\n\n{items}",
                     icon=":material/error:")
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


@dataclass(frozen=True)
class ExampleCase:
    """One ready-made case for the Case Review page.

    ``kind`` is :data:`PHANTOM` or :data:`PSEUDO_PAIR`; ``label`` the pathology (1 = malignant)
    when known; ``us`` / ``mg`` are image paths (pseudo-pairs) or None (phantoms, generated).
    """

    key: str
    title: str
    kind: str
    description: str
    label: int | None = None
    us_birads: int | None = None
    mg_birads: int | None = None
    us: str | None = None
    mg: str | None = None
    us_box: tuple[int, int, int, int] | None = None
    mg_box: tuple[int, int, int, int] | None = None
    seed: int | None = None

    @property
    def pathology(self) -> str:
        return {0: "benign", 1: "malignant"}.get(self.label, "unknown")


#: Phantom examples: (seed, malignant).
_PHANTOMS = ((11, False), (12, True), (13, False), (14, True))


def _phantom_cases() -> list[ExampleCase]:
    try:
        from dlum.data.synthetic import make_phantom_case
    except ImportError:  # pragma: no cover - the generator ships with dlum
        return []
    cases = []
    for number, (seed, malignant) in enumerate(_PHANTOMS, start=1):
        case = make_phantom_case(seed, malignant)
        pathology = "malignant" if malignant else "benign"
        cases.append(ExampleCase(
            key=f"phantom-{seed}",
            title=f"Phantom {number} ({pathology}) · {PHANTOM}",
            kind=PHANTOM,
            description=(
                f"A generated {PHANTOM}, not a patient: an ultrasound-like and a "
                f"mammography-like image of a {pathology}-looking lesion, made by dlum for tests "
                "and demonstrations."
            ),
            label=int(malignant),
            us_birads=_int_or_none(case.get("us_birads")),
            mg_birads=_int_or_none(case.get("mg_birads")),
            us_box=_box_or_none(case.get("us_box")),
            mg_box=_box_or_none(case.get("mg_box")),
            seed=seed,
        ))
    return cases


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _box_or_none(box: Any) -> tuple[int, int, int, int] | None:
    if box is None:
        return None
    try:
        values = tuple(int(round(float(v))) for v in box)
    except (TypeError, ValueError):
        return None
    return values if len(values) == 4 else None  # type: ignore[return-value]


def _pseudo_pairs(root: Path) -> list[ExampleCase]:
    """A few BUS-BRA + mini-MIAS pseudo-pairs of the same pathology (fixed choice, no RNG)."""
    from dlum.data.public import read_busbra, read_mias

    us = read_busbra(root)
    mg = read_mias(root)
    mg = mg[mg[["x0", "y0", "x1", "y1"]].notna().all(axis=1)]
    # (pathology, US BI-RADS wanted, MG abnormality wanted)
    wanted = ((1, 5, "SPIC"), (0, 3, "CIRC"), (0, 4, "CIRC"), (1, 4, "CIRC"))
    cases: list[ExampleCase] = []
    used_us: set[str] = set()
    used_mg: set[str] = set()
    for number, (label, birads, abnormality) in enumerate(wanted, start=1):
        u = us[(us["label"] == label) & (us["birads"] == birads) & ~us["lesion_id"].isin(used_us)]
        m = mg[(mg["label"] == label) & (mg["abnormality"] == abnormality)
               & ~mg["film"].isin(used_mg)]
        if u.empty or m.empty:
            continue
        u, m = u.iloc[0], m.iloc[0]
        used_us.add(u["lesion_id"])
        used_mg.add(m["film"])
        pathology = "malignant" if label else "benign"
        cases.append(ExampleCase(
            key=f"pseudo-{u['lesion_id']}-{m['lesion_id']}",
            title=(f"Pseudo-pair {number} ({pathology}) · {u['lesion_id']} + {m['film']} · "
                   f"{PSEUDO_PAIR}, different women"),
            kind=PSEUDO_PAIR,
            description=(
                f"BUS-BRA ultrasound {u['lesion_id']} (reported BI-RADS "
                f"{birads}) and mini-MIAS mammogram {m['film']} ({m['kind'].replace('_', ' ')}) "
                f"— two DIFFERENT women whose lesions are both {pathology} at pathology. "
                "mini-MIAS gives no BI-RADS. For exercising the software only."
            ),
            label=int(label),
            us_birads=int(birads),
            mg_birads=None,
            us=str(u["image"]),
            mg=str(m["image"]),
            us_box=tuple(int(v) for v in u[["x0", "y0", "x1", "y1"]]),  # type: ignore[arg-type]
            mg_box=tuple(int(v) for v in m[["x0", "y0", "x1", "y1"]]),  # type: ignore[arg-type]
        ))
    return cases


@st.cache_data(show_spinner=False, ttl=3600)
def example_catalogue(root: str | None = "auto") -> list[ExampleCase]:
    """Phantoms first, then public pseudo-pairs when the public data folder is present.

    ``root="auto"`` looks the folder up (:func:`data_dir`); ``None`` gives phantoms only.
    """
    cases = _phantom_cases()
    folder = data_dir() if root == "auto" else (Path(root) if root else None)
    if folder is not None:
        try:
            cases += _pseudo_pairs(folder)
        except DLUMError as exc:  # an incomplete data folder only removes the real examples
            log.warning("public examples unavailable: %s", exc)
    return cases


@st.cache_data(show_spinner=False, max_entries=8, ttl=3600)
def load_example(case: ExampleCase) -> dict[str, Any]:
    """The example's images: ``{us, mg: float32 arrays, us_box, mg_box, us_name, mg_name}``."""
    if case.kind == PHANTOM:
        from dlum.data.synthetic import make_phantom_case

        made = make_phantom_case(case.seed, bool(case.label))
        images: dict[str, np.ndarray] = {US: made["us"], MG: made["mg"]}
        names = {m: f"{case.key}-{m}.png" for m in (US, MG)}
    else:
        from dlum.data.io import read_image

        images = {US: read_image(case.us), MG: read_image(case.mg)}
        names = {US: Path(case.us).name, MG: Path(case.mg).name}
    import numpy as np

    out: dict[str, Any] = {}
    for m in (US, MG):
        out[m] = np.asarray(images[m], dtype=np.float32)
        out[f"{m}_name"] = names[m]
        out[f"{m}_box"] = case.us_box if m == US else case.mg_box
    return out


def modality_name(modality: str) -> str:
    return MODALITY_NAMES.get(modality, modality)
