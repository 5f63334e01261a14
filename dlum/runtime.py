"""Where and how tensors are computed: device choice and the fast, safe precision for it."""
from __future__ import annotations

import contextlib
import platform
from functools import lru_cache

import torch

__all__ = [
    "resolve_device",
    "cpu_flags",
    "cpu_has_amx",
    "cpu_has_avx512_bf16",
    "cpu_bf16_kind",
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


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:  # pragma: no cover - not Linux
        pass
    return set()


def _torch_cpu_probe(name: str, flag: str) -> bool:
    """Ask torch's own CPU probe ``torch.cpu.<name>`` (present in recent releases), else look for
    ``flag`` in /proc/cpuinfo."""
    probe = getattr(torch.cpu, name, None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:  # pragma: no cover - depends on the build
            pass
    return flag in cpu_flags()


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles (bf16 matrix units, Intel Sapphire Rapids and later)."""
    return _torch_cpu_probe("_is_amx_tile_supported", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_avx512_bf16() -> bool:
    """True when this CPU has AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake)."""
    return _torch_cpu_probe("_is_avx512_bf16_supported", "avx512_bf16")


def cpu_bf16_kind() -> str:
    """``"AMX"`` or ``"AVX512-BF16"`` where this CPU computes bf16 natively, else ``""``."""
    if cpu_has_amx():
        return "AMX"
    if cpu_has_avx512_bf16():
        return "AVX512-BF16"
    return ""


def fast_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """Precision for probabilities: bf16 on GPUs that support it and on CPUs with native bf16
    (AMX or AVX512-BF16), else fp32.

    Measured on the DL-UM pair path (``benchmarks/bench_inference.py``): with AVX512-BF16 (2-core
    AMD EPYC Zen 4) bf16 is about 2× faster than fp32; on AVX2-only CPUs bf16 convolutions are
    emulated and about 8× slower, so ``"auto"`` keeps fp32 there. ``requested`` may force
    ``"bf16"`` or ``"fp32"``.
    """
    if requested in ("fp32", "float32"):
        return torch.float32
    if requested in ("bf16", "bfloat16"):
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_bf16_kind():
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
    kind = cpu_bf16_kind()
    return f"CPU: {cpu} ({torch.get_num_threads()} threads{', ' + kind if kind else ''})"
