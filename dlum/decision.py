"""The one biopsy / follow-up rule of dlum (no torch, no streamlit).

DL-UM (Xu et al., Breast Cancer Research 2025) recommends a biopsy when P(malignant) reaches an
operating threshold. :func:`decide` is the only place that compares a probability with a
threshold for one case; the command line, the predictor and every dashboard page call it:

* a pair (both images) is judged on the fused output ``p_dlum`` at the card's DL-UM threshold;
* one image alone is judged on that branch's block-5 head (``p_us_head`` / ``p_mg_head``) at the
  head's own threshold, with the head's own test-split figures;
* a probability or threshold that is not a finite number in [0, 1] is an error, never a call;
* a read whose ROI was the whole image is outside what the network was trained on (lesion
  patches: the box plus 30%): no call is made until the user confirms the whole image is the
  lesion (``whole_image_confirmed``).

>>> from types import SimpleNamespace as NS
>>> from dlum.card import Card
>>> card = Card.from_dict({"arch": "dlum", "model": {}, "operating_point": {
...     "thresholds_per_model": {"p_dlum": 0.44, "p_us_head": 0.31}}})
>>> p = NS(mode="us-only", p_dlum=None, p_us_head=0.33, p_mg_head=None, precision="float32",
...        whole_image=())
>>> d = decide(p, card)
>>> d.label, d.output, d.threshold
('Biopsy recommended', 'p_us_head', 0.31)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from dlum.card import Card
from dlum.constants import DEFAULT_THRESHOLD, MODALITY_NAMES, Mode
from dlum.errors import DLUMError
from dlum.stats.calibration import CALIBRATED_ECE

__all__ = [
    "BF16_MARGIN",
    "BIOPSY",
    "FOLLOW_UP",
    "NO_CALL",
    "OUTPUT_OF_MODE",
    "OUTPUT_TITLES",
    "DecisionError",
    "Decision",
    "decide",
    "decision_text",
    "case_result",
]

BIOPSY, FOLLOW_UP, NO_CALL = "Biopsy recommended", "Follow-up", "No call: draw the lesion box"

#: The output each prediction mode is judged on.
OUTPUT_OF_MODE = {Mode.PAIR: "p_dlum", Mode.US_ONLY: "p_us_head", Mode.MG_ONLY: "p_mg_head"}
#: How a decision names the output it was made on.
OUTPUT_TITLES = {Mode.PAIR: "DL-UM (fused US + MG)", Mode.US_ONLY: "US branch only (block-5 head)",
                 Mode.MG_ONLY: "MG branch only (block-5 head)"}

#: How far bf16 moved the shipped checkpoint's fused P(malignant) from fp32 on the public test
#: split (at most 0.022, ``python -m benchmarks.bench_precision``), rounded up: a call made in
#: bf16 closer than this to its threshold is marked as one that fp32 might make otherwise.
BF16_MARGIN = 0.025


class DecisionError(DLUMError, ValueError):
    """A probability or threshold that cannot be judged (NaN, infinite, outside [0, 1])."""


class PredictionLike(Protocol):
    mode: str
    p_dlum: float | None
    p_us_head: float | None
    p_mg_head: float | None
    precision: str


@dataclass(frozen=True)
class Decision:
    """The call on one case, with the threshold and figures it rests on.

    ``biopsy_recommended`` is None when no call was made (``withheld`` says why).
    ``threshold_source``: ``card`` (the checkpoint's operating point) or ``default`` (the card
    has none: 0.5, with no measured figures).
    """

    biopsy_recommended: bool | None
    label: str
    probability: float
    threshold: float
    output: str
    output_title: str
    mode: str
    threshold_source: str
    sensitivity: float | None = None
    specificity: float | None = None
    sensitivity_ci: tuple[float, float] | None = None
    specificity_ci: tuple[float, float] | None = None
    withheld: str | None = None
    ece: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def calibrated(self) -> bool | None:
        """Whether the output's test-split ECE is at most 0.05 (None: the card does not say)."""
        return None if self.ece is None else self.ece <= CALIBRATED_ECE

    def calibration_text(self) -> str:
        """What P(malignant) may be read as, from the output's test-split calibration."""
        if self.ece is None:
            return "Calibration unknown (the card has no ECE): read P as a score, not a risk."
        if self.calibrated:
            return f"P is calibrated on the test split (ECE {self.ece:.3f}): it can be read as a risk."
        return (f"P is not calibrated (ECE {self.ece:.3f} on the test split): read it as a score "
                "that ranks cases, not as a risk.")

    @property
    def made(self) -> bool:
        return self.biopsy_recommended is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sensitivity_ci"] = list(self.sensitivity_ci) if self.sensitivity_ci else None
        d["specificity_ci"] = list(self.specificity_ci) if self.specificity_ci else None
        d["notes"] = list(self.notes)
        return d


def _checked(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DecisionError(f"{what} is {value!r}, not a number: no decision can be made") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise DecisionError(f"{what} is {number!r}, not a probability in [0, 1] (are the "
                            "weights or the card damaged?): no decision can be made")
    return number


def decide(prediction: PredictionLike, card: Card | None, *,
           whole_image_confirmed: bool = False) -> Decision:
    """Biopsy recommended when P(malignant) >= the output's operating threshold, else follow-up.

    Args:
        prediction: a :class:`dlum.inference.PairPrediction` (or anything with ``mode``,
            ``p_dlum``, ``p_us_head``, ``p_mg_head``, ``precision`` and ``whole_image``: the
            modalities read without a lesion box).
        card: the checkpoint's :class:`dlum.card.Card` (None: default threshold 0.5, no figures).
        whole_image_confirmed: the user confirms that each whole image given is the lesion.

    Raises:
        DecisionError: the probability or the threshold is not a finite number in [0, 1].
    """
    mode = Mode(prediction.mode)
    output = OUTPUT_OF_MODE[mode]
    probability = _checked(getattr(prediction, output), f"P(malignant) of {output}")
    notes: list[str] = []
    threshold = card.threshold_for(output) if card is not None else None
    source = "card"
    if threshold is None:
        threshold, source = DEFAULT_THRESHOLD, "default"
        notes.append(f"The checkpoint card gives no operating threshold for {output}: "
                     f"{DEFAULT_THRESHOLD:g} is a default, with no measured sensitivity or "
                     "specificity.")
    threshold = _checked(threshold, f"the operating threshold of {output}")
    results = card.results(output) if (card is not None and source == "card") else None
    if mode != Mode.PAIR:
        notes.append("One image only: this is that branch's own output, not the DL-UM fusion, "
                     "judged at the branch head's own operating threshold.")
    if getattr(prediction, "precision", "") == "bfloat16" and abs(probability - threshold) < BF16_MARGIN:
        notes.append(f"P was computed in bfloat16 and lies within {BF16_MARGIN} of the threshold; "
                     "bfloat16 moved P by up to 0.022 from float32 on the public test split, so "
                     "float32 (DLUM_PRECISION=fp32) might make the other call.")
    whole = [m for m in getattr(prediction, "whole_image", ()) or ()]
    withheld = None
    if whole and not whole_image_confirmed:
        names = " and ".join(MODALITY_NAMES.get(m, m) for m in whole)
        withheld = (f"The {names} image was read whole, without a lesion box: outside what the "
                    "model was trained on (lesion patches, the box plus 30%). Draw the lesion box, "
                    "or confirm that the whole image is the lesion.")
    elif whole:
        notes.append("The whole image was confirmed as the lesion; the model was trained on "
                     "lesion patches, so treat this call with extra caution.")
    biopsy = None if withheld else probability >= threshold
    label = NO_CALL if withheld else (BIOPSY if biopsy else FOLLOW_UP)
    return Decision(
        biopsy_recommended=biopsy,
        label=label,
        probability=probability,
        threshold=threshold,
        output=output,
        output_title=OUTPUT_TITLES[mode],
        mode=mode.value,
        threshold_source=source,
        sensitivity=None if results is None else results.sensitivity.value,
        specificity=None if results is None else results.specificity.value,
        sensitivity_ci=None if results is None else results.sensitivity.ci,
        specificity_ci=None if results is None else results.specificity.ci,
        withheld=withheld,
        ece=None if results is None else results.ece,
        notes=tuple(notes),
    )


def decision_text(decision: Decision) -> str:
    """One line: the output, its probability against its threshold, and that threshold's
    test-split sensitivity and specificity (with 95% CIs when the card gives them)."""
    from dlum.formatting import format_pct_ci

    parts = []
    for name, value, ci in (("sensitivity", decision.sensitivity, decision.sensitivity_ci),
                            ("specificity", decision.specificity, decision.specificity_ci)):
        if value is not None:
            parts.append(f"{name} {format_pct_ci(value, *(ci or (None, None)))}")
    measured = f" ({', '.join(parts)} on the test split)" if parts else ""
    where = "default threshold" if decision.threshold_source == "default" else "operating threshold"
    return (f"{decision.output_title}: P = {decision.probability:.3f} vs {where} "
            f"{decision.threshold:.3f}{measured}.")


def case_result(prediction: Any, decision: Decision, *, inputs: dict[str, Any] | None = None,
                digits: int = 4) -> dict[str, Any]:
    """One case as ``python -m dlum predict`` prints it and Case Review's report holds it: the
    inputs given, the model's outputs (rounded to ``digits``), the decision and the model.

    Run facts that change from run to run (seconds, device) are left out; callers add them.
    """
    out: dict[str, Any] = dict(inputs or {})
    out.update(prediction.probabilities(digits))
    out["whole_image"] = list(getattr(prediction, "whole_image", ()) or ())
    d = decision.to_dict()
    for key in ("probability", "threshold", "sensitivity", "specificity"):
        d[key] = None if d[key] is None else round(d[key], digits)
    for key in ("sensitivity_ci", "specificity_ci"):
        d[key] = None if d[key] is None else [round(v, digits) for v in d[key]]
    out["decision"] = d
    out["model"] = {"name": prediction.model_version, "precision": prediction.precision}
    return out
