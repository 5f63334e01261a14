"""Every environment setting dlum reads, in one place, validated when read.

=====================  ==================================================================
``DLUM_CHECKPOINT``    checkpoint folder the dashboard loads (default: the shipped
                       ``checkpoints/dlum-public-v2``; relative paths start at the repository)
``DLUM_FINDER``        ultrasound lesion finder folder (default: the shipped
                       ``checkpoints/us-finder-v1``; relative paths start at the repository)
``DLUM_DATA_DIR``      public data folder (default: ``../shared/data`` beside the repository)
``DLUM_STUDY_DIR``     folder of the reading-session store (``study.sqlite``; default: the
                       git-ignored ``studies/`` of the repository; relative paths start there)
``DLUM_STUDY_ADMIN_CODE`` a study's admin code for ``python -m dlum reader-study --store/--study``
                       (read only there, never printed; without it a terminal asks for it)
``DLUM_PRECISION``     ``auto`` (default), ``fp32`` or ``bf16``: precision of the dashboard's
                       probabilities (CAMs always run in fp32)
``DLUM_COMPILE``       ``1`` to ``torch.compile`` the dashboard's model in the background
``DLUM_ALLOW_DOWNLOAD`` ``1`` to let training download torchvision's VGG19 weights
``DLUM_MAX_PIXELS``    largest image accepted, in pixels (default 30,000,000), checked from
                       the header before any pixel is decoded
``DLUM_MAX_IMAGE_MB``  largest image file, and largest DICOM data set once inflated, in MiB
                       (default 256), checked before it is read or inflated
``DLUM_MAX_TABLE_MB``  largest CSV table read, in MiB (default 50)
``DLUM_MAX_TABLE_ROWS`` most data rows in a CSV table (default 200,000)
``DLUM_MAX_PROBLEMS``  problems listed for a bad table before the rest are only counted
                       (default 1,000)
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``  set by ``torchrun`` for distributed training
=====================  ==================================================================

``python -m dlum info`` prints them with the versions, the device and the checkpoint.
A value that cannot be used is an error naming the variable, never silently replaced.

>>> s = read_settings({"DLUM_PRECISION": "FP32", "DLUM_COMPILE": "0"})
>>> s.precision, s.compile
(<Precision.FP32: 'fp32'>, False)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dlum.constants import MAX_PIXELS, Precision
from dlum.errors import DLUMError

__all__ = [
    "REPO_ROOT",
    "DEFAULT_CHECKPOINT",
    "CHECKPOINT_ENV",
    "DEFAULT_FINDER",
    "FINDER_ENV",
    "DATA_ENV",
    "DEFAULT_STUDY_DIR",
    "STUDY_DIR_ENV",
    "study_dir",
    "PRECISION_ENV",
    "COMPILE_ENV",
    "ALLOW_DOWNLOAD_ENV",
    "LIMIT_ENVS",
    "Limits",
    "limits",
    "SettingsError",
    "Settings",
    "read_settings",
    "distributed",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shipped checkpoint, relative to the repository root.
DEFAULT_CHECKPOINT = Path("checkpoints", "dlum-public-v2")
#: The shipped ultrasound lesion finder (:mod:`dlum.localize`), relative to the repository root.
DEFAULT_FINDER = Path("checkpoints", "us-finder-v1")

CHECKPOINT_ENV = "DLUM_CHECKPOINT"
FINDER_ENV = "DLUM_FINDER"
DATA_ENV = "DLUM_DATA_DIR"
STUDY_DIR_ENV = "DLUM_STUDY_DIR"
STUDY_ADMIN_CODE_ENV = "DLUM_STUDY_ADMIN_CODE"
#: The reading-session store's folder (:mod:`dlum.study_store`), relative to the repository root.
DEFAULT_STUDY_DIR = Path("studies")
PRECISION_ENV = "DLUM_PRECISION"
COMPILE_ENV = "DLUM_COMPILE"
ALLOW_DOWNLOAD_ENV = "DLUM_ALLOW_DOWNLOAD"
_MIB = 1024 * 1024


class SettingsError(DLUMError, ValueError):
    """An environment setting with a value dlum cannot use."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={env.get(name)!r}: use 1 (on) or 0 (off)")


def _int(env: Mapping[str, str], name: str, default: int, *, least: int = 0) -> int:
    value = env.get(name, "").strip().replace("_", "")
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={env.get(name)!r} is not a whole number") from None
    if number < least:
        raise SettingsError(f"{name}={env.get(name)!r} is below {least}")
    return number


@dataclass(frozen=True)
class Limits:
    """Resource bounds on what users give dlum; each is checked before the memory is spent.

    >>> limits({"DLUM_MAX_PIXELS": "1000"}).max_pixels
    1000
    """

    max_pixels: int = MAX_PIXELS
    max_image_bytes: int = 256 * _MIB
    max_table_bytes: int = 50 * _MIB
    max_table_rows: int = 200_000
    max_problems: int = 1000

    def as_dict(self) -> dict[str, str]:
        return {
            "DLUM_MAX_PIXELS": f"{self.max_pixels:,}",
            "DLUM_MAX_IMAGE_MB": f"{self.max_image_bytes // _MIB:,}",
            "DLUM_MAX_TABLE_MB": f"{self.max_table_bytes // _MIB:,}",
            "DLUM_MAX_TABLE_ROWS": f"{self.max_table_rows:,}",
            "DLUM_MAX_PROBLEMS": f"{self.max_problems:,}",
        }


#: The environment variables of :class:`Limits`.
LIMIT_ENVS = tuple(Limits().as_dict())


def limits(environ: Mapping[str, str] | None = None) -> Limits:
    """The resource bounds from ``environ`` (default: the process environment), read at each
    call so that a changed variable applies at once. Raises SettingsError."""
    env = os.environ if environ is None else environ
    base = Limits()
    return Limits(
        max_pixels=_int(env, "DLUM_MAX_PIXELS", base.max_pixels, least=1),
        max_image_bytes=_int(env, "DLUM_MAX_IMAGE_MB", base.max_image_bytes // _MIB, least=1) * _MIB,
        max_table_bytes=_int(env, "DLUM_MAX_TABLE_MB", base.max_table_bytes // _MIB, least=1) * _MIB,
        max_table_rows=_int(env, "DLUM_MAX_TABLE_ROWS", base.max_table_rows, least=1),
        max_problems=_int(env, "DLUM_MAX_PROBLEMS", base.max_problems, least=1),
    )


@dataclass(frozen=True)
class Settings:
    """What the environment asks of dlum (see the module docstring)."""

    checkpoint: Path
    data_dir: Path | None
    precision: Precision
    compile: bool
    allow_download: bool
    limits: Limits = Limits()
    finder: Path = REPO_ROOT / DEFAULT_FINDER
    study_dir: Path = REPO_ROOT / DEFAULT_STUDY_DIR

    def as_dict(self) -> dict[str, str]:
        return {
            CHECKPOINT_ENV: str(self.checkpoint),
            FINDER_ENV: str(self.finder),
            DATA_ENV: str(self.data_dir) if self.data_dir else "(none found)",
            STUDY_DIR_ENV: str(self.study_dir),
            PRECISION_ENV: str(self.precision),
            COMPILE_ENV: "1" if self.compile else "0",
            ALLOW_DOWNLOAD_ENV: "1" if self.allow_download else "0",
            **self.limits.as_dict(),
        }


def _data_dir(env: Mapping[str, str]) -> Path | None:
    given = env.get(DATA_ENV, "").strip()
    candidates = [Path(given)] if given else []
    candidates.append(REPO_ROOT / ".." / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return Path(os.path.abspath(candidate))
    return None


def _folder(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A folder setting: the variable's value, else ``default``; relative to the repository."""
    given = env.get(name, "").strip()
    folder = Path(given) if given else default
    return folder if folder.is_absolute() else REPO_ROOT / folder


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``environ`` (default: the process environment). Raises SettingsError."""
    env = os.environ if environ is None else environ
    checkpoint = _folder(env, CHECKPOINT_ENV, DEFAULT_CHECKPOINT)
    precision_text = env.get(PRECISION_ENV, "").strip().lower() or Precision.AUTO.value
    try:
        precision = Precision(precision_text)
    except ValueError:
        raise SettingsError(f"{PRECISION_ENV}={env.get(PRECISION_ENV)!r} is not one of "
                            f"{', '.join(p.value for p in Precision)}") from None
    return Settings(
        checkpoint=checkpoint,
        data_dir=_data_dir(env),
        precision=precision,
        compile=_flag(env, COMPILE_ENV),
        allow_download=_flag(env, ALLOW_DOWNLOAD_ENV),
        limits=limits(env),
        finder=_folder(env, FINDER_ENV, DEFAULT_FINDER),
        study_dir=study_dir(env),
    )


def study_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The reading-session store's folder (``DLUM_STUDY_DIR``; need not exist yet, it is made
    when the first study is set up). Raises SettingsError when the path is a file."""
    env = os.environ if environ is None else environ
    folder = _folder(env, STUDY_DIR_ENV, DEFAULT_STUDY_DIR)
    if folder.exists() and not folder.is_dir():
        raise SettingsError(f"{STUDY_DIR_ENV}={env.get(STUDY_DIR_ENV)!r} is a file, not a folder")
    return folder


def distributed(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them (0, 1, 0 when not set)."""
    env = os.environ if environ is None else environ
    world = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    local = _int(env, "LOCAL_RANK", 0)
    if world < 1 or rank >= world:
        raise SettingsError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return rank, world, local
