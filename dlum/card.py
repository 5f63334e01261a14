"""The model card: what a checkpoint is, how it was made, its operating points and results.

A checkpoint folder holds ``model.safetensors`` and ``card.json``. This module is the one reader
and writer of ``card.json`` (no torch): :func:`read_card` parses it once into frozen dataclasses
and validates it (types, ranges, finite numbers; a bad card names the field), training and
``python -m dlum report`` write it with :func:`write_card` (a temporary file, then a rename).
The schema is documented in ``docs/card.md``.

Operating points follow the DL-UM evaluation (Xu et al., Breast Cancer Research 2025): each
output (``p_dlum`` fused, ``p_us_head`` / ``p_mg_head`` DL-UM's block-5 branch heads, ``p_dlu``,
``p_dlm`` the single-modality models) has its own threshold on P(malignant), chosen on the
validation split; results are reported per held-out split (``test``, ``external``) and subgroup.

>>> card = Card.from_dict({"name": "demo", "arch": "dlum", "model": {"arch": "dlum"},
...                        "operating_point": {"thresholds_per_model": {"p_dlum": 0.44}}})
>>> card.threshold_for("p_dlum"), card.threshold_for("p_us_head")
(0.44, None)
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlum.constants import ALL, INPUT_SIZE, ROI_EXPANSION, Arch
from dlum.errors import CheckpointError
from dlum.files import write_text_atomic

__all__ = [
    "CARD_FILE",
    "CardError",
    "Estimate",
    "OutputMetrics",
    "SubgroupMetrics",
    "OperatingPoint",
    "InputSpec",
    "Card",
    "read_card",
    "write_card",
    "json_ready",
    "results_rows",
    "card_sections",
]

CARD_FILE = "card.json"


class CardError(CheckpointError):
    """A card that is missing, unreadable or holds a value dlum cannot use; names the field."""


# ------------------------------------------------------------------------------------- checks
def _number(value: Any, where: str, *, low: float | None = None, high: float | None = None,
            optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CardError(f"{where}: {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise CardError(f"{where}: {value!r} is not a finite number")
    if (low is not None and number < low) or (high is not None and number > high):
        raise CardError(f"{where}: {number:g} is outside [{low:g}, {high:g}]")
    return number


def _probability(value: Any, where: str, optional: bool = True) -> float | None:
    return _number(value, where, low=0.0, high=1.0, optional=optional)


def _interval(value: Any, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CardError(f"{where}: {value!r} is not a pair [low, high]")
    # an interval may be undefined (null) when its estimate is
    if value[0] is None or value[1] is None:
        return None
    low = _number(value[0], f"{where}[0]", optional=False)
    high = _number(value[1], f"{where}[1]", optional=False)
    if low > high:
        raise CardError(f"{where}: low {low:g} above high {high:g}")
    return (low, high)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CardError(f"{where}: expected an object, got {type(value).__name__}")
    return dict(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise CardError(f"{where}: {value!r} is not a whole number")
    if value < 0:
        raise CardError(f"{where}: {value!r} is negative")
    return int(value)


# -------------------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Estimate:
    """A proportion or AUC with its 95% CI (either may be undefined)."""

    value: float | None
    ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class OutputMetrics:
    """One output's results in one subgroup: AUC (DeLong CI, and where the cases are clustered a
    cluster-bootstrap CI), sensitivity and specificity (Wilson CIs) at the output's own
    threshold, and calibration (ECE over 10 equal-count bins, Brier score)."""

    auc: Estimate
    sensitivity: Estimate
    specificity: Estimate
    auc_cluster_ci: tuple[float, float] | None = None
    ece: float | None = None
    brier: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> OutputMetrics:
        d = _mapping(d, where)
        parts: dict[str, Any] = {}
        for key in ("auc", "sensitivity", "specificity"):
            parts[key] = Estimate(_probability(d.get(key), f"{where}.{key}"),
                                  _interval(d.get(f"{key}_ci"), f"{where}.{key}_ci"))
        parts["auc_cluster_ci"] = _interval(d.get("auc_cluster_ci"), f"{where}.auc_cluster_ci")
        parts["ece"] = _probability(d.get("ece"), f"{where}.ece")
        parts["brier"] = _probability(d.get("brier"), f"{where}.brier")
        return cls(**parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("auc", "sensitivity", "specificity"):
            e = getattr(self, key)
            out[key] = e.value
            out[f"{key}_ci"] = list(e.ci) if e.ci else None
        for key in ("auc_cluster_ci", "ece", "brier"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class SubgroupMetrics:
    """Cases of one subgroup of one split, each output's metrics, and DeLong p-values of DL-UM
    against each other model (``delong_p["p_dlu"]`` = p of p_dlum vs p_dlu)."""

    n: int
    malignant: int
    benign: int
    outputs: dict[str, OutputMetrics]
    delong_p: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SubgroupMetrics:
        d = _mapping(d, where)
        outputs = {k: OutputMetrics.from_dict(v, f"{where}.{k}") for k, v in d.items()
                   if k.startswith("p_")}
        delong = {f"p_{k[len('delong_p_dlum_vs_'):]}": _probability(v, f"{where}.{k}")
                  for k, v in d.items() if k.startswith("delong_p_dlum_vs_")}
        return cls(_int(d.get("n", 0), f"{where}.n"), _int(d.get("malignant", 0), f"{where}.malignant"),
                   _int(d.get("benign", 0), f"{where}.benign"), outputs, delong)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "malignant": self.malignant, "benign": self.benign}
        out.update({k: v.to_dict() for k, v in self.outputs.items()})
        out.update({f"delong_p_dlum_vs_{k[2:]}": v for k, v in self.delong_p.items()})
        return out


@dataclass(frozen=True)
class OperatingPoint:
    """Each output's threshold on P(malignant) (biopsy when P >= threshold), how it was chosen,
    and the validation sensitivity / specificity of DL-UM's."""

    thresholds: dict[str, float]
    chosen_on: str = "validation"
    rule: str = ""
    min_sensitivity: float | None = None
    validation_sensitivity: float | None = None
    validation_specificity: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "operating_point") -> OperatingPoint:
        d = _mapping(d, where)
        raw = _mapping(d.get("thresholds_per_model"), f"{where}.thresholds_per_model")
        thresholds = {str(k): _probability(v, f"{where}.thresholds_per_model.{k}", optional=False)
                      for k, v in raw.items()}
        if "threshold" in d:  # DL-UM's, also stored on its own
            fused = _probability(d["threshold"], f"{where}.threshold", optional=False)
            if "p_dlum" in thresholds and abs(thresholds["p_dlum"] - fused) > 1e-9:
                raise CardError(f"{where}.threshold ({fused:g}) differs from "
                                f"{where}.thresholds_per_model.p_dlum ({thresholds['p_dlum']:g})")
            thresholds.setdefault("p_dlum", fused)
        for key in ("chosen_on", "rule"):
            if key in d and not isinstance(d[key], str):
                raise CardError(f"{where}.{key}: {d[key]!r} is not text")
        return cls(
            thresholds=thresholds,
            chosen_on=str(d.get("chosen_on", "validation")),
            rule=str(d.get("rule", "")),
            min_sensitivity=_probability(d.get("min_sensitivity"), f"{where}.min_sensitivity"),
            validation_sensitivity=_probability(d.get("validation_sensitivity"),
                                                f"{where}.validation_sensitivity"),
            validation_specificity=_probability(d.get("validation_specificity"),
                                                f"{where}.validation_specificity"),
        )

    @property
    def threshold(self) -> float | None:
        """DL-UM's (the fused output's) threshold."""
        return self.thresholds.get("p_dlum")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        out.update({"chosen_on": self.chosen_on, "rule": self.rule,
                    "min_sensitivity": self.min_sensitivity,
                    "validation_sensitivity": self.validation_sensitivity,
                    "validation_specificity": self.validation_specificity,
                    "thresholds_per_model": dict(self.thresholds)})
        return out


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes network input (Xu et al. 2025): the ROI grown by ``roi_expansion`` of
    its shortest side, resized to ``size`` × ``size``, min–max scaled, ImageNet-normalised."""

    size: int = INPUT_SIZE
    imagenet_normalisation: bool = False
    roi_expansion: float = ROI_EXPANSION
    intensity: str = "min-max to [0, 1] per crop"

    @classmethod
    def from_dict(cls, d: Any, where: str = "input") -> InputSpec:
        d = _mapping(d, where)
        size = _int(d.get("size", INPUT_SIZE), f"{where}.size")
        if not 32 <= size <= 1024:
            raise CardError(f"{where}.size: {size} is outside [32, 1024]")
        imagenet = d.get("imagenet_normalisation", False)
        if not isinstance(imagenet, bool):
            raise CardError(f"{where}.imagenet_normalisation: {imagenet!r} is not true/false")
        expansion = _number(d.get("roi_expansion", ROI_EXPANSION), f"{where}.roi_expansion",
                            low=0.0, high=2.0, optional=False)
        return cls(size, imagenet, expansion, str(d.get("intensity", cls.intensity)))

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "imagenet_normalisation": self.imagenet_normalisation,
                "roi_expansion": self.roi_expansion, "intensity": self.intensity}


#: Sections the dataclass holds as fields; any other top-level key is kept in ``extra``.
_KNOWN = ("name", "arch", "model", "initialisation", "input", "training", "hardware", "data",
          "code_commit", "baselines", "trained_on", "operating_point", "metrics", "test_metrics")


@dataclass(frozen=True)
class Card:
    """A checkpoint's card. ``metrics[split][subgroup]`` holds held-out results (``test``,
    ``external``); sections dlum only displays (training, hardware, data, …) stay mappings."""

    name: str
    arch: Arch
    model: dict[str, Any]
    input: InputSpec = field(default_factory=InputSpec)
    initialisation: str | None = None
    operating_point: OperatingPoint | None = None
    metrics: dict[str, dict[str, SubgroupMetrics]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    code_commit: str | None = None
    baselines: dict[str, Any] = field(default_factory=dict)
    trained_on: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = CARD_FILE) -> Card:
        """Parse and validate a card; CardError names the file and the field."""
        try:
            return cls._parse(d)
        except CardError as err:
            raise CardError(f"{source}: {err}") from None

    @classmethod
    def _parse(cls, d: Any) -> Card:
        if not isinstance(d, Mapping):
            raise CardError(f"the card is not a JSON object ({type(d).__name__})")
        model = _mapping(d.get("model"), "model")
        if "model" not in d:
            raise CardError("model: missing (the network's configuration)")
        arch_text = d.get("arch", model.get("arch", Arch.DLUM.value))
        try:
            arch = Arch(str(arch_text).lower())
        except ValueError:
            raise CardError(f"arch: {arch_text!r} is not one of "
                            f"{', '.join(a.value for a in Arch)}") from None
        metrics: dict[str, dict[str, SubgroupMetrics]] = {}
        raw_metrics = _mapping(d.get("metrics"), "metrics")
        if "test_metrics" in d and "test" not in raw_metrics:  # cards written before splits
            raw_metrics["test"] = d["test_metrics"]
        for split, groups in raw_metrics.items():
            groups = _mapping(groups, f"metrics.{split}")
            metrics[str(split)] = {str(g): SubgroupMetrics.from_dict(v, f"metrics.{split}.{g}")
                                   for g, v in groups.items()}
        op = d.get("operating_point")
        for key in ("name", "initialisation", "code_commit", "trained_on"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise CardError(f"{key}: {d[key]!r} is not text")
        return cls(
            name=str(d.get("name", "")),
            arch=arch,
            model=model,
            input=InputSpec.from_dict(d.get("input")),
            initialisation=d.get("initialisation"),
            operating_point=OperatingPoint.from_dict(op) if op else None,
            metrics=metrics,
            training=_mapping(d.get("training"), "training"),
            hardware=_mapping(d.get("hardware"), "hardware"),
            data=_mapping(d.get("data"), "data"),
            code_commit=d.get("code_commit"),
            baselines=_mapping(d.get("baselines"), "baselines"),
            trained_on=d.get("trained_on"),
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )

    # -- facts ---------------------------------------------------------------------------
    def threshold_for(self, output: str) -> float | None:
        """The card's threshold for an output column (``p_dlum``, ``p_us_head``, …), or None."""
        return None if self.operating_point is None else self.operating_point.thresholds.get(output)

    @property
    def threshold(self) -> float | None:
        """DL-UM's operating threshold, or None when the card has no operating point."""
        return self.threshold_for("p_dlum")

    def results(self, output: str, split: str = "test", subgroup: str = ALL) -> OutputMetrics | None:
        """Held-out results of one output, or None when the card has none."""
        group = self.metrics.get(split, {}).get(subgroup)
        return None if group is None else group.outputs.get(output)

    @property
    def pairing(self) -> str:
        value = self.data.get("pairing", "")
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value)

    @property
    def pseudo_paired(self) -> bool:
        return "pseudo" in self.pairing.lower()

    # -- writing -------------------------------------------------------------------------
    def with_results(self, operating_point: OperatingPoint,
                     metrics: dict[str, dict[str, SubgroupMetrics]]) -> Card:
        """A copy with a new operating point and held-out metrics (``report`` writes these)."""
        from dataclasses import replace

        return replace(self, operating_point=operating_point, metrics=metrics)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arch": self.arch.value, "model": self.model,
                               "initialisation": self.initialisation, "input": self.input.to_dict(),
                               "training": self.training, "hardware": self.hardware,
                               "data": self.data, "code_commit": self.code_commit}
        if self.baselines:
            out["baselines"] = self.baselines
        if self.trained_on:
            out["trained_on"] = self.trained_on
        out.update(self.extra)
        if self.operating_point is not None:
            out["operating_point"] = self.operating_point.to_dict()
        if self.metrics:
            out["metrics"] = {s: {g: m.to_dict() for g, m in groups.items()}
                              for s, groups in self.metrics.items()}
        return json_ready(out)


def json_ready(obj: Any) -> Any:
    """Plain JSON values: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return json_ready(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ----------------------------------------------------------------------------------- file I/O
def _card_path(location: str | os.PathLike) -> Path:
    path = Path(location)
    return path / CARD_FILE if path.is_dir() or path.suffix != ".json" else path


def read_card(location: str | os.PathLike) -> Card:
    """The card of a checkpoint folder (or a ``card.json`` path), parsed and validated."""
    path = _card_path(location)
    if not path.is_file():
        raise CardError(f"{location}: no {CARD_FILE} (is this a dlum checkpoint folder?)")
    if path.stat().st_size > 10 * 2**20:
        raise CardError(f"{path}: larger than 10 MiB; not a dlum card")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CardError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return Card.from_dict(data, str(path))


def write_card(directory: str | os.PathLike, card: Card | Mapping[str, Any]) -> Path:
    """Write ``card.json`` into ``directory`` atomically (a temporary file, then a rename), after
    checking that it reads back as a valid card: a failed write leaves the old card as it was."""
    directory = Path(directory)
    if not isinstance(card, Card):
        card = Card.from_dict(dict(card), str(directory / CARD_FILE))
    text = json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n"
    Card.from_dict(json.loads(text), str(directory / CARD_FILE))  # what is written reads back
    directory.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(directory / CARD_FILE, text)


# ------------------------------------------------------------------------------------ display
def results_rows(card: Card) -> list[dict[str, str]]:
    """One row per held-out split, subgroup and output: cases, the output's own threshold, AUC
    [95% CI], sensitivity and specificity [95% CI] — what the Home page shows."""
    from dlum.formatting import format_ci, format_pct_ci
    from dlum.predictions import model_name

    rows = []
    for split, groups in card.metrics.items():
        for subgroup, entry in groups.items():
            for output, m in entry.outputs.items():
                threshold = card.threshold_for(output)
                rows.append({
                    "split": split,
                    "subgroup": subgroup,
                    "model": model_name(output),
                    "cases (malignant / benign)": f"{entry.n} ({entry.malignant} / {entry.benign})",
                    "threshold": "—" if threshold is None else f"{threshold:.3f}",
                    "AUC [95% CI]": format_ci(m.auc.value, *(m.auc.ci or (None, None))),
                    "sensitivity [95% CI]": format_pct_ci(m.sensitivity.value,
                                                          *(m.sensitivity.ci or (None, None))),
                    "specificity [95% CI]": format_pct_ci(m.specificity.value,
                                                          *(m.specificity.ci or (None, None))),
                })
    return rows


def card_sections(card: Card) -> dict[str, Any]:
    """The parts of a card the Home page shows as tabs, each only when the card has it:
    ``identity``, ``data``, ``pairing_rule``, ``operating_point``, ``results``, ``training``,
    ``other``."""
    identity = {k: v for k, v in (("name", card.name), ("architecture", card.arch.title),
                                  ("initialisation", card.initialisation),
                                  ("code commit", card.code_commit)) if v}
    identity.update({f"input {k.replace('_', ' ')}": v for k, v in card.input.to_dict().items()})
    data = dict(card.data)
    pairing_rule = data.pop("pairing_rule", None) or card.extra.get("pairing_rule")
    keep = ("epochs", "epochs_run", "epoch_kept", "best_val_loss", "best_val_auc", "train_rows",
            "validation_rows", "batch_size", "lr", "precision", "seconds")
    out: dict[str, Any] = {
        "identity": identity,
        "data": data,
        "pairing_rule": pairing_rule,
        "operating_point": card.operating_point.to_dict() if card.operating_point else None,
        "results": results_rows(card),
        "training": {k: card.training[k] for k in keep if k in card.training},
        "other": {k: v for k, v in card.extra.items() if k != "pairing_rule"},
    }
    return {k: v for k, v in out.items() if v}
