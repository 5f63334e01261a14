"""Block 5 tuned on cached block-4 features: the cached input is what the branch computes, an
identity start is the frozen function, and tuning learns a signal the start misses."""
import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dlum.block5_tuning import leading_identities, pooled_output, tune_block5
from dlum.frozen import block_features, identity_block
from dlum.networks.vgg import VGGBlock, VGGBranch


def test_cached_inputs_and_pooled_output_reproduce_the_branch():
    torch.manual_seed(0)
    branch = VGGBranch().eval()
    crops = [np.random.default_rng(i).random((40, 50)).astype(np.float32) for i in range(3)]
    batches = []
    features5 = block_features(branch, crops, imagenet=False, size=32, device=torch.device("cpu"),
                               dtype=torch.float32, batch_size=2, block5_inputs=batches)
    maps = np.concatenate(batches)
    assert len(batches) == 2 and maps.dtype == np.float16 and maps.shape == (3, 512, 2, 2)
    from dlum.data.transforms import to_network_input

    x = torch.stack([to_network_input(c, size=32, imagenet=False) for c in crops])
    with torch.no_grad():
        _, features = branch(x)  # block 5's pooled output, as the fusion head reads it
    np.testing.assert_allclose(pooled_output(branch.blocks[-1], maps), features.numpy(),
                               rtol=2e-2, atol=2e-2)  # the cache is float16
    np.testing.assert_allclose(features5[:, 1472 - 512:1472], features.numpy(), rtol=1e-4, atol=1e-5)


def _toy(n=96, seed=0):
    """Inputs whose label is the texture of channel 0 (malignant: a +/- checkerboard, benign:
    flat) at the same mean, so that a frozen identity block, which pools the mean, misses it."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    maps = rng.random((n, 8, 4, 4)).astype(np.float32)
    board = np.indices((4, 4)).sum(0) % 2 * 2 - 1.0
    maps[:, 0] = 1.0 + 0.75 * board * y[:, None, None]  # exact in float16
    turned = maps[:, :, ::-1, ::-1].copy()  # a second view: the same lesions turned by 180 degrees
    return [maps.astype(np.float16), turned.astype(np.float16)], y


def test_an_identity_start_is_the_frozen_function_and_tuning_learns_what_it_misses():
    torch.manual_seed(0)
    block = VGGBlock(8, 8, 2)
    identity_block(block)
    views, y = _toy()
    start = pooled_output(block, views[0])
    np.testing.assert_allclose(start, views[0].astype(np.float64).mean(axis=(2, 3)), atol=1e-6)
    assert roc_auc_score(y, start[:, 0]) == pytest.approx(0.5)  # the mean carries no label
    bn = copy.deepcopy(block.bn.state_dict())

    def training_auc(logit):
        features = torch.from_numpy(pooled_output(block, views[0])).float()
        return {"auc": roc_auc_score(y, logit(features).numpy())}

    log = tune_block5(block, views, y, epochs=30, lr=3e-3, batch_size=16, dropout=0.0,
                      after_epoch=training_auc)
    assert len(log) == 30 and log[-1]["train_loss"] < 0.5 * log[0]["train_loss"]
    assert log[-1]["auc"] > 0.95  # the training head now tells the textures apart
    for name in ("running_mean", "running_var"):  # statistics fixed
        assert torch.equal(block.bn.state_dict()[name], bn[name])
    tuned = pooled_output(block, views[0])
    assert roc_auc_score(y, _fresh_head_scores(tuned, y)) > 0.95  # and so does a fresh head


def _fresh_head_scores(features, y):
    """A standardised logistic regression fitted and scored on ``features``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, y)
    return fitted.decision_function(features)


def test_the_same_seed_tunes_the_same_block():
    views, y = _toy(32)
    blocks = []
    for drawn_elsewhere in (1, 7):
        torch.manual_seed(0)
        block = VGGBlock(8, 8, 2)
        identity_block(block)
        torch.rand(drawn_elsewhere)  # what else drew from the global generator does not matter
        tune_block5(block, views, y, epochs=2, lr=1e-3, batch_size=8, dropout=0.5, seed=3)
        blocks.append(block.state_dict())
    assert all(torch.equal(blocks[0][k], blocks[1][k]) for k in blocks[0])


def test_tuning_refuses_one_class_and_mismatched_views():
    block = VGGBlock(8, 8, 1)
    views, y = _toy(8)
    with pytest.raises(ValueError, match="both classes"):
        tune_block5(block, views, np.zeros(8, int), epochs=1)
    with pytest.raises(ValueError, match="same lesions"):
        tune_block5(block, [views[0], views[1][:4]], y, epochs=1)


def _tuned(views, y, **kwargs):
    torch.manual_seed(0)
    block = VGGBlock(8, 8, 2)
    identity_block(block)
    log = tune_block5(block, views, y, epochs=20, lr=3e-3, batch_size=16, dropout=0.0, **kwargs)
    return block, log


def test_bf16_tuning_learns_what_fp32_learns():
    """Where dlum.runtime picks bf16 (a GPU, a CPU with native bf16) the block runs under
    autocast: the weights stay fp32 and the tuning still learns the texture."""
    views, y = _toy()
    block, log = _tuned(views, y, dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in block.parameters())
    assert log[-1]["train_loss"] < 0.5 * log[0]["train_loss"]
    bf16 = pooled_output(block, views[0], dtype=torch.bfloat16)
    fp32 = pooled_output(block, views[0])
    assert bf16.dtype == np.float64
    np.testing.assert_allclose(bf16, fp32, rtol=2e-2, atol=2e-2)  # bf16 keeps 8 bits of mantissa
    assert roc_auc_score(y, _fresh_head_scores(fp32, y)) > 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_tunes_the_block_the_cpu_tunes():
    views, y = _toy()
    cpu, _ = _tuned(views, y)
    gpu, _ = _tuned(views, y, device=torch.device("cuda"))
    assert next(gpu.parameters()).device.type == "cuda"
    np.testing.assert_allclose(pooled_output(gpu, views[0], device=torch.device("cuda")),
                               pooled_output(cpu, views[0]), rtol=1e-3, atol=1e-3)


def test_tuning_only_the_last_convolution_leaves_the_identities_and_still_learns():
    views, y = _toy()
    torch.manual_seed(0)
    block = VGGBlock(8, 8, 3)
    identity_block(block)
    assert leading_identities(block) == 2  # the last one is not counted: BatchNorm follows it
    first = copy.deepcopy(block.convs[:2].state_dict())
    log = tune_block5(block, views, y, epochs=30, lr=1e-2, batch_size=16, dropout=0.0,
                      last_convs=1)
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert all(torch.equal(v, block.convs[:2].state_dict()[k]) for k, v in first.items())
    assert leading_identities(block) == 2
    tuned = pooled_output(block, views[0])
    assert roc_auc_score(y, _fresh_head_scores(tuned, y)) > 0.95
    with torch.no_grad():  # skipping the identities is the whole block on the (non-negative) input
        whole = block(torch.from_numpy(views[0].astype(np.float32))).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(tuned, whole, rtol=1e-5, atol=1e-5)


def test_tuning_the_last_convolutions_needs_identities_before_them():
    views, y = _toy(16)
    torch.manual_seed(0)
    block = VGGBlock(8, 8, 2)  # random convolutions
    assert leading_identities(block) == 0
    with pytest.raises(ValueError, match="identities"):
        tune_block5(block, views, y, epochs=1, last_convs=1)
    with pytest.raises(ValueError, match="last_convs"):
        tune_block5(block, views, y, epochs=1, last_convs=3)
    np.testing.assert_allclose(  # nothing skipped: the block as it is
        pooled_output(block, views[0]),
        block.eval()(torch.from_numpy(views[0].astype(np.float32))).mean(dim=(2, 3)).detach().numpy(),
        rtol=1e-5, atol=1e-5)
