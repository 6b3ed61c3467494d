"""EfficientPS (Mohan & Valada, IJCV 2021), written from the paper's description.

Use :func:`build` (or :func:`panoptic_ros.models.registry.build_model`) to make a network::

    model = build(EfficientPSConfig.preset("narrow"), synthetic())
"""

from panoptic_ros.models.efficientps.config import (
    FUSION_STRATEGIES,
    VARIANTS,
    EfficientPSConfig,
    FusionConfig,
    load_config,
)
from panoptic_ros.models.efficientps.model import EfficientPS, ohem_cross_entropy

CONFIG = EfficientPSConfig
"""The config class of this backend (for the registry)."""


def build(config: EfficientPSConfig, label_set, *, load_backbone_weights: bool = True):
    """An :class:`EfficientPS` for ``config`` and ``label_set``.

    Weights are random apart from ``config.backbone_weights``.
    """
    return EfficientPS(config, label_set, load_backbone_weights=load_backbone_weights)


__all__ = [
    "CONFIG",
    "FUSION_STRATEGIES",
    "VARIANTS",
    "EfficientPS",
    "EfficientPSConfig",
    "FusionConfig",
    "build",
    "load_config",
    "ohem_cross_entropy",
]
