"""The shared model resource: loaded once, warmed up, compiled in the background only when asked."""
from __future__ import annotations

import pytest

from dlum.app import resources as res
from dlum.inference import Predictor


@pytest.mark.parametrize("setting, expected", [("1", True), (None, False), ("0", False)])
def test_dashboard_compiles_in_the_background_when_asked(app_checkpoint, monkeypatch, setting,
                                                               expected):
    started = []
    monkeypatch.setattr(Predictor, "compile_in_background", lambda self: started.append(self))
    if setting is None:
        monkeypatch.delenv(res.COMPILE_ENV, raising=False)
    else:
        monkeypatch.setenv(res.COMPILE_ENV, setting)
    res.load_predictor.clear()
    try:
        predictor = res.load_predictor(str(app_checkpoint), 0.0)
    finally:
        res.load_predictor.clear()
    assert isinstance(predictor, Predictor)
    assert started == ([predictor] if expected else [])


@pytest.mark.parametrize("setting, expected", [(None, "auto"), ("fp32", "fp32"), (" BF16 ", "bf16")])
def test_dashboard_precision_from_the_environment(monkeypatch, setting, expected):
    if setting is None:
        monkeypatch.delenv(res.PRECISION_ENV, raising=False)
    else:
        monkeypatch.setenv(res.PRECISION_ENV, setting)
    assert res.dashboard_precision() == expected


def test_an_unusable_precision_setting_is_an_error_naming_it(monkeypatch):
    from dlum.settings import SettingsError

    monkeypatch.setenv(res.PRECISION_ENV, "double")
    with pytest.raises(SettingsError, match="DLUM_PRECISION='double'"):
        res.dashboard_precision()


def test_dashboard_loads_the_model_in_the_precision_asked(app_checkpoint, monkeypatch):
    import torch

    monkeypatch.setenv(res.PRECISION_ENV, "fp32")
    res.load_predictor.clear()
    try:
        predictor = res.load_predictor(str(app_checkpoint), 0.0)
    finally:
        res.load_predictor.clear()
    assert predictor.dtype == torch.float32
    assert "probabilities in float32" in res.device_summary(predictor)
