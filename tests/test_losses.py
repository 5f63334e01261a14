from __future__ import annotations

import math

import pytest
import torch

from dlum.losses import DLUMLoss, LossParts, consistency_loss, focal_loss
from dlum.networks import BranchOutput, DLUMOutput


def _focal_by_hand(x: float, t: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    p_t = p if t == 1 else 1 - p
    alpha_t = alpha if t == 1 else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_focal_loss_matches_hand_computation():
    logits, targets = [0.0, 2.0, -1.5], [1, 0, 0]
    expected = [_focal_by_hand(x, t) for x, t in zip(logits, targets)]
    x, t = torch.tensor(logits), torch.tensor(targets)
    torch.testing.assert_close(focal_loss(x, t, reduction="none"), torch.tensor(expected))
    assert focal_loss(x, t).item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert focal_loss(x, t, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-6)
    # first case by hand: 0.25 * 0.5**2 * ln 2
    assert expected[0] == pytest.approx(0.25 * 0.25 * math.log(2))
    # gamma = 0 and no class weighting is plain binary cross-entropy
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t.float())
    torch.testing.assert_close(focal_loss(x, t, alpha=-1, gamma=0.0), bce)
    with pytest.raises(ValueError):
        focal_loss(x, t, reduction="max")


def test_consistency_loss_is_mae_of_probabilities():
    us, mg = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 2.0, 3.0])
    expected = (torch.sigmoid(us) - torch.sigmoid(mg)).abs().mean()
    torch.testing.assert_close(consistency_loss(us, mg), expected)
    assert consistency_loss(us, us).item() == 0.0


def _fake_output(batch: int = 4) -> DLUMOutput:
    g = torch.Generator().manual_seed(0)
    r = lambda: torch.randn(batch, generator=g, requires_grad=True)  # noqa: E731
    return DLUMOutput(fused=r(), us=[r() for _ in range(5)], mg=[r() for _ in range(5)])


def test_dlum_loss_parts_sum_to_total():
    out, targets = _fake_output(), torch.tensor([0, 1, 1, 0])
    weights = (0.5, 1.0, 1.0, 2.0, 3.0)
    loss = DLUMLoss(fused_weight=2.0, supervision_weights=weights, consistency_weight=0.7)
    parts = loss(out, targets)
    assert isinstance(parts, LossParts)
    torch.testing.assert_close(parts.total, parts.fused + parts.supervision + parts.consistency)
    torch.testing.assert_close(parts.fused, 2.0 * focal_loss(out.fused, targets))
    expected_sup = sum(
        w * (focal_loss(u, targets) + focal_loss(m, targets)) for w, u, m in zip(weights, out.us, out.mg)
    )
    torch.testing.assert_close(parts.supervision, expected_sup)
    torch.testing.assert_close(parts.consistency, 0.7 * consistency_loss(out.us[-1], out.mg[-1]))
    parts.total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in [out.fused, *out.us, *out.mg])
    assert set(parts.as_dict()) == {"total", "fused", "supervision", "consistency"}


def test_dlum_loss_on_a_single_branch_is_deep_supervision_only():
    g = torch.Generator().manual_seed(1)
    out = BranchOutput(logits=[torch.randn(3, generator=g) for _ in range(5)])
    targets = torch.tensor([1, 0, 1])
    parts = DLUMLoss()(out, targets)
    assert parts.fused.item() == 0.0 and parts.consistency.item() == 0.0
    torch.testing.assert_close(parts.total, sum(focal_loss(h, targets) for h in out.logits))
    with pytest.raises(ValueError, match="heads"):
        DLUMLoss(supervision_weights=(1.0, 1.0))(out, targets)
    with pytest.raises(TypeError):
        DLUMLoss()(torch.zeros(3), targets)
