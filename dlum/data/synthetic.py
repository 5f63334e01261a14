"""Synthetic ultrasound + mammography lesion phantoms, for tests and clearly labelled examples.

The phantoms are drawn, not photographed: they carry the textbook BI-RADS lexicon signs that
DL-UM (Xu et al., Breast Cancer Research 2025) is meant to weigh, so that tests can check that
the pipeline runs and that a model can learn *something*, and so that the app has an example
when no real data is present. They are never real patients and never enter real-data metrics
(``source = synthetic-phantom``; :func:`dlum.data.manifest.read_cohort` refuses tables that mix
them with real cases).

Ultrasound (B-mode, bright = echogenic), after the ACR BI-RADS US lexicon:

* benign: oval, circumscribed, parallel (wider than tall), hypo- or anechoic, posterior
  enhancement;
* malignant: irregular, spiculated / angular, not parallel (taller than wide), hypoechoic and
  heterogeneous, posterior acoustic shadowing;
* both: skin line, fat and fibroglandular layers, multiplicative speckle.

Mammography (X-ray, bright = dense):

* benign: circumscribed round/oval mass, or a few coarse round calcifications;
* malignant: irregular spiculated mass, or a cluster of fine pleomorphic calcifications;
* both: fibroglandular texture whose density varies; in dense breasts the lesion is partly
  masked (lower contrast), and the simulated MG BI-RADS is then lower: the classic source of
  US/MG discordance.

Per-modality BI-RADS are drawn from pathology- and appearance-dependent probabilities, so that a
fair share of cases is discordant (one modality 4-5, the other 2-3).

Only numpy and scipy: a 256-pixel pair takes a few milliseconds.

>>> case = make_phantom_case(0, malignant=True, size=128)
>>> case["us"].shape, case["mg"].dtype, case["label"]
((128, 128), dtype('uint8'), 1)
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from dlum.constants import SAME_PATIENT, DEVELOPMENT_SPLITS, SYNTHETIC_SOURCE

__all__ = [
    "PHANTOM_BIRADS_SOURCE",
    "SYNTHETIC_SOURCE",
    "is_synthetic",
    "make_mg_phantom",
    "make_phantom_case",
    "make_phantom_cohort",
    "make_us_phantom",
]

#: BI-RADS source of the phantoms' assessments.
PHANTOM_BIRADS_SOURCE = "simulated:phantom"

_LEVELS = np.array([2, 3, 4, 5])


def is_synthetic(source) -> np.ndarray | bool:
    """True where ``source`` (a value, a sequence or a cohort table) marks a synthetic phantom."""
    if hasattr(source, "columns"):
        source = source["source"]
    if np.ndim(source) == 0:
        return str(source).strip().lower() == SYNTHETIC_SOURCE
    return np.array([str(s).strip().lower() == SYNTHETIC_SOURCE for s in source], dtype=bool)


# --------------------------------------------------------------------------------------- shapes
@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _lesion_mask(
    rng: np.random.Generator,
    size: int,
    centre: tuple[float, float],
    axes: tuple[float, float],
    *,
    irregular: float,
    spicules: int,
    spicule_length: float,
    edge: float,
) -> np.ndarray:
    """A soft [0, 1] lesion mask: an ellipse with a wavy border and optional radial spicules."""
    cx, cy = centre
    ax, ay = axes
    # The border radius is built on a 1-D grid of angles, then looked up per pixel: cheap.
    grid = np.linspace(-np.pi, np.pi, 1024, endpoint=False)
    border = 1.0 / np.sqrt((np.cos(grid) / ax) ** 2 + (np.sin(grid) / ay) ** 2)
    wave = np.zeros_like(grid)
    for k in range(2, 7):  # a few random harmonics: an irregular, lobulated border
        wave += rng.normal(0, irregular / k) * np.cos(k * grid + rng.uniform(0, 2 * np.pi))
    border = border * (1.0 + wave)
    for _ in range(spicules):  # narrow radial extensions
        angle = rng.uniform(-np.pi, np.pi)
        width = rng.uniform(0.025, 0.06)
        d = np.angle(np.exp(1j * (grid - angle)))  # wrapped angular distance
        border = border + spicule_length * rng.uniform(0.5, 1.0) * np.exp(-0.5 * (d / width) ** 2)
    # Only the window that can hold the lesion is computed; the rest stays 0.
    reach = float(border.max()) + 12.0 * edge + 2.0
    x0, x1 = max(0, int(cx - reach)), min(size, int(np.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(cy - reach)), min(size, int(np.ceil(cy + reach)) + 1)
    mask = np.zeros((size, size), np.float32)
    if x0 >= x1 or y0 >= y1:
        return mask
    yy, xx = _grid(size)
    dx = xx[y0:y1, x0:x1] - np.float32(cx)
    dy = yy[y0:y1, x0:x1] - np.float32(cy)
    rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    index = ((theta + np.pi) * (len(grid) / (2 * np.pi))).astype(np.int64) % len(grid)
    z = np.clip((rho - border[index].astype(np.float32)) / np.float32(max(edge, 1e-3)), -50.0, 50.0)
    mask[y0:y1, x0:x1] = 1.0 / (1.0 + np.exp(z))
    return mask


def _box(mask: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int]:
    rows = np.flatnonzero((mask > threshold).any(axis=1))
    cols = np.flatnonzero((mask > threshold).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [0.5, 99.8])
    return np.clip(np.rint((image - low) / max(high - low, 1e-6) * 255), 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _amplitude(size: int, beta: float, cutoff: float) -> np.ndarray:
    f = np.hypot(np.fft.rfftfreq(size)[None, :], np.fft.fftfreq(size)[:, None]) * size
    amplitude = np.maximum(f, cutoff) ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    return amplitude.astype(np.float32)


def _texture(rng: np.random.Generator, size: int, beta: float = 2.5, cutoff: float = 2.0) -> np.ndarray:
    """Zero-mean, unit-variance power-law texture (spectrum ~ 1/f**beta), made in Fourier space.

    Mammographic parenchyma has a power-law spectrum with beta about 2.5-3.5 (Burgess et al.,
    Med Phys 2001); lower beta gives finer grain. FFT shaping keeps this a few milliseconds.
    """
    spectrum = np.fft.rfft2(rng.standard_normal((size, size), dtype=np.float32))
    spectrum *= _amplitude(size, beta, cutoff)
    out = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-6)


def _add_dot(canvas: np.ndarray, px: float, py: float, sx: float, sy: float) -> None:
    """Add an anisotropic Gaussian dot in place, computed only in its neighbourhood."""
    size = canvas.shape[0]
    r = int(np.ceil(4 * max(sx, sy)))
    x0, x1 = max(0, int(px) - r), min(size, int(px) + r + 1)
    y0, y1 = max(0, int(py) - r), min(size, int(py) + r + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] += np.exp(-0.5 * (((xx - px) / sx) ** 2 + ((yy - py) / sy) ** 2))


# ------------------------------------------------------------------------------------ ultrasound
def make_us_phantom(
    rng: np.random.Generator, malignant: bool, size: int = 256
) -> tuple[np.ndarray, tuple[int, int, int, int], dict]:
    """One B-mode ultrasound phantom (uint8), its lesion box and the signs drawn."""
    y = np.arange(size, dtype=np.float32)[:, None] / size
    skin = 0.06 + rng.uniform(-0.01, 0.01)
    fat_end = rng.uniform(0.22, 0.35)
    # Depth profile: bright skin line, darker fat, echogenic fibroglandular layer, fading deeper.
    echo = np.where(y < skin, 1.0, np.where(y < fat_end, 0.45, 0.8)) * np.exp(-0.6 * y)
    echo = echo + 0.12 * _texture(rng, size, beta=2.0)
    echo = ndimage.gaussian_filter(np.broadcast_to(echo, (size, size)).astype(np.float32), 1.5)

    cx = size * rng.uniform(0.4, 0.6)
    cy = size * rng.uniform(fat_end + 0.18, 0.6)
    if malignant:
        width = size * rng.uniform(0.10, 0.16)
        height = width * rng.uniform(1.4, 1.9)  # taller than wide: not parallel
        mask = _lesion_mask(
            rng, size, (cx, cy), (width, height), irregular=0.15, spicules=int(rng.integers(5, 10)),
            spicule_length=width * 0.25, edge=2.5,
        )
        level, posterior = rng.uniform(0.12, 0.25), rng.uniform(0.3, 0.55)  # shadowing
    else:
        height = size * rng.uniform(0.08, 0.13)
        width = height * rng.uniform(1.4, 2.0)  # wider than tall: parallel
        mask = _lesion_mask(
            rng, size, (cx, cy), (width, height), irregular=0.03, spicules=0, spicule_length=0,
            edge=0.8,
        )
        cyst = rng.random() < 0.3
        level, posterior = (0.03 if cyst else rng.uniform(0.2, 0.35)), rng.uniform(1.15, 1.4)
    inner = level * (1.0 + (0.35 if malignant else 0.1) * _texture(rng, size, beta=1.5))
    tissue = echo * (1 - mask) + np.clip(inner, 0.0, None) * mask
    # Posterior feature: the column under the lesion, below its centre, fading with depth.
    x = np.arange(size, dtype=np.float32)[None, :]
    column = np.exp(-0.5 * ((x - cx) / (0.8 * (width if not malignant else width * 0.9))) ** 4)
    below = np.clip((np.arange(size, dtype=np.float32)[:, None] - cy) / (0.5 * height), 0, 1)
    tissue = tissue * (1.0 + (posterior - 1.0) * column * below * (1 - mask))
    # Multiplicative speckle: magnitude of smoothed complex Gaussian noise (Rayleigh-like).
    noise = rng.standard_normal((2, size, size), dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0, 0.8, 1.6))
    speckle = np.hypot(noise[0], noise[1])
    speckle /= speckle.mean()
    # Log compression, as B-mode scanners display the echo envelope.
    image = np.log1p(12.0 * np.clip(tissue, 0, None) * speckle)
    signs = {
        "shape": "irregular" if malignant else "oval",
        "margin": "spiculated" if malignant else "circumscribed",
        "orientation": "not parallel" if malignant else "parallel",
        "posterior": "shadowing" if malignant else "enhancement",
    }
    return _to_uint8(image), _box(mask), signs


# ----------------------------------------------------------------------------------- mammography
def make_mg_phantom(
    rng: np.random.Generator, malignant: bool, size: int = 256
) -> tuple[np.ndarray, tuple[int, int, int, int], dict]:
    """One mammography phantom patch (uint8), its lesion box and the signs drawn."""
    density = rng.uniform(0.0, 1.0)  # 0 fatty .. 1 extremely dense
    base = 0.25 + 0.45 * density
    background = base + (0.08 + 0.12 * density) * _texture(rng, size)
    # Fibrous strands: thin oriented ridges.
    strands = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), (6, 1))
    background = background + 0.05 * strands / (strands.std() + 1e-6)

    cx, cy = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    calcification = rng.random() < 0.3
    contrast = 0.35 * (1.0 - 0.65 * density)  # dense tissue masks the lesion
    image = background.copy()
    dots_mask = np.zeros((size, size), np.float32)
    if calcification:
        n = int(rng.integers(8, 25)) if malignant else int(rng.integers(3, 7))
        spread = size * (0.06 if malignant else 0.12)
        for _ in range(n):
            px, py = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
            if malignant:  # fine pleomorphic / linear: small, elongated, varied
                sx, sy = rng.uniform(0.6, 1.4), rng.uniform(0.6, 2.6)
            else:  # coarse round
                sx = sy = rng.uniform(1.8, 3.2)
            _add_dot(dots_mask, px, py, sx, sy)
        dots_mask = np.clip(dots_mask, 0, 1)
        image = image + 0.9 * dots_mask
        mask = ndimage.maximum_filter(dots_mask, 9) > 0.05
        mask = mask.astype(np.float32)
        kind = "calcification"
    else:
        radius = size * rng.uniform(0.09, 0.15)
        if malignant:
            mask = _lesion_mask(
                rng, size, (cx, cy), (radius, radius * rng.uniform(0.8, 1.2)), irregular=0.15,
                spicules=int(rng.integers(8, 16)), spicule_length=radius * 1.4, edge=1.5,
            )
            kind = "spiculated_mass"
        else:
            mask = _lesion_mask(
                rng, size, (cx, cy), (radius, radius * rng.uniform(0.7, 1.0)), irregular=0.02,
                spicules=0, spicule_length=0, edge=1.0,
            )
            kind = "circumscribed_mass"
        image = image + contrast * mask
    image = image + 0.02 * rng.standard_normal((size, size), dtype=np.float32)  # quantum noise
    signs = {"kind": kind, "density": float(density), "masked": bool(density > 0.6)}
    return _to_uint8(image), _box(np.maximum(mask, dots_mask)), signs


# ----------------------------------------------------------------------------------------- cases
def _draw_birads(rng: np.random.Generator, p: list[float]) -> int:
    return int(rng.choice(_LEVELS, p=np.asarray(p) / np.sum(p)))


def make_phantom_case(seed: int, malignant: bool, size: int = 256) -> dict:
    """One synthetic lesion seen on US and MG, with per-modality BI-RADS.

    BI-RADS are drawn given the pathology; the MG one is lowered when dense tissue masks the
    lesion, the US one when a malignant lesion happens to look less suspicious, so that some
    cases are discordant as in real practice.

    Args:
        seed: fixes everything about the case.
        malignant: pathology.
        size: side of both square images.

    Returns:
        ``dict(us, mg, us_box, mg_box, label, us_birads, mg_birads, us_signs, mg_signs)``;
        images ``uint8`` (size, size), boxes ``(x0, y0, x1, y1)``.
    """
    rng = np.random.default_rng([int(seed), int(bool(malignant))])
    us, us_box, us_signs = make_us_phantom(rng, bool(malignant), size)
    mg, mg_box, mg_signs = make_mg_phantom(rng, bool(malignant), size)
    if malignant:
        us_p = [0.03, 0.10, 0.52, 0.35]
        mg_p = [0.15, 0.30, 0.40, 0.15] if mg_signs["masked"] else [0.02, 0.08, 0.50, 0.40]
    else:
        us_p = [0.30, 0.40, 0.28, 0.02]
        mg_p = [0.45, 0.35, 0.18, 0.02] if mg_signs["masked"] else [0.35, 0.35, 0.27, 0.03]
    return {
        "us": us,
        "mg": mg,
        "us_box": us_box,
        "mg_box": mg_box,
        "label": int(bool(malignant)),
        "us_birads": _draw_birads(rng, us_p),
        "mg_birads": _draw_birads(rng, mg_p),
        "us_signs": us_signs,
        "mg_signs": mg_signs,
    }


def make_phantom_cohort(
    out_dir: str | os.PathLike,
    n: int = 40,
    seed: int = 0,
    *,
    size: int = 256,
    malignant_fraction: float = 0.4,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Path:
    """Write ``n`` phantom pairs as PNGs plus a valid ``cohort.csv`` and return the table's path.

    Layout: ``out_dir/us/phantom-000.png``, ``out_dir/mg/phantom-000.png``, ``out_dir/cohort.csv``
    (paths relative to the table). Each case is its own synthetic "patient"; the US and MG images
    are generated as a pair of one lesion, hence ``pairing = same_patient``, and
    ``source = synthetic-phantom`` marks every row as synthetic. Splits are assigned per
    pathology in the given fractions (largest remainder), shuffled with ``seed``.
    """
    import pandas as pd
    from PIL import Image

    from dlum.data.manifest import write_cohort
    from dlum.data.pairing import _allocate

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out_dir)
    (out / "us").mkdir(parents=True, exist_ok=True)
    (out / "mg").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_malignant = int(round(n * malignant_fraction))
    labels = np.array([1] * n_malignant + [0] * (n - n_malignant))
    rng.shuffle(labels)
    splits = np.empty(n, dtype=object)
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        start = 0
        for name, count in zip(DEVELOPMENT_SPLITS, _allocate(len(idx), fractions)):
            splits[idx[start : start + count]] = name
            start += count
    rows = []
    for i in range(n):
        case = make_phantom_case(seed * 100_003 + i, bool(labels[i]), size)
        name = f"phantom-{i:03d}"
        Image.fromarray(case["us"]).save(out / "us" / f"{name}.png")
        Image.fromarray(case["mg"]).save(out / "mg" / f"{name}.png")
        rows.append(
            {
                "case_id": name,
                "patient_id": f"phantom:{i:03d}",
                "us_image": f"us/{name}.png",
                "mg_image": f"mg/{name}.png",
                **dict(zip(("us_x0", "us_y0", "us_x1", "us_y1"), case["us_box"])),
                **dict(zip(("mg_x0", "mg_y0", "mg_x1", "mg_y1"), case["mg_box"])),
                "label": case["label"],
                "us_birads": case["us_birads"],
                "mg_birads": case["mg_birads"],
                "us_birads_source": PHANTOM_BIRADS_SOURCE,
                "mg_birads_source": PHANTOM_BIRADS_SOURCE,
                "pairing": SAME_PATIENT,
                "source": SYNTHETIC_SOURCE,
                "split": splits[i],
            }
        )
    return write_cohort(pd.DataFrame(rows), out / "cohort.csv")
