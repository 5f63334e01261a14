"""One DL-UM feature branch: a VGG19-style stack with a deep-supervision head per block.

Xu et al., Breast Cancer Research 2025 (DL-UM), Fig. 2C: five convolution blocks of
2, 2, 4, 4, 4 3x3 convolutions with 64, 128, 256, 512, 512 filters (Simonyan & Zisserman 2015,
VGG19). Every convolution is followed by ReLU, except the last one of each block, which is
followed by BatchNorm and then ReLU. Blocks 1-4 end with 2x2 max pooling, block 5 has none.
After each block's activation (before pooling) a head GAP -> FC64 -> ReLU -> FC1 gives one logit.

Layer names mirror torchvision's VGG so ImageNet weights map over easily:
``branch.blocks[b].convs[i]`` is the i-th convolution of block b (both 0-based).
"""
from __future__ import annotations

import torch
from torch import nn

from dlum.constants import VGG19_BLOCKS, VGG_FILTERS

__all__ = ["HEAD_HIDDEN", "ClassificationHead", "VGGBlock", "VGGBranch"]

#: Width of the hidden layer of every classification head (paper: "fully connected 64").
HEAD_HIDDEN = 64


class ClassificationHead(nn.Sequential):
    """FC(in, 64) -> ReLU -> FC(64, 1) on pooled features; returns logits of shape (B,).

    The paper gives "FC64 -> FC1 -> sigmoid"; the ReLU between the two layers is our choice
    (two stacked linear layers without it would collapse into one).
    """

    def __init__(self, in_features: int, hidden: int = HEAD_HIDDEN):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B,)
        return super().forward(features).squeeze(-1)


class VGGBlock(nn.Module):
    """``n_convs`` 3x3 convolutions: conv->ReLU ... conv->BatchNorm->ReLU (no pooling here).

    Attributes:
        convs: the convolutions, in order.
        relus: ReLUs after ``convs[:-1]`` (not in-place, so any layer can be hooked).
        bn: BatchNorm2d after the last convolution.
        act: the block's last ReLU, whose output is the block activation (the CAM layer).
    """

    def __init__(self, in_channels: int, out_channels: int, n_convs: int):
        super().__init__()
        if n_convs < 1:
            raise ValueError(f"a VGG block needs at least one convolution, got {n_convs}")
        channels = [in_channels] + [out_channels] * n_convs
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernel_size=3, padding=1) for i in range(n_convs)
        )
        self.relus = nn.ModuleList(nn.ReLU(inplace=False) for _ in range(n_convs - 1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, relu in zip(self.convs[:-1], self.relus):
            x = relu(conv(x))
        return self.act(self.bn(self.convs[-1](x)))


class VGGBranch(nn.Module):
    """A VGG19-style branch with five deep-supervision heads (DL-UM, Xu et al. 2025, Fig. 2C).

    Args:
        in_channels: input channels (3: grey images are replicated to three channels).
        blocks: convolutions per block (VGG19: 2, 2, 4, 4, 4).
        filters: filters per block (64, 128, 256, 512, 512).
        head_hidden: width of each head's hidden layer.

    ``forward(x)`` returns ``(logits, features)``: a list of five logit tensors of shape (B,)
    (block 1 -> 5) and the block-5 GAP features (B, 512) used by the fusion head.

    Example:
        >>> branch = VGGBranch()
        >>> logits, features = branch(torch.zeros(2, 3, 32, 32))
        >>> len(logits), tuple(logits[0].shape), tuple(features.shape)
        (5, (2,), (2, 512))
    """

    def __init__(
        self,
        in_channels: int = 3,
        blocks: tuple[int, ...] = VGG19_BLOCKS,
        filters: tuple[int, ...] = VGG_FILTERS,
        head_hidden: int = HEAD_HIDDEN,
    ):
        super().__init__()
        if len(blocks) != len(filters):
            raise ValueError(f"blocks {blocks} and filters {filters} differ in length")
        widths = [in_channels, *filters]
        self.blocks = nn.ModuleList(
            VGGBlock(widths[b], widths[b + 1], n) for b, n in enumerate(blocks)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.heads = nn.ModuleList(ClassificationHead(c, head_hidden) for c in filters)
        #: Where the convolution weights came from (set by dlum.networks.pretrained).
        self.init_source = "random"
        self.reset_parameters()

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def feature_dim(self) -> int:
        """Width of the last block's GAP features (512 for VGG19)."""
        return self.blocks[-1].bn.num_features

    def reset_parameters(self) -> None:
        """Random initialisation as torchvision's VGG (He normal, fan_out) for convolutions."""
        for module in self.blocks.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
                module.reset_running_stats()
        self.init_source = "random"

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five block activations (after the block's BatchNorm+ReLU, before pooling)."""
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        activations = []
        for b, block in enumerate(self.blocks):
            if b > 0:
                x = self.pool(x)
            x = block(x)
            activations.append(x)
        return activations

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        activations = self.forward_features(x)
        pooled = [a.mean(dim=(2, 3)) for a in activations]  # global average pooling
        logits = [head(p).float() for head, p in zip(self.heads, pooled)]
        return logits, pooled[-1]

    def cam_layer(self, k: int) -> nn.Module:
        """The layer to hook for class activation maps of block ``k`` (1-based: 1..5).

        It is the block's last ReLU (after its last convolution and BatchNorm), not in-place.
        """
        if not 1 <= k <= self.n_blocks:
            raise ValueError(f"block must be 1..{self.n_blocks}, got {k}")
        return self.blocks[k - 1].act

    def cam_layers(self) -> list[nn.Module]:
        """``cam_layer(k)`` for k = 1..5."""
        return [self.cam_layer(k) for k in range(1, self.n_blocks + 1)]

