"""Where and how tensors are computed: device choice and the fast, safe precision for it."""
from __future__ import annotations

import contextlib
import platform
from functools import lru_cache

import torch

__all__ = [
    "resolve_device",
    "cpu_has_amx",
    "fast_dtype",
    "autocast",
    "describe_device",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles (bf16 matrix units), where bf16 autocast pays off."""
    probe = getattr(getattr(torch._C, "_cpu", None), "_is_amx_tile_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:  # pragma: no cover - depends on the build
            return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            return "amx_bf16" in f.read()
    except OSError:  # pragma: no cover
        return False


def fast_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """Precision for probabilities: bf16 on GPUs that support it and on CPUs with AMX, else fp32.

    Without AMX (e.g. AVX2-only CPUs) bf16 convolutions are emulated and slower than fp32, so
    ``"auto"`` keeps fp32 there. ``requested`` may force ``"bf16"`` or ``"fp32"``.
    """
    if requested in ("fp32", "float32"):
        return torch.float32
    if requested in ("bf16", "bfloat16"):
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_amx():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` for bf16, a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_device(device: torch.device) -> str:
    """A human-readable name of the device, e.g. 'NVIDIA H100 80GB HBM3' or 'CPU (2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    amx = ", AMX" if cpu_has_amx() else ""
    return f"CPU: {cpu} ({torch.get_num_threads()} threads{amx})"
