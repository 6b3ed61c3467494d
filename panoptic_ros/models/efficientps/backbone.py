"""EfficientNet backbone (torchvision's implementation) tapped at strides 4, 8, 16 and 32.

The network is built from torchvision's public ``MBConvConfig``/``EfficientNet`` with the
EfficientNet-B0 stage table scaled by the variant's width and depth multipliers, so that B0..B7
and the narrow variant share one code path. ImageNet weights are read only from a local file:
a path the user gives, or torchvision's hub cache when the file is already there. Nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.models.efficientnet import EfficientNet, MBConvConfig

from panoptic_ros.errors import ModelLoadError
from panoptic_ros.models.efficientps.layers import norm_factory

# EfficientNet-B0 stages (EfficientNet paper, Table 1):
# (expand ratio, kernel, stride, input channels, output channels, layers).
_B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

TAPS = (2, 3, 5, 8)
"""Indices into ``EfficientNet.features`` whose outputs have strides 4, 8, 16, 32."""

# torchvision trained B5..B7 with these BatchNorm settings; B0..B4 with PyTorch's defaults.
_BN_SETTINGS = {"b5": (1e-3, 0.01), "b6": (1e-3, 0.01), "b7": (1e-3, 0.01)}


def _torchvision_weights_url(variant: str) -> str | None:
    enum = getattr(tv_efficientnet, f"EfficientNet_{variant.upper()}_Weights", None)
    return None if enum is None else enum.IMAGENET1K_V1.url


def torchvision_cache_path(variant: str) -> Path | None:
    """Where torchvision's hub cache would hold ImageNet weights of ``variant`` (may not exist).

    ``None`` for variants torchvision has no weights for (the narrow one).
    """
    url = _torchvision_weights_url(variant)
    if url is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class EfficientNetBackbone(nn.Module):
    """EfficientNet feature extractor returning four feature maps.

    Args:
        variant: ``b0``..``b7`` or ``narrow``.
        width_mult: channel multiplier of the B0 stage table.
        depth_mult: layer-count multiplier of the B0 stage table.
        norm: norm name (``bn``, ``gn``, ``frozen_bn``).
        drop_path: stochastic depth probability.

    Attributes:
        out_channels: channels of the four outputs (strides 4, 8, 16, 32).
    """

    def __init__(
        self,
        variant: str,
        width_mult: float,
        depth_mult: float,
        norm: str = "bn",
        drop_path: float = 0.2,
    ) -> None:
        super().__init__()
        self.variant = variant
        eps, momentum = _BN_SETTINGS.get(variant, (1e-5, 0.1))
        stages = [
            MBConvConfig(*row, width_mult=width_mult, depth_mult=depth_mult)
            for row in _B0_STAGES
        ]
        net = EfficientNet(
            stages,
            dropout=0.0,
            stochastic_depth_prob=drop_path,
            norm_layer=norm_factory(norm, eps=eps, momentum=momentum),
        )
        self.features = net.features  # the classifier is not needed
        last = net.classifier[-1].in_features
        self.out_channels = (stages[1].out_channels, stages[2].out_channels,
                             stages[4].out_channels, last)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps at strides 4, 8, 16, 32.

        Args:
            x: Tensor[B, 3, H, W] float, normalised, H and W multiples of 32.

        Returns:
            four Tensors[B, C_i, H / s_i, W / s_i].
        """
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in TAPS:
                outs.append(x)
        return outs

    def load_imagenet(self, source: str | Path) -> Path:
        """Load ImageNet weights of torchvision's EfficientNet into the feature extractor.

        Args:
            source: a ``.pth`` path, or ``"torchvision"`` for torchvision's hub cache.

        Returns:
            the file read.

        Raises:
            ModelLoadError: no such file, unreadable, or weights that do not fit.
        """
        if str(source) == "torchvision":
            path = torchvision_cache_path(self.variant)
            if path is None:
                raise ModelLoadError(f"torchvision has no ImageNet weights for {self.variant!r}")
            if not path.is_file():
                raise ModelLoadError(
                    f"ImageNet weights for EfficientNet-{self.variant.upper()} are not in "
                    f"torchvision's cache ({path}); download them elsewhere and pass the path"
                )
        else:
            path = Path(source)
            if not path.is_file():
                raise ModelLoadError(f"backbone weights not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for corrupt files
            raise ModelLoadError(f"cannot read backbone weights {path}: {err}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        features = {
            k[len("features."):]: v for k, v in state.items() if k.startswith("features.")
        }
        if not features:
            raise ModelLoadError(f"{path} holds no EfficientNet 'features.*' weights")
        try:
            self.features.load_state_dict(features, strict=True)
        except RuntimeError as err:
            raise ModelLoadError(
                f"{path} does not fit EfficientNet-{self.variant}: {str(err)[:500]}"
            ) from None
        return path
