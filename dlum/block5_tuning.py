"""Fine-tuning one branch's block 5 on cached block-4 features, cheap enough for a CPU.

The DL-UM paper (Xu et al., Breast Cancer Research 2025) fine-tunes both VGG19 branches end to
end; with frozen blocks 1-4 the expensive part runs once per lesion and view (block 5's input is
collected by :func:`dlum.frozen.block_features`), and only block 5 (plus a linear head) is
trained on that cached input. ``scripts/finetune_us_block5.py`` measures
what this buys the US branch on the validation split (docs/training.md).

The cache stays on the host in float16; batches go to ``device`` and run under
``dlum.runtime.autocast`` in ``dtype`` (bf16 where :func:`dlum.runtime.fast_dtype` picks it: a
GPU or a CPU with native bf16), with the weights, the head and the loss in fp32.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from dlum.runtime import autocast

__all__ = ["pooled_output", "tune_block5", "leading_identities"]


_CPU = torch.device("cpu")


def _batch(maps: np.ndarray, device: torch.device) -> torch.Tensor:
    """Cached float16 inputs as an fp32 channels-last batch on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(maps)).to(device).float()
    return x.contiguous(memory_format=torch.channels_last)


def leading_identities(block) -> int:
    """How many of ``block``'s convolutions before its last are the identity (Dirac weights,
    zero bias: :func:`dlum.frozen.identity_block`), counted from the first. On block 5's cached
    input, block 4's pooled ReLU output and so never negative, they and their ReLUs change
    nothing, so :func:`_forward` skips them: a block tuned in its last convolutions only costs
    what those cost."""
    count = 0
    with torch.no_grad():
        for conv in block.convs[:-1]:
            weight = conv.weight
            if weight.shape[0] != weight.shape[1] or conv.bias is None or conv.bias.any():
                break
            if not torch.equal(weight, torch.nn.init.dirac_(torch.empty_like(weight))):
                break
            count += 1
    return count


def _forward(block, x: torch.Tensor, skip: int) -> torch.Tensor:
    """``block(x)`` without its first ``skip`` convolutions (identities, see
    :func:`leading_identities`)."""
    for conv, relu in zip(block.convs[skip:-1], block.relus[skip:]):
        x = relu(conv(x))
    return block.act(block.bn(block.convs[-1](x)))


def pooled_output(block, maps: np.ndarray, batch_size: int = 64, *, device: torch.device = _CPU,
                  dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Global-average-pooled output of ``block`` (eval mode, on ``device``) on cached inputs:
    ``(N, C)`` float64, what the block's deep-supervision head and the fusion head read."""
    block.to(device).eval()
    skip = leading_identities(block)
    out = []
    with torch.inference_mode(), autocast(device, dtype):
        for start in range(0, len(maps), batch_size):
            x = _batch(maps[start:start + batch_size], device)
            pooled = _forward(block, x, skip).float().mean(dim=(2, 3))
            out.append(pooled.cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def tune_block5(block, views: list[np.ndarray], y: np.ndarray, *, epochs: int, lr: float = 3e-5,
                batch_size: int = 32, dropout: float = 0.5, seed: int = 0, last_convs: int = 0,
                device: torch.device = _CPU, dtype: torch.dtype = torch.float32,
                after_epoch: Callable[[Callable[[torch.Tensor], torch.Tensor]], dict] | None = None
                ) -> list[dict]:
    """Train ``block`` in place on cached inputs ``views`` (one ``(N, C, h, w)`` array per
    augmented view of the same N lesions, labels ``y``) with a linear head on its pooled,
    standardised output: Adam (the head at 10x ``lr``), class-balanced binary cross-entropy, one
    random view per lesion per epoch, ``dropout`` on the standardised features. BatchNorm
    statistics stay fixed, so an identity start (:func:`dlum.frozen.identity_block`) is the
    frozen function at epoch 0. ``last_convs`` > 0 trains only the block's last ``last_convs``
    convolutions (and its BatchNorm's affine weights); the ones before must be identities, stay
    so, and are skipped. The head is discarded: callers fit their own on
    :func:`pooled_output`. ``after_epoch(logit)`` may add to each epoch's line of the returned
    log (e.g. a validation AUC of the training head ``logit(pooled features)``, features on the
    host). The block is left on ``device``."""
    y = np.asarray(y).astype(int)
    n = len(y)
    if not views or any(len(v) != n for v in views):
        raise ValueError("every view must hold the same lesions as y")
    if min(np.bincount(y, minlength=2)) == 0:
        raise ValueError("block 5 tuning needs lesions of both classes")
    n_convs = len(block.convs)
    if not 0 <= last_convs <= n_convs:
        raise ValueError(f"last_convs must be 0 (all) to {n_convs} (got {last_convs})")
    skip = n_convs - last_convs if last_convs else 0  # identities, left as they are
    if leading_identities(block) < skip:
        raise ValueError(f"the first {skip} convolutions must be identities to tune only the "
                         f"last {last_convs}")
    trained = [p for conv in block.convs[skip:] for p in conv.parameters()]
    trained += list(block.bn.parameters())
    # the training head reads standardised features (VGG activations are in the hundreds)
    start = np.concatenate([pooled_output(block, v, device=device, dtype=dtype) for v in views])
    mean = torch.from_numpy(start.mean(0)).float().to(device)
    spread = start.std(0)
    # a constant feature stays unscaled
    scale = torch.from_numpy(np.where(spread > 1e-6, spread, 1.0)).float().to(device)
    linear = torch.nn.Linear(start.shape[1], 1)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    linear.to(device)

    # dropout of its own, drawn on the host: the same seed, the same masks on every device
    masks = torch.Generator().manual_seed(seed)

    def logit(features: torch.Tensor, drop: float = 0.0) -> torch.Tensor:
        z = (features.to(device).float() - mean) / scale
        if drop > 0:
            z = z * (torch.rand(z.shape, generator=masks) >= drop).to(device) / (1.0 - drop)
        return linear(z).squeeze(1).to(features.device)

    optimizer = torch.optim.Adam([{"params": trained, "lr": lr},
                                  {"params": linear.parameters(), "lr": 10 * lr}])
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor((y == 0).sum() / (y == 1).sum(), device=device))
    rng = np.random.default_rng(seed)
    log, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        block.train()
        block.bn.eval()  # statistics fixed
        order = rng.permutation(n)
        view = rng.integers(0, len(views), n)
        total = 0.0
        for first in range(0, n, batch_size):
            idx = order[first:first + batch_size]
            x = _batch(np.stack([views[v][i] for v, i in zip(view[idx], idx)]), device)
            with autocast(device, dtype):
                features = _forward(block, x, skip).float().mean(dim=(2, 3))
            loss = loss_fn(logit(features, dropout), torch.from_numpy(y[idx]).float().to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        block.eval()
        line = {"epoch": epoch, "train_loss": total / n, "seconds": time.perf_counter() - t0}
        if after_epoch is not None:
            with torch.inference_mode():
                line.update(after_epoch(logit))
        log.append(line)
    block.eval()
    return log
