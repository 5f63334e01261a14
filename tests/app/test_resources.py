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


# ---------------------------------------------------------------------------------- lesion finder
def test_the_lesion_finder_is_loaded_once_and_its_absence_is_a_message(app_finder, tmp_path,
                                                                        monkeypatch):
    res.load_finder.clear()
    try:
        monkeypatch.setenv(res.FINDER_ENV, str(tmp_path / "nowhere"))
        missing = res.get_finder()
        assert missing.finder is None and "No ultrasound lesion finder" in missing.message
        assert "DLUM_FINDER" in missing.message

        damaged = tmp_path / "damaged"
        damaged.mkdir()
        (damaged / "card.json").write_text("{not json")
        (damaged / "model.safetensors").write_bytes(b"not safetensors")
        monkeypatch.setenv(res.FINDER_ENV, str(damaged))
        broken = res.get_finder()
        assert broken.finder is None and "could not be loaded" in broken.message
        assert "card.json" in broken.message and "draw the lesion box by hand" in broken.message
        assert res.get_finder() is broken  # the failure is cached, not read again every rerun

        monkeypatch.setenv(res.FINDER_ENV, str(app_finder))
        loaded = res.get_finder()
        assert loaded.finder is not None and loaded.message == ""
        assert loaded.key.endswith(":test-dark-blob-finder")
        assert res.get_finder().finder is loaded.finder  # one per process
    finally:
        res.load_finder.clear()
