"""Training losses of DL-UM (Xu et al., Breast Cancer Research 2025).

The paper trains with the focal loss (Lin et al., "Focal Loss for Dense Object Detection",
ICCV 2017) on every head - the five deep-supervision heads of each branch and the fusion head -
plus the mean absolute error between the block-5 probabilities of the US and MG branches, which
pushes the two modalities to agree. alpha = 0.25, gamma = 2 and equal weights are our choices
(the paper does not give them); all are configurable.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

__all__ = ["DLUMLoss", "LossParts", "consistency_loss", "focal_loss"]


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary focal loss on logits (Lin et al. 2017), via ``torchvision.ops.sigmoid_focal_loss``.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``, with ``p_t`` the probability of the true class and
    ``alpha_t = alpha`` for malignant (1), ``1 - alpha`` for benign (0); ``alpha < 0`` turns the
    class weighting off.

    Args:
        logits: (B,) logits of P(malignant).
        targets: (B,) labels 0/1 (any numeric dtype).
        reduction: "mean", "sum" or "none".

    Example:
        >>> round(float(focal_loss(torch.tensor([0.0]), torch.tensor([1]), gamma=0.0)), 4)
        0.1733
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    logits = logits.float()
    targets = targets.to(dtype=logits.dtype, device=logits.device).reshape(logits.shape)
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)


def consistency_loss(us_logit: torch.Tensor, mg_logit: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between the US and MG branches' probabilities (DL-UM, Xu et al. 2025).

    Example:
        >>> float(consistency_loss(torch.tensor([0.0]), torch.tensor([0.0])))
        0.0
    """
    return nn.functional.l1_loss(torch.sigmoid(us_logit.float()), torch.sigmoid(mg_logit.float()))


@dataclass
class LossParts:
    """The loss and its parts: ``total = fused + supervision + consistency`` (each weighted)."""

    total: torch.Tensor
    fused: torch.Tensor
    supervision: torch.Tensor
    consistency: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        """Plain floats, for logs."""
        return {k: float(getattr(self, k).detach()) for k in ("total", "fused", "supervision", "consistency")}


class DLUMLoss(nn.Module):
    """DL-UM training loss (Xu et al., Breast Cancer Research 2025), deep supervision included.

    For a :class:`~dlum.networks.DLUMOutput`:
    ``fused_weight * FL(fused) + sum_k w_k * (FL(us_k) + FL(mg_k))
    + consistency_weight * MAE(sigmoid(us_5), sigmoid(mg_5))``, FL the focal loss (Lin et al. 2017).
    For a :class:`~dlum.networks.BranchOutput` (DL-U / DL-M) only the deep-supervision term is
    used; ``fused`` and ``consistency`` are then zero.

    Args:
        alpha, gamma: focal-loss parameters.
        fused_weight: weight of the fusion head.
        supervision_weights: one weight per block head (block 1 -> 5).
        consistency_weight: weight of the US/MG consistency term.
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        fused_weight: float = 1.0,
        supervision_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
        consistency_weight: float = 1.0,
    ):
        super().__init__()
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.fused_weight = float(fused_weight)
        self.supervision_weights = tuple(float(w) for w in supervision_weights)
        self.consistency_weight = float(consistency_weight)

    def _focal(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma)

    def _supervision(self, heads: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if len(heads) != len(self.supervision_weights):
            raise ValueError(
                f"{len(heads)} heads but {len(self.supervision_weights)} supervision weights"
            )
        return sum(w * self._focal(h, targets) for w, h in zip(self.supervision_weights, heads))

    def forward(self, output, targets: torch.Tensor) -> LossParts:
        if hasattr(output, "fused"):  # DLUMOutput
            zero = output.fused.new_zeros((), dtype=torch.float32)
            fused = self.fused_weight * self._focal(output.fused, targets)
            supervision = self._supervision(output.us, targets) + self._supervision(output.mg, targets)
            consistency = (
                self.consistency_weight * consistency_loss(output.us[-1], output.mg[-1])
                if self.consistency_weight
                else zero
            )
        elif hasattr(output, "logits"):  # BranchOutput
            zero = output.logits[-1].new_zeros((), dtype=torch.float32)
            fused, consistency = zero, zero
            supervision = self._supervision(output.logits, targets)
        else:
            raise TypeError(f"expected a DLUMOutput or BranchOutput, got {type(output).__name__}")
        return LossParts(
            total=fused + supervision + consistency,
            fused=fused,
            supervision=supervision,
            consistency=consistency,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, gamma={self.gamma}, fused_weight={self.fused_weight}, "
            f"supervision_weights={self.supervision_weights}, "
            f"consistency_weight={self.consistency_weight}"
        )
