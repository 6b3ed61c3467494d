"""Small building blocks shared by the EfficientPS modules.

Norm and activation factories, conv + norm + activation, depthwise-separable conv.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NORMS = ("bn", "gn", "frozen_bn")
"""Accepted norm names: BatchNorm, GroupNorm (up to 32 groups), frozen BatchNorm."""

ACTIVATIONS = ("leaky_relu", "relu", "silu")
"""Accepted activation names (``leaky_relu`` uses slope 0.01, as the paper's iABN)."""

NormFactory = Callable[[int], nn.Module]


def _group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


def norm_factory(name: str, eps: float = 1e-5, momentum: float = 0.1) -> NormFactory:
    """A callable ``channels -> norm module`` for ``name`` in :data:`NORMS`.

    GroupNorm uses ``gcd(32, channels)`` groups so that every width works.
    """
    if name == "bn":
        return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)
    if name == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    if name == "gn":
        return _group_norm
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def activation_factory(name: str) -> Callable[[], nn.Module]:
    """A callable returning a fresh in-place activation module for ``name``."""
    if name == "leaky_relu":
        return partial(nn.LeakyReLU, 0.01, inplace=True)
    if name == "relu":
        return partial(nn.ReLU, inplace=True)
    if name == "silu":
        return partial(nn.SiLU, inplace=True)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class ConvNormAct(nn.Sequential):
    """``Conv2d (no bias) -> norm -> activation``; ``act=None`` leaves the activation out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        norm: NormFactory,
        act: Callable[[], nn.Module] | None,
        stride: int = 1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False
            ),
            norm(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 (optionally dilated per axis) -> pointwise 1x1 -> norm -> activation.

    Spatial size is preserved (padding equals the dilation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm: NormFactory,
        act: Callable[[], nn.Module],
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, in_channels, 3, padding=dilation, dilation=dilation,
                groups=in_channels, bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm(out_channels),
            act(),
        )
