"""dlum: DL-UM, a deep-learning fusion of breast ultrasound and mammography.

Implements Xu Z, Zhong S, Gao Y, et al. "Optimizing breast lesions diagnosis and decision-making
with a deep learning fusion model integrating ultrasound and mammography: a dual-center
retrospective study." Breast Cancer Research, 2025. For research use only.
"""
from __future__ import annotations

__version__ = "0.1.0"

from dlum.errors import CheckpointError, CohortError, DLUMError, InputError  # noqa: E402

__all__ = ["__version__", "CheckpointError", "CohortError", "DLUMError", "InputError"]
