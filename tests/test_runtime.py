import torch

from dlum import runtime
from dlum.runtime import autocast, describe_device, fast_dtype, resolve_device


def test_auto_device_is_cuda_only_when_available():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_precision_policy(monkeypatch):
    cpu = torch.device("cpu")
    assert fast_dtype(cpu, "fp32") == torch.float32
    assert fast_dtype(cpu, "bf16") == torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_bf16_kind", lambda: "")
    assert fast_dtype(cpu) == torch.float32  # emulated bf16 is slower than fp32 (AVX2 only)
    for kind in ("AMX", "AVX512-BF16"):
        monkeypatch.setattr(runtime, "cpu_bf16_kind", lambda kind=kind: kind)
        assert fast_dtype(cpu) == torch.bfloat16
        assert describe_device(cpu).endswith(f", {kind})")


def test_native_bf16_probe_agrees_with_cpuinfo(monkeypatch):
    flags = runtime.cpu_flags()
    if flags:  # Linux: torch's probe and the kernel's flags must say the same
        assert runtime.cpu_has_avx512_bf16() == ("avx512_bf16" in flags)
        assert runtime.cpu_has_amx() == ("amx_bf16" in flags)
    # Without torch's probe the flags decide.
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert runtime._torch_cpu_probe("_is_avx512_bf16_supported", "avx512_bf16")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2"})
    assert not runtime._torch_cpu_probe("_is_avx512_bf16_supported", "avx512_bf16")


def test_autocast_runs_bf16_and_fp32_is_plain():
    cpu = torch.device("cpu")
    x = torch.randn(4, 4)
    with autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(cpu, torch.float32):
        assert (x @ x).dtype == torch.float32
    assert describe_device(cpu).startswith("CPU")
