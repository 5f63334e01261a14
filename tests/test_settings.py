"""dlum.settings: every environment setting read in one place and validated."""
from __future__ import annotations

import pytest

from dlum.constants import Precision
from dlum.settings import DEFAULT_CHECKPOINT, REPO_ROOT, SettingsError, distributed, read_settings


def test_defaults():
    s = read_settings({})
    assert s.checkpoint == REPO_ROOT / DEFAULT_CHECKPOINT
    assert (s.precision, s.compile, s.allow_download) == (Precision.AUTO, False, False)


def test_values_are_read_and_bad_ones_named(tmp_path):
    s = read_settings({"DLUM_CHECKPOINT": str(tmp_path), "DLUM_PRECISION": " BF16 ",
                       "DLUM_COMPILE": "1", "DLUM_DATA_DIR": str(tmp_path)})
    assert (s.checkpoint, s.precision, s.compile, s.data_dir) == (tmp_path, Precision.BF16, True, tmp_path)
    with pytest.raises(SettingsError, match="DLUM_PRECISION='fp8' is not one of auto, fp32, bf16"):
        read_settings({"DLUM_PRECISION": "fp8"})
    with pytest.raises(SettingsError, match="DLUM_COMPILE='maybe'"):
        read_settings({"DLUM_COMPILE": "maybe"})


def test_distributed():
    assert distributed({}) == (0, 1, 0)
    assert distributed({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(SettingsError):
        distributed({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(SettingsError, match="whole number"):
        distributed({"WORLD_SIZE": "two"})


def test_info_command_prints_settings_versions_and_checkpoint(capsys):
    from dlum.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "DLUM_PRECISION = auto" in out and "torch " in out and "dlum-public-v2" in out
    from dlum.card import read_card

    assert f"p_dlum {read_card(read_settings({}).checkpoint).threshold:.3f}" in out


def test_resource_limits_have_defaults_overrides_and_refuse_nonsense():
    from dlum.settings import Limits, limits

    assert limits({}) == Limits()
    assert Limits().max_pixels == 30_000_000 and Limits().max_image_bytes == 256 * 2**20
    got = limits({"DLUM_MAX_PIXELS": "1_000", "DLUM_MAX_IMAGE_MB": "2", "DLUM_MAX_TABLE_MB": "3",
                  "DLUM_MAX_TABLE_ROWS": "4", "DLUM_MAX_PROBLEMS": "5"})
    assert (got.max_pixels, got.max_image_bytes, got.max_table_bytes, got.max_table_rows,
            got.max_problems) == (1000, 2 * 2**20, 3 * 2**20, 4, 5)
    for name, value in (("DLUM_MAX_PIXELS", "0"), ("DLUM_MAX_IMAGE_MB", "-1"),
                        ("DLUM_MAX_TABLE_ROWS", "lots"), ("DLUM_MAX_PROBLEMS", "1.5")):
        with pytest.raises(SettingsError, match=name):
            limits({name: value})
    assert "DLUM_MAX_PIXELS" in read_settings({}).as_dict()


def test_info_fails_with_status_2_on_an_unusable_setting(capsys, monkeypatch):
    from dlum.cli import main

    monkeypatch.setenv("DLUM_MAX_PIXELS", "many")
    assert main(["info"]) == 2
    captured = capsys.readouterr()
    assert "settings: error: DLUM_MAX_PIXELS" in captured.out  # the report is still printed
    assert captured.err.startswith("dlum info: error: DLUM_MAX_PIXELS")
