"""Every environment setting dlum reads, in one place, validated when read.

=====================  ==================================================================
``DLUM_CHECKPOINT``    checkpoint folder the dashboard loads (default: the shipped
                       ``checkpoints/dlum-public-v2``; relative paths start at the repository)
``DLUM_DATA_DIR``      public data folder (default: ``../shared/data`` beside the repository)
``DLUM_PRECISION``     ``auto`` (default), ``fp32`` or ``bf16``: precision of the dashboard's
                       probabilities (CAMs always run in fp32)
``DLUM_COMPILE``       ``1`` to ``torch.compile`` the dashboard's model in the background
``DLUM_ALLOW_DOWNLOAD`` ``1`` to let training download torchvision's VGG19 weights
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

from dlum.constants import Precision
from dlum.errors import DLUMError

__all__ = [
    "REPO_ROOT",
    "DEFAULT_CHECKPOINT",
    "CHECKPOINT_ENV",
    "DATA_ENV",
    "PRECISION_ENV",
    "COMPILE_ENV",
    "ALLOW_DOWNLOAD_ENV",
    "SettingsError",
    "Settings",
    "read_settings",
    "distributed",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shipped checkpoint, relative to the repository root.
DEFAULT_CHECKPOINT = Path("checkpoints", "dlum-public-v2")

CHECKPOINT_ENV = "DLUM_CHECKPOINT"
DATA_ENV = "DLUM_DATA_DIR"
PRECISION_ENV = "DLUM_PRECISION"
COMPILE_ENV = "DLUM_COMPILE"
ALLOW_DOWNLOAD_ENV = "DLUM_ALLOW_DOWNLOAD"


class SettingsError(DLUMError, ValueError):
    """An environment setting with a value dlum cannot use."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={env.get(name)!r}: use 1 (on) or 0 (off)")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a whole number") from None
    if number < 0:
        raise SettingsError(f"{name}={value!r} is negative")
    return number


@dataclass(frozen=True)
class Settings:
    """What the environment asks of dlum (see the module docstring)."""

    checkpoint: Path
    data_dir: Path | None
    precision: Precision
    compile: bool
    allow_download: bool

    def as_dict(self) -> dict[str, str]:
        return {
            CHECKPOINT_ENV: str(self.checkpoint),
            DATA_ENV: str(self.data_dir) if self.data_dir else "(none found)",
            PRECISION_ENV: str(self.precision),
            COMPILE_ENV: "1" if self.compile else "0",
            ALLOW_DOWNLOAD_ENV: "1" if self.allow_download else "0",
        }


def _data_dir(env: Mapping[str, str]) -> Path | None:
    given = env.get(DATA_ENV, "").strip()
    candidates = [Path(given)] if given else []
    candidates.append(REPO_ROOT / ".." / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return Path(os.path.abspath(candidate))
    return None


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``environ`` (default: the process environment). Raises SettingsError."""
    env = os.environ if environ is None else environ
    given = env.get(CHECKPOINT_ENV, "").strip()
    checkpoint = Path(given) if given else DEFAULT_CHECKPOINT
    if not checkpoint.is_absolute():
        checkpoint = REPO_ROOT / checkpoint
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
    )


def distributed(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them (0, 1, 0 when not set)."""
    env = os.environ if environ is None else environ
    world = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    local = _int(env, "LOCAL_RANK", 0)
    if world < 1 or rank >= world:
        raise SettingsError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return rank, world, local
