"""Semantic head of EfficientPS.

DPC on the coarse levels, LSFE on the fine ones, MC to bring coarse context down, all with
depthwise-separable convolutions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_ros.models.efficientps.layers import ConvNormAct, NormFactory, SeparableConv


class DPC(nn.Module):
    """Dense prediction cell: five separable 3x3 branches with the searched dilation rates.

    Branch 1 (dilation 1x6) reads the input; branches with (1,1), (6,21) and (18,15) read
    branch 1; a branch with (6,3) reads the (18,15) branch. The five are concatenated and
    projected by a 1x1 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm: NormFactory,
        act: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        c = in_channels

        def sep(d: tuple[int, int]) -> SeparableConv:
            return SeparableConv(c, c, norm=norm, act=act, dilation=d)

        self.b1 = sep((1, 6))
        self.b2 = sep((1, 1))
        self.b3 = sep((6, 21))
        self.b4 = sep((18, 15))
        self.b5 = sep((6, 3))
        self.project = ConvNormAct(5 * c, out_channels, 1, norm=norm, act=act)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, H, W] -> Tensor[B, C_out, H, W]."""
        b1 = self.b1(x)
        b4 = self.b4(b1)
        return self.project(torch.cat([b1, self.b2(b1), self.b3(b1), b4, self.b5(b4)], 1))


class LSFE(nn.Sequential):
    """Large-scale feature extractor: two separable 3x3 convs."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: NormFactory,
                 act: Callable[[], nn.Module]) -> None:
        super().__init__(
            SeparableConv(in_channels, out_channels, norm=norm, act=act),
            SeparableConv(out_channels, out_channels, norm=norm, act=act),
        )


class MC(nn.Module):
    """Mismatch correction: two separable 3x3 convs, then bilinear upsampling to ``size``."""

    def __init__(self, channels: int, *, norm: NormFactory, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            SeparableConv(channels, channels, norm=norm, act=act),
            SeparableConv(channels, channels, norm=norm, act=act),
        )

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """Tensor[B, C, h, w] -> Tensor[B, C, *size] (size is twice h, w)."""
        return _up(self.convs(x), size)


def _up(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SemanticHead(nn.Module):
    """Semantic logits from the four FPN levels.

    Args:
        in_channels: FPN width.
        channels: head width (128 in the paper).
        num_classes: semantic classes (stuff first, then things).
        norm: norm factory.
        act: activation factory.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        *,
        norm: NormFactory,
        act: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.dpc32 = DPC(in_channels, channels, norm=norm, act=act)
        self.dpc16 = DPC(in_channels, channels, norm=norm, act=act)
        self.lsfe8 = LSFE(in_channels, channels, norm=norm, act=act)
        self.lsfe4 = LSFE(in_channels, channels, norm=norm, act=act)
        self.mc16 = MC(channels, norm=norm, act=act)
        self.mc8 = MC(channels, norm=norm, act=act)
        self.classifier = nn.Conv2d(4 * channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Semantic logits.

        Args:
            feats: FPN maps at strides 4, 8, 16, 32 (finest first).
            size: ``(H, W)`` of the network input.

        Returns:
            Tensor[B, num_classes, H, W] float logits.
        """
        p4, p8, p16, p32 = feats
        d32 = self.dpc32(p32)
        d16 = self.dpc16(p16)
        x = self.mc16(d16 + _up(d32, d16.shape[-2:]), p8.shape[-2:])
        l8 = self.lsfe8(p8) + x
        x = self.mc8(l8, p4.shape[-2:])
        l4 = self.lsfe4(p4) + x
        s4 = p4.shape[-2:]
        x = torch.cat([l4, _up(l8, s4), _up(d16, s4), _up(d32, s4)], 1)
        return _up(self.classifier(x), size)
