"""Two-way feature pyramid network of EfficientPS (top-down and bottom-up paths in parallel)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_ros.models.efficientps.layers import ConvNormAct, NormFactory


class TwoWayFPN(nn.Module):
    """Two-way FPN.

    Two independent sets of 1x1 laterals feed a top-down and a bottom-up path; each output
    level is a 3x3 conv of the sum of both paths at that level.

    Args:
        in_channels: channels of the backbone maps at strides 4, 8, 16, 32.
        out_channels: width of every output level.
        norm: norm factory.
        act: activation factory.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        *,
        norm: NormFactory,
        act: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.lateral_td = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=norm, act=None) for c in in_channels
        )
        self.lateral_bu = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=norm, act=None) for c in in_channels
        )
        self.output = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=norm, act=act) for _ in in_channels
        )
        self.out_channels = out_channels

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Fuse backbone maps.

        Args:
            feats: Tensors[B, C_i, H_i, W_i] at strides 4, 8, 16, 32 (finest first).

        Returns:
            Tensors[B, out_channels, H_i, W_i], finest first.
        """
        n = len(feats)
        td = [lat(f) for lat, f in zip(self.lateral_td, feats)]
        bu = [lat(f) for lat, f in zip(self.lateral_bu, feats)]
        for i in range(n - 2, -1, -1):  # coarse to fine
            td[i] = td[i] + F.interpolate(td[i + 1], size=td[i].shape[-2:], mode="nearest")
        for i in range(1, n):  # fine to coarse
            bu[i] = bu[i] + F.interpolate(bu[i - 1], size=bu[i].shape[-2:], mode="nearest")
        return [conv(t + b) for conv, t, b in zip(self.output, td, bu)]
