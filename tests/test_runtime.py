import torch

from dlum.runtime import autocast, describe_device, fast_dtype, resolve_device


def test_auto_device_is_cuda_only_when_available():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_precision_policy(monkeypatch):
    cpu = torch.device("cpu")
    assert fast_dtype(cpu, "fp32") == torch.float32
    assert fast_dtype(cpu, "bf16") == torch.bfloat16
    monkeypatch.setattr("dlum.runtime.cpu_has_amx", lambda: False)
    assert fast_dtype(cpu) == torch.float32  # emulated bf16 is slower than fp32 without AMX
    monkeypatch.setattr("dlum.runtime.cpu_has_amx", lambda: True)
    assert fast_dtype(cpu) == torch.bfloat16


def test_autocast_runs_bf16_and_fp32_is_plain():
    cpu = torch.device("cpu")
    x = torch.randn(4, 4)
    with autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(cpu, torch.float32):
        assert (x @ x).dtype == torch.float32
    assert describe_device(cpu).startswith("CPU")
