"""Training on synthetic phantoms: the loss falls, checkpoints round-trip, DDP runs on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlum.checkpoint import load_checkpoint
from dlum.data.crops import CropSet, extract_crops
from dlum.data.manifest import read_cohort
from dlum.data.synthetic import make_phantom_cohort
from dlum.constants import Arch
from dlum.errors import DLUMError
from dlum.training import (ARCHS, PairDataset, TrainConfig, assign_folds, fit, loss_and_optimizer,
                           train_one_epoch, validate)

REPO = Path(__file__).resolve().parents[1]
QUICK = dict(pretrained=False, input_size=32, batch_size=8, num_workers=0, seed=0)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    table = make_phantom_cohort(tmp_path_factory.mktemp("phantoms"), n=24, seed=3, size=64)
    cohort = read_cohort(table)
    return table, cohort, extract_crops(cohort, progress=False)


def test_loss_falls_and_checkpoint_round_trips(phantoms, tmp_path):
    _, cohort, crops = phantoms
    card = fit(cohort, crops, tmp_path, TrainConfig(arch="dlum", epochs=3, lr=3e-4, **QUICK),
               progress=False)
    log = json.loads((tmp_path / "log.json").read_text())
    assert len(log) == 3
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert card.training["epoch_kept"] == 1 + int(np.argmin([e["val_loss"] for e in log]))
    # the shipped (fp16) weights reproduce the held-out predictions written by training
    model, loaded_card = load_checkpoint(tmp_path)
    assert loaded_card.to_dict() == json.loads(json.dumps(card.to_dict()))  # what was written
    from dlum.training import predict_rows

    held = pd.read_csv(tmp_path / "held_out_predictions.csv")
    rows = cohort.index[cohort["case_id"].isin(held["case_id"])].to_numpy()
    again = predict_rows(model, "dlum", crops, rows, imagenet=False, device=torch.device("cpu"),
                         dtype=torch.float32, size=32)
    np.testing.assert_allclose(again["p_dlum"], held["p_dlum"], atol=1e-6)
    # the resume state is gone once training finished
    assert not (tmp_path / "last_state.safetensors").exists()


def test_pair_predictions_run_each_image_once_and_equal_the_full_forward(phantoms, monkeypatch):
    """predict_rows runs a branch once per distinct image (a reused mammogram is read once) and
    gives what DL-UM's own forward gives for each pair."""
    from dlum.networks import DLUM
    from dlum.training import predict_rows

    import dataclasses

    crops = phantoms[2]
    crops = dataclasses.replace(crops, index={m: v.copy() for m, v in crops.index.items()})
    crops.index["mg"][[2, 3]] = crops.index["mg"][0]  # three rows share one mammogram
    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    rows = np.array([0, 1, 2, 3, 0, 5, 1])  # rows 0 and 1 twice
    seen = []
    monkeypatch.setattr(model.mg_branch, "forward",
                        lambda x, f=model.mg_branch.forward: seen.append(len(x)) or f(x))
    got = predict_rows(model, "dlum", crops, rows, imagenet=False, device=torch.device("cpu"),
                       dtype=torch.float32, size=32)
    assert sum(seen) == len(np.unique(crops.index["mg"][rows]))
    dataset = PairDataset(crops, rows, imagenet=False, size=32)
    us, mg, _ = (torch.stack(t) for t in zip(*(dataset[i] for i in range(len(rows)))))
    with torch.no_grad():
        out = model(us, mg)
    np.testing.assert_allclose(got["p_dlum"], torch.sigmoid(out.fused).numpy(), atol=1e-6)
    np.testing.assert_allclose(got["p_us_head"], torch.sigmoid(out.us[-1]).numpy(), atol=1e-6)
    np.testing.assert_allclose(got["p_mg_head"], torch.sigmoid(out.mg[-1]).numpy(), atol=1e-6)


def test_single_branch_baseline_and_resume(phantoms, tmp_path):
    _, cohort, crops = phantoms
    config = TrainConfig(arch="dlm", epochs=1, **QUICK)
    fit(cohort, crops, tmp_path, config, progress=False)
    first = json.loads((tmp_path / "log.json").read_text())
    # resuming a finished run of 1 epoch to 2 epochs trains exactly one more epoch
    from dlum.training import _save_state

    model, _ = load_checkpoint(tmp_path)
    opt = torch.optim.Adam(model.parameters())
    _save_state(tmp_path / "last_state.safetensors", model, opt, 1,
                {"epoch": 1, "val_loss": first[0]["val_loss"], "val_auc": first[0]["val_auc"]})
    from dlum.checkpoint import save_checkpoint

    save_checkpoint(tmp_path, model, {"model": model.config()}, weights_name="best.safetensors")
    card = fit(cohort, crops, tmp_path, TrainConfig(arch="dlm", epochs=2, **QUICK), progress=False)
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["epoch"] for e in log] == [1, 2]
    held = pd.read_csv(tmp_path / "held_out_predictions.csv")
    assert "p_dlm" in held and held["p_dlm"].between(0, 1).all()
    assert card.arch == "dlm"


def test_folds_are_patient_level_and_stratified(phantoms):
    _, cohort, _ = phantoms
    folds = assign_folds(cohort, 5, seed=0)
    assert set(folds) == set(range(5))
    per_patient = pd.Series(folds).groupby(cohort["patient_id"].to_numpy()).nunique()
    assert (per_patient == 1).all()


def test_crop_cache_round_trip(phantoms, tmp_path):
    _, cohort, crops = phantoms
    path = crops.save(tmp_path / "crops.npz")
    again = CropSet.load(path)
    assert len(again) == len(crops)
    for m in ("us", "mg"):
        for row in (0, len(cohort) - 1):
            np.testing.assert_array_equal(again.crop(m, row), crops.crop(m, row))


@pytest.mark.parametrize("change, message", [
    (dict(arch="dlx"), "unknown --arch 'dlx'; choose one of dlum, dlu, dlm"),
    (dict(precision="fp16"), "unknown --precision 'fp16'; choose one of auto, fp32, bf16"),
    (dict(epochs=0), "--epochs must be at least 1 (got 0)"),
    (dict(batch_size=0), "--batch-size must be at least 1 (got 0)"),
    (dict(lr=0.0), "--lr must be a finite number above 0 (got 0.0)"),
    (dict(lr=-1e-4), "--lr must be a finite number above 0 (got -0.0001)"),
    (dict(lr=float("nan")), "--lr must be a finite number above 0 (got nan)"),
    (dict(lr=float("inf")), "--lr must be a finite number above 0 (got inf)"),
    (dict(folds=1), "--folds must be at least 2 (got 1)"),
    (dict(fold=5, folds=5), "--fold must be in 0..4 (got 5)"),
    (dict(fold=-1), "--fold must be in 0..4 (got -1)"),
    (dict(modality_dropout=1.0), "--modality-dropout must be in [0, 1) (got 1.0)"),
    (dict(arch="dlu", redraw_pairs=True),
     "--modality-dropout and --redraw-pairs act on DL-UM's pairs: use --arch dlum"),
])
def test_config_refuses_bad_values_with_a_clear_message(change, message):
    with pytest.raises(DLUMError) as err:
        TrainConfig(**change)
    assert str(err.value) == message


def test_config_accepts_every_arch_and_precision_spelling():
    assert ARCHS == ("dlum", "dlu", "dlm")
    for arch in (*ARCHS, Arch.DLU):
        config = TrainConfig(arch=arch)
        assert type(config.arch) is str and config.arch == arch
    for precision in ("auto", "fp32", "bf16", "float32", "bfloat16"):
        assert TrainConfig(precision=precision).precision == precision  # stored as given
    assert TrainConfig(fold=4, folds=5).fold == 4


def test_one_epoch_and_validation_on_a_tiny_model(phantoms):
    from torch.utils.data import DataLoader

    from dlum.training import _build

    _, cohort, crops = phantoms
    torch.manual_seed(0)
    config = TrainConfig(arch="dlu", lr=3e-4, **QUICK)
    model = _build(config)
    criterion, optimizer = loss_and_optimizer(model, config)
    rows = np.arange(len(cohort))
    data = PairDataset(crops, rows, imagenet=False, modalities=Arch.DLU.modalities, size=32)
    cpu, fp32 = torch.device("cpu"), torch.float32
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    trained = train_one_epoch(model, "dlu", criterion, optimizer, loader, device=cpu, dtype=fp32,
                              max_steps=2)
    assert np.isfinite(trained.loss) and trained.loss > 0
    assert trained.pairs_per_second > 0 and trained.seconds > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it learnt
    checked = validate(model, "dlu", criterion, DataLoader(data, batch_size=32), device=cpu,
                       dtype=fp32)
    assert not model.training
    assert np.isfinite(checked.loss) and 0 <= checked.auc <= 1
    again = validate(model, Arch.DLU, criterion, DataLoader(data, batch_size=5), device=cpu, dtype=fp32)
    assert again.loss == pytest.approx(checked.loss, rel=1e-5)  # batching does not change it
    assert again.auc == pytest.approx(checked.auc)


# ------------------------------------------------------- levers for pseudo-pairs (paper recipe)
def test_modality_keep_drops_at_most_one_modality_at_the_asked_rate():
    from dlum.training import modality_keep

    keep = modality_keep(20000, 0.3, torch.Generator().manual_seed(0))
    assert set(keep.sum(1).tolist()) == {1.0, 2.0}  # never both gone
    assert (keep.sum(1) == 1).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert keep[:, 0].mean().item() == pytest.approx(keep[:, 1].mean().item(), abs=0.02)
    assert torch.equal(modality_keep(50, 0.0), torch.ones(50, 2))


def test_a_dropped_modality_leaves_the_fused_output_blind_to_it():
    from dlum.networks import DLUM

    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    us, mg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    keep = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # pair 0 without MG, pair 1 without US
    with torch.no_grad():
        a = model(us, mg, keep).fused
        b = model(us, torch.rand(2, 3, 32, 32), keep).fused
        c = model(torch.rand(2, 3, 32, 32), mg, keep).fused
        plain = model(us, mg).fused
    assert a[0] == b[0] and a[1] != b[1]  # pair 0 ignores its mammogram
    assert a[1] == c[1] and a[0] != c[0]  # pair 1 ignores its ultrasound
    assert torch.equal(model(us, mg, torch.ones(2, 2)).fused, plain)  # keeping both changes nothing


def test_redrawn_pairs_draw_mg_partners_of_the_same_pathology_from_training_rows_only(
        phantoms, monkeypatch):
    import dlum.training
    from dlum.training import redraw_pools

    _, cohort, crops = phantoms
    train = np.flatnonzero(cohort["split"].to_numpy() == "train")
    pools = redraw_pools(cohort.assign(pairing="pseudo"), crops, train)
    for label in (0, 1):
        assert set(pools[label]) == set(crops.index["mg"][train[crops.labels[train] == label]])
    number = {id(crop): c for c, crop in enumerate(crops.crops["mg"])}  # which crop was read
    monkeypatch.setattr(dlum.training, "to_network_input",
                        lambda crop, size, imagenet: torch.tensor(float(number.get(id(crop), -1))))
    data = PairDataset(crops, train, imagenet=False, size=32, redraw_mg=pools)
    drawn = {0: set(), 1: set()}
    for _ in range(8):  # eight "epochs"
        for i, row in enumerate(train):
            label, partner = int(crops.labels[row]), int(data[i][1])
            assert partner in pools[label]  # a training MG lesion of the same pathology
            drawn[label].add(partner)
    assert all(drawn[label] == set(pools[label]) for label in (0, 1))  # re-drawn over the pool
    with pytest.raises(DLUMError, match="pseudo-pairs only"):
        redraw_pools(cohort, crops, train)  # phantom pairs are same-patient pairs


def test_the_paper_recipe_trains_with_both_levers_and_records_them(phantoms, tmp_path):
    _, cohort, crops = phantoms
    config = TrainConfig(arch="dlum", epochs=1, modality_dropout=0.5, redraw_pairs=True,
                         max_steps_per_epoch=1, **QUICK)
    card = fit(cohort.assign(pairing="pseudo"), crops, tmp_path, config, progress=False)
    assert card.training["modality_dropout"] == 0.5 and card.training["redraw_pairs"] is True
    deviations = " ".join(card.training["deviations_from_paper"])
    assert "modality dropout" in deviations and "re-drawn" in deviations


# ----------------------------------------------------- `python -m dlum train` and its crop file
TRAIN_QUICK = ["--arch", "dlu", "--epochs", "1", "--max-steps-per-epoch", "1", "--pretrained",
               "false", "--input-size", "32", "--batch-size", "8", "--device", "cpu",
               "--num-workers", "0"]


@pytest.fixture
def prepared_like(tmp_path):
    """A phantom cohort.csv with its crops.npz beside it, as `python -m dlum prepare` leaves them."""
    table = make_phantom_cohort(tmp_path / "cohort", n=24, seed=3, size=64)
    cohort = read_cohort(table)
    crops = extract_crops(cohort, progress=False)
    crops.save(table.parent / "crops.npz")
    return table, cohort, crops


def _train(table, out, *extra):
    from dlum import cli

    return cli.main(["train", "--cohort", str(table), "--out", str(out), *TRAIN_QUICK, *extra])


def test_train_uses_the_crops_beside_the_table(prepared_like, tmp_path, capsys):
    table, _, _ = prepared_like
    for folder in ("us", "mg"):  # the images are not needed any more
        (table.parent / folder).rename(tmp_path / folder)
    assert _train(table, tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert f"using the crops in {table.parent / 'crops.npz'}" in err
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert _train(table, tmp_path / "quiet", "--quiet") == 0
    assert "using the crops" not in capsys.readouterr().err


def _spoil(crops, change: str):
    """The crops of another table: one row short, every label flipped, or cut from other boxes."""
    if change == "rows":
        return crops.subset(np.arange(len(crops) - 1))
    if change == "boxes":
        crops.keys["mg"] = np.char.add(crops.keys["mg"], "0")
        return crops
    crops.labels = 1 - crops.labels
    return crops


PROBLEM = {"rows": "rows but the table has", "labels": "labels differ",
           "boxes": "MG crops were cut from other images or boxes"}


@pytest.mark.parametrize("change", ["rows", "labels", "boxes"])
def test_train_ignores_crops_beside_the_table_that_do_not_match(prepared_like, tmp_path, capsys, change):
    table, _, crops = prepared_like
    _spoil(crops, change).save(table.parent / "crops.npz")
    assert _train(table, tmp_path / "run", "--quiet") == 0  # cropped from the images instead
    err = capsys.readouterr().err
    assert f"ignoring {table.parent / 'crops.npz'}" in err and "cropping the images instead" in err
    assert PROBLEM[change] in err
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("change", ["rows", "labels", "boxes"])
def test_train_refuses_given_crops_that_do_not_match(prepared_like, tmp_path, capsys, change):
    table, _, crops = prepared_like
    other = _spoil(crops, change).save(tmp_path / "other.npz")
    assert _train(table, tmp_path / "run", "--crops", str(other), "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dlum train: error: {other} is not the crops of {table}")
    assert PROBLEM[change] in err
    assert "Traceback" not in err and not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(phantoms, tmp_path):
    table, cohort, crops = phantoms
    crops.save(tmp_path / "crops.npz")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dlum", "train", "--cohort", str(table), "--crops", str(tmp_path / "crops.npz"),
           "--arch", "dlu", "--out", str(tmp_path / "ddp"), "--epochs", "1", "--pretrained", "false",
           "--input-size", "32", "--batch-size", "4", "--device", "cpu", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((tmp_path / "ddp" / "card.json").read_text())
    assert card["training"]["world_size"] == 2
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


def test_train_crops_the_images_again_when_one_was_replaced_under_its_name(prepared_like, tmp_path,
                                                                          capsys):
    from PIL import Image

    table, cohort, _ = prepared_like
    target = cohort.loc[0, "us_image"]
    pixels = np.asarray(Image.open(target)).copy()
    Image.fromarray(255 - pixels).save(target)  # another image under the same name
    assert _train(table, tmp_path / "run", "--quiet") == 0
    err = capsys.readouterr().err
    assert f"ignoring {table.parent / 'crops.npz'}" in err and "cropping the images instead" in err
    assert "US crops were cut from other image bytes" in err and Path(target).name in err
    given = table.parent / "crops.npz"
    assert _train(table, tmp_path / "given", "--crops", str(given), "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dlum train: error: {given} is not the crops of {table}")
    assert "other image bytes" in err and not (tmp_path / "given").exists()


# ------------------------------------------- no patient or image in two splits, unless allowed
def _share_a_patient(table) -> tuple[str, str]:
    """Give a validation row the patient of a training row; returns (patient, its case ids)."""
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    train = frame.index[frame["split"] == "train"][0]
    val = frame.index[frame["split"] == "validation"][0]
    frame.loc[val, "patient_id"] = frame.loc[train, "patient_id"]
    frame.to_csv(table, index=False, lineterminator="\n")
    return frame.loc[train, "patient_id"], frame.loc[val, "case_id"]


@pytest.mark.parametrize("crops_beside", [True, False])
def test_train_refuses_a_patient_in_train_and_validation(prepared_like, tmp_path, capsys,
                                                         crops_beside):
    table, _, _ = prepared_like
    patient, case = _share_a_patient(table)
    if not crops_beside:  # refused before the images are cropped
        (table.parent / "crops.npz").unlink()
    out = tmp_path / "run"
    assert _train(table, out, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("dlum train: error: ") and "Traceback" not in err
    assert f"value '{patient}': patient in 2 splits: train (1 row" in err
    assert f"and validation (1 row: case_id {case})" in err
    assert "--allow-split-overlap" in err
    assert not out.exists()  # nothing written


def test_train_with_allow_split_overlap_warns_and_records_it(prepared_like, tmp_path, capsys):
    table, _, _ = prepared_like
    patient, _ = _share_a_patient(table)
    with pytest.warns(UserWarning, match="1 patient\\(s\\) or image\\(s\\) are in two splits"):
        assert _train(table, tmp_path / "run", "--quiet", "--allow-split-overlap") == 0
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["training"]["allow_split_overlap"] is True
    record = card["training"]["split_overlap"]
    assert record["found"] == 1 and record["allowed"] is True and record["compared"] == "bytes"
    assert patient in record["listed"][0] and "validation" in record["listed"][0]


def test_a_clean_cohort_is_recorded_as_checked(phantoms, tmp_path):
    _, cohort, crops = phantoms
    card = fit(cohort, crops, tmp_path, TrainConfig(arch="dlu", epochs=1, max_steps_per_epoch=1,
                                                    **QUICK), progress=False)
    assert card.training["split_overlap"] == {"found": 0, "compared": "bytes"}
    assert card.training["allow_split_overlap"] is False


def test_fit_refuses_an_mg_woman_in_the_training_and_validation_folds(phantoms, tmp_path):
    from dlum.data.manifest import SplitOverlapError

    _, cohort, crops = phantoms
    pseudo = cohort.assign(pairing="pseudo",  # 24 US patients, 2 MG women: folds cannot part them
                           patient_id=[f"u{i}+w{i % 2}" for i in range(len(cohort))])
    with pytest.raises(SplitOverlapError, match="MG woman in 3 splits: training folds "):
        fit(pseudo, crops, tmp_path / "cv", TrainConfig(arch="dlu", epochs=1, fold=0, folds=2,
                                                        **QUICK), progress=False)
    assert not (tmp_path / "cv").exists()


def test_folds_keep_a_pseudo_pairs_us_patient_together():
    n = 40  # 20 US patients with two lesions each, each lesion paired with another MG woman
    cohort = pd.DataFrame({"patient_id": [f"u{i // 2}+w{i}" for i in range(n)],
                           "pairing": "pseudo", "label": [(i // 2) % 2 for i in range(n)]})
    folds = assign_folds(cohort, 4, seed=0)
    assert (pd.Series(folds).groupby([i // 2 for i in range(n)]).nunique() == 1).all()
