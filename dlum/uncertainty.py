"""Per-case uncertainty of DL-UM's P(malignant) by test-time augmentation (TTA).

The two network patches of a case (the lesion box plus 30%, resized and min–max normalised, as
Xu et al., Breast Cancer Research 2025 pre-process them) are read again in ``views`` slightly
changed versions: a horizontal flip, a small shift and scale, and a gamma / contrast change, each
within the augmentation the shipped checkpoint was trained with (shift ±5% of the side, scale
±10%, log-gamma and contrast ±0.2; its card's ``training``). How much P moves across these views
is an estimate of the aleatoric uncertainty of the reading (Ayhan & Berens, "Test-time data
augmentation for estimation of heteroscedastic aleatoric uncertainty in deep neural networks",
MIDL 2018; Wang et al., Neurocomputing 338, 2019).

**The interval.** The probabilities of every view, the un-augmented one (view 0, whose value is
``estimate``) and the ``views`` augmented ones, are pooled; ``low`` and ``high`` are their
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's linear interpolation). The default,
``level = 1``, makes the interval the views' RANGE (their minimum to their maximum), which always
holds ``estimate``: with the default 5 values a central 90% would often leave the plain view's P,
shown beside it, just outside. It describes how the model's answer moves under small changes of
the image, not a confidence interval for a population figure. A narrower ``level`` (e.g. 0.8,
the central 80% of the views' probabilities) may still be asked for, but need not hold
``estimate``. Guaranteed: ``min(views) <= low <= high <= max(views)``, both in [0, 1]. P read in
the prediction's own forward differs from ``estimate`` by the precision's rounding; what is shown
beside it is :func:`holding`'s range, widened to hold it.

**Uncertain.** A case is *uncertain* when the interval straddles the output's operating threshold
``t`` (``low < t <= high``): since P >= t is a biopsy call (:func:`dlum.decision.decide`), some
views would call it positive and others negative.

**Reproducible.** The views' parameters come from ``numpy.random.default_rng(seed)``, drawn view
by view (the first k views of a longer draw are the k views of a shorter one); the same seed,
views, image and precision give the same interval. Every view of one case goes through the network
in ONE batched forward, so the extra cost is about ``views`` pairs (the default is chosen so that
it stays within 1.5 s on the project's 2-core CPU in bf16: ``benchmarks/bench_uncertainty.py``).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dlum.constants import MG, ROI_EXPANSION, US
from dlum.data.roi import crop_roi
from dlum.data.transforms import imagenet_normalize, to_network_input
from dlum.errors import CohortError, DLUMError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from dlum.data.crops import CropSet
    from dlum.inference import Predictor

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_VIEWS",
    "MAX_VIEWS",
    "OUTPUTS",
    "Interval",
    "UncertaintyError",
    "View",
    "augment",
    "case_uncertainty",
    "cohort_uncertainty",
    "decision_intervals",
    "draw_views",
    "holding",
    "interval_of",
]

#: Augmented views per case by default: the most whose single batched forward stays within the
#: 1.5 s budget on the project's 2-core CPU in bf16 (``python -m benchmarks.bench_uncertainty``).
DEFAULT_VIEWS = 4
#: Share of the views' probabilities the interval spans by default: 1, their range (minimum to
#: maximum), which always holds the un-augmented estimate shown beside it.
DEFAULT_LEVEL = 1.0
#: Most views one call may ask for (each costs a forward of the pair).
MAX_VIEWS = 64
#: The outputs an interval is given for, as in ``predictions.csv``.
OUTPUTS = ("p_dlum", "p_us_head", "p_mg_head")

#: Augmentation ranges (those of the shipped checkpoint's training, its card's ``training``).
SHIFT = 0.05  # fraction of the patch side, in x and in y
SCALE = 0.10  # zoom factor in 1 ± SCALE
LOG_GAMMA = 0.2  # gamma = exp(u), u in ± LOG_GAMMA
CONTRAST = 0.2  # contrast factor in 1 ± CONTRAST, about mid-grey


class UncertaintyError(DLUMError, ValueError):
    """A seed, a number of views, a level or a threshold that cannot be used."""


@dataclass(frozen=True)
class View:
    """One augmented reading of a patch: applied to both patches of a case alike."""

    flip: bool
    shift_x: float  # fraction of the side; positive moves the content right
    shift_y: float  # positive moves the content down
    scale: float  # > 1 zooms in
    gamma: float
    contrast: float


@dataclass(frozen=True)
class Interval:
    """The TTA interval of one output of one case (see the module's docstring for its definition).

    ``estimate`` is the un-augmented view's probability, computed in the same batch as the other
    views (equal to :meth:`dlum.inference.Predictor.predict_pair`'s value up to the precision's
    rounding); ``level`` the share of the views' probabilities that ``[low, high]`` spans;
    ``views`` the augmented views (``views + 1`` probabilities pooled); ``threshold`` the output's
    operating threshold (None: not known, never *uncertain*).
    """

    output: str
    estimate: float
    low: float
    high: float
    level: float
    views: int
    seed: int
    threshold: float | None

    @property
    def uncertain(self) -> bool:
        """The interval straddles the threshold: ``low < t <= high`` (P >= t is positive), so
        some views fall on each side of the call."""
        return self.threshold is not None and self.low < self.threshold <= self.high

    @property
    def is_range(self) -> bool:
        """The interval is the views' whole range (``level`` 1, the default)."""
        return self.level >= 1.0

    def text(self, digits: int = 2) -> str:
        """``TTA range 0.48–0.71 over 5 views`` at level 1 (the default), else e.g.
        ``80% TTA interval 0.50–0.69``; the ends are rounded outward, so the printed interval
        holds every value inside it however many digits those are printed with."""
        scale = 10 ** digits
        # outward: plain rounding could print the low end of 0.6151 as 0.62 beside P "0.615"
        low = math.floor(self.low * scale + 1e-9) / scale
        high = math.ceil(self.high * scale - 1e-9) / scale
        ends = f"{low:.{digits}f}–{high:.{digits}f}"
        if self.is_range:
            return f"TTA range {ends} over {self.views + 1} views"
        return f"{self.level:.0%} TTA interval {ends}"

    def as_dict(self, digits: int | None = None) -> dict[str, Any]:
        def r(v):
            return v if v is None or digits is None else round(float(v), digits)

        return {"output": self.output, "estimate": r(self.estimate), "low": r(self.low),
                "high": r(self.high), "level": self.level, "views": self.views, "seed": self.seed,
                "threshold": r(self.threshold), "uncertain": self.uncertain}


# ----------------------------------------------------------------------------------- checks
def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise UncertaintyError(f"the TTA seed must be a whole number 0 or more, got {seed!r}")
    return int(seed)


def _check_views(views: Any) -> int:
    if views is None:
        return DEFAULT_VIEWS
    if isinstance(views, bool) or not isinstance(views, numbers.Integral) or not 1 <= views <= MAX_VIEWS:
        raise UncertaintyError(f"the number of TTA views must be a whole number from 1 to "
                               f"{MAX_VIEWS}, got {views!r}")
    return int(views)


def _check_level(level: Any) -> float:
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(level, bool) or not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise UncertaintyError(f"the interval's level must be a share in (0, 1], got {level!r}")
    return value


def _check_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for output, value in dict(thresholds or {}).items():
        if value is None:
            out[str(output)] = None
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not (math.isfinite(number) and 0.0 <= number <= 1.0):
            raise UncertaintyError(f"the threshold of {output} must be a probability in [0, 1], "
                                   f"got {value!r}")
        out[str(output)] = number
    return out


# ------------------------------------------------------------------------------------ views
def draw_views(seed: int = 0, views: int | None = None) -> list[View]:
    """The ``views`` augmentations of a seed, drawn one view after another from
    ``numpy.random.default_rng(seed)`` (so a longer draw starts with the shorter one)."""
    seed, views = _check_seed(seed), _check_views(views)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(views):
        u = rng.random(6)
        out.append(View(flip=bool(u[0] < 0.5),
                        shift_x=float((2 * u[1] - 1) * SHIFT), shift_y=float((2 * u[2] - 1) * SHIFT),
                        scale=float(1 + (2 * u[3] - 1) * SCALE),
                        gamma=float(math.exp((2 * u[4] - 1) * LOG_GAMMA)),
                        contrast=float(1 + (2 * u[5] - 1) * CONTRAST)))
    return out


def augment(unit: torch.Tensor, views: list[View]) -> torch.Tensor:
    """The views of grey [0, 1] patches: ``(N, S, S)`` → ``(N, V, S, S)``, min–max normalised
    again as every network patch is.

    The geometry is one ``affine_grid`` + ``grid_sample`` over all patches and views at once
    (bilinear, zeros outside the patch as the training augmentation fills), then gamma and
    contrast about mid-grey, clipped to [0, 1], as in :class:`dlum.training.Augment`.
    """
    n, size = unit.shape[0], unit.shape[-1]
    v = len(views)
    theta = torch.zeros(v, 2, 3, dtype=torch.float32)
    for k, view in enumerate(views):
        # output → input coordinates in [-1, 1]: mirror x, zoom by 1/scale, move by the shift
        theta[k, 0, 0] = (-1.0 if view.flip else 1.0) / view.scale
        theta[k, 1, 1] = 1.0 / view.scale
        theta[k, 0, 2] = -2.0 * view.shift_x
        theta[k, 1, 2] = -2.0 * view.shift_y
    theta = theta.repeat(n, 1, 1)  # (n * v, 2, 3): patch-major, view-minor
    x = unit.float().repeat_interleave(v, dim=0)[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.tensor([view.gamma for view in views], dtype=torch.float32).repeat(n)
    contrast = torch.tensor([view.contrast for view in views], dtype=torch.float32).repeat(n)
    x = x.clamp(0, 1) ** gamma.view(-1, 1, 1, 1)
    x = ((x - 0.5) * contrast.view(-1, 1, 1, 1) + 0.5).clamp(0, 1)
    # min–max per view, as dlum.data.transforms.to_unit_range (a flat view becomes zeros)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - low
    x = torch.where(span > 1e-6, (x - low) / span.clamp_min(1e-6), torch.zeros_like(x))
    return x.view(n, v, size, size)


def _network_batch(unit: torch.Tensor, views: list[View], imagenet: bool) -> torch.Tensor:
    """``(N, S, S)`` grey patches → ``(N * (V + 1), 3, S, S)`` network inputs: per patch the
    un-augmented view first, then its ``V`` augmented views."""
    size = unit.shape[-1]
    views_of = torch.cat([unit[:, None].float(), augment(unit, views)], dim=1)
    x = views_of.reshape(-1, 1, size, size).expand(-1, 3, -1, -1).contiguous()
    return imagenet_normalize(x) if imagenet else x


def interval_of(values: np.ndarray, output: str, *, level: float, views: int, seed: int,
                threshold: float | None) -> Interval:
    """The :class:`Interval` of one output from its views' probabilities (view 0 un-augmented)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DLUMError(f"the model gave a non-finite probability ({output}) for a TTA view: are "
                        "the weights damaged?")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(output=output, estimate=float(values[0]), low=float(low), high=float(high),
                    level=float(level), views=int(views), seed=int(seed), threshold=threshold)


def holding(interval: Interval, probability: float | None) -> Interval:
    """The interval to show beside a P(malignant) read in another forward (Case Review's metric,
    the report's table): a range (level 1) is widened to hold it.

    Both are the un-augmented view's P, which the range holds; they differ only by the
    precision's rounding in another batch (small: bf16 and fp32 differ by at most 0.009 on the
    public test split). A narrower ``level`` is returned as it is: it need not hold the estimate.
    """
    if probability is None or not interval.is_range:
        return interval
    p = float(probability)
    return replace(interval, low=min(interval.low, p), high=max(interval.high, p))


def _outputs_of(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    found = {}
    if "p_dlum" in out:
        found["p_dlum"] = np.asarray(out["p_dlum"]).reshape(-1)
    for m in (US, MG):
        if f"{m}_blocks" in out:
            found[f"p_{m}_head"] = np.asarray(out[f"{m}_blocks"])[:, -1]
    return found


# ------------------------------------------------------------------------------------ one case
def case_uncertainty(predictor: Predictor, us=None, mg=None, *, us_box=None, mg_box=None,
                     thresholds: Mapping[str, float | None] | None = None, seed: int = 0,
                     views: int | None = None, level: float = DEFAULT_LEVEL) -> dict[str, Interval]:
    """TTA intervals of one case's outputs: ``p_dlum``, ``p_us_head`` and ``p_mg_head`` for a
    pair, that branch's head alone for one image.

    Args:
        predictor: a loaded :class:`dlum.inference.Predictor` (its device and precision are used).
        us, mg: the images as :meth:`~dlum.inference.Predictor.predict_pair` takes them (decoded
            arrays, or a path / bytes); either may be None.
        us_box, mg_box: the lesion boxes (None: the whole image).
        thresholds: output → operating threshold (the card's ``thresholds_per_model``), for
            :attr:`Interval.uncertain`; an output missing here has none.
        seed: seeds the views' parameters (a whole number >= 0).
        views: augmented views (1 to :data:`MAX_VIEWS`; default :data:`DEFAULT_VIEWS`).
        level: the share of the views' probabilities the interval spans, in (0, 1].

    Raises:
        UncertaintyError: a bad seed, views, level or threshold. InputError: no image, an
        unreadable image or box, a constant image.
    """
    from dlum.data.io import read_image
    from dlum.inference import _refuse_constant

    seed, n_views, level = _check_seed(seed), _check_views(views), _check_level(level)
    limits = _check_thresholds(thresholds)
    if us is None and mg is None:
        raise InputError("give at least one image (ultrasound or mammography)")
    chosen = draw_views(seed, n_views)
    batches = {}
    for modality, source, box in ((US, us, us_box), (MG, mg, mg_box)):
        if source is None:
            continue
        image = source if isinstance(source, np.ndarray) else read_image(source)
        _refuse_constant(image, box, modality)
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"a 2-D grey image is expected, got shape {image.shape}")
        crop = crop_roi(image, box, ROI_EXPANSION)
        unit = to_network_input(crop, size=predictor.input_size, imagenet=False)[0]
        batches[modality] = _network_batch(unit[None], chosen, predictor.imagenet)
    out = _outputs_of(predictor.forward(batches.get(US), batches.get(MG)))
    return {name: interval_of(values, name, level=level, views=n_views, seed=seed,
                              threshold=limits.get(name))
            for name, values in out.items()}


# ------------------------------------------------------------------------------------ a cohort
def cohort_uncertainty(predictor: Predictor, cohort: pd.DataFrame, crops: CropSet | None = None, *,
                       split: str | None = None,
                       thresholds: Mapping[str, float | None] | None = None, seed: int = 0,
                       views: int | None = None, level: float = DEFAULT_LEVEL,
                       cases_per_batch: int = 2, progress: bool = True) -> pd.DataFrame:
    """TTA intervals of every pair of a validated cohort table (or one split), from its crops.

    Every case gets the same views (drawn once from ``seed``), so a case's intervals are those
    :func:`case_uncertainty` gives for its images (up to the precision's rounding in another
    batch). ``cases_per_batch`` cases (each ``views + 1`` pairs) go through one forward.

    Returns:
        one row per case and output: ``case_id``, ``split``, ``output``, ``estimate``, ``low``,
        ``high``, ``threshold``, ``uncertain``, ``level``, ``views``, ``seed``, ``precision``.
    """
    from tqdm.auto import tqdm

    from dlum.data.crops import extract_crops

    seed, n_views, level = _check_seed(seed), _check_views(views), _check_level(level)
    limits = _check_thresholds(thresholds)
    if isinstance(cases_per_batch, bool) or not isinstance(cases_per_batch, numbers.Integral) \
            or cases_per_batch < 1:
        raise UncertaintyError(f"cases per batch must be a whole number 1 or more, got "
                               f"{cases_per_batch!r}")
    if crops is not None:
        crops.check_matches(cohort)
    keep = np.ones(len(cohort), dtype=bool)
    if split is not None:
        keep = (cohort["split"] == split).to_numpy()
        if not keep.any():
            raise CohortError([f"no rows with split = {split!r}"])
    rows_kept = np.flatnonzero(keep)
    cohort = cohort[keep].reset_index(drop=True)
    crops = (extract_crops(cohort, progress=progress, quantise=False) if crops is None
             else crops.subset(rows_kept))
    chosen = draw_views(seed, n_views)
    precision = str(predictor.dtype).replace("torch.", "")
    records = []
    starts = range(0, len(cohort), int(cases_per_batch))
    for start in tqdm(starts, desc="TTA intervals", disable=not progress, leave=False):
        rows = list(range(start, min(start + int(cases_per_batch), len(cohort))))
        batch = {}
        for m in (US, MG):
            unit = torch.stack([to_network_input(crops.crop(m, r), size=predictor.input_size,
                                                 imagenet=False)[0] for r in rows])
            batch[m] = _network_batch(unit, chosen, predictor.imagenet)
        out = _outputs_of(predictor.forward(batch[US], batch[MG]))
        for i, r in enumerate(rows):
            for name, values in out.items():
                part = values[i * (n_views + 1):(i + 1) * (n_views + 1)]
                iv = interval_of(part, name, level=level, views=n_views, seed=seed,
                                 threshold=limits.get(name))
                records.append({"case_id": str(cohort.loc[r, "case_id"]),
                                "split": cohort.loc[r, "split"] if "split" in cohort else "",
                                "output": name, "estimate": iv.estimate, "low": iv.low,
                                "high": iv.high, "threshold": iv.threshold,
                                "uncertain": iv.uncertain, "level": level, "views": n_views,
                                "seed": seed, "precision": precision})
    return pd.DataFrame.from_records(records)


def decision_intervals(predictor: Predictor, prediction, decision, us=None, mg=None, *,
                       us_box=None, mg_box=None, seed: int = 0) -> dict[str, Interval]:
    """The intervals shown beside a case's result (Case Review, ``predict --uncertainty``, the PDF
    report): :func:`case_uncertainty` with each output judged at the card's threshold and the
    call's output at the decision's (:func:`dlum.decision.decide`), each range held to the P of
    ``prediction`` (:func:`holding`)."""
    card = predictor.card
    thresholds = dict(card.operating_point.thresholds) if card.operating_point else {}
    thresholds[decision.output] = decision.threshold
    intervals = case_uncertainty(predictor, us, mg, us_box=us_box, mg_box=mg_box,
                                 thresholds=thresholds, seed=seed)
    return {name: holding(iv, getattr(prediction, name, None)) for name, iv in intervals.items()}
