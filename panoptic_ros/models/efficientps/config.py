"""Configuration of the EfficientPS network: frozen dataclasses, presets per variant, YAML.

Every default is written once, here. A config file names a ``variant`` and overrides any field;
the rest comes from the variant's preset::

    variant: narrow
    head_norm: gn
    fusion: {strategy: panoptic_fpn, stuff_area: 4096}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, check_label_divisor
from panoptic_ros.config_dicts import dataclass_kwargs, plain_types
from panoptic_ros.models.efficientps.layers import ACTIVATIONS, NORMS
from panoptic_ros.models.fusion import STRATEGIES as FUSION_STRATEGIES
from panoptic_ros.models.live_params import LiveParam, check_values
from panoptic_ros.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

# EfficientNet compound scaling (width, depth) of B0..B7, from the EfficientNet paper.
BACKBONE_SCALING: dict[str, tuple[float, float]] = {
    "b0": (1.0, 1.0),
    "b1": (1.0, 1.1),
    "b2": (1.1, 1.2),
    "b3": (1.2, 1.4),
    "b4": (1.4, 1.8),
    "b5": (1.6, 2.2),
    "b6": (1.8, 2.6),
    "b7": (2.0, 3.1),
}

VARIANTS = (*BACKBONE_SCALING, "narrow")
"""EfficientNet-B0..B7 backbones (B5 is the paper's) and ``narrow``, a small CPU model.

``narrow`` is the full EfficientPS architecture scaled down: EfficientNet-B0 stages at width
0.5 and depth 0.34 (one or two blocks per stage), FPN 48 channels, semantic head 32, box head
256, mask head 48, GroupNorm in the heads (small CPU batches), anchors 16..128 px and fewer
proposals, for 256x320-class images on a CPU (about 1.6 M parameters).
"""


@dataclass(frozen=True)
class FusionConfig:
    """How semantic and instance outputs are merged into one panoptic map.

    Attributes:
        strategy: one of :data:`FUSION_STRATEGIES`.
        score_threshold: detections scoring below are ignored.
        overlap_threshold: a detection whose binary mask is already claimed by higher-scoring
            kept detections for more than this fraction is dropped.
        stuff_area: stuff regions smaller than this many pixels at ``reference_size`` become
            void; the threshold scales with the image area.
        reference_size: ``(height, width)`` at which ``stuff_area`` is given.
    """

    strategy: str = "efficientps"
    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    stuff_area: int = 2048
    reference_size: tuple[int, int] = (1024, 2048)

    def __post_init__(self) -> None:
        if self.strategy not in FUSION_STRATEGIES:
            raise ValueError(
                f"fusion.strategy must be one of {FUSION_STRATEGIES}, got {self.strategy!r}"
            )
        for name in ("score_threshold", "overlap_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fusion.{name} must lie in [0, 1], got {value}")
        if self.stuff_area < 0:
            raise ValueError(f"fusion.stuff_area must be >= 0 pixels, got {self.stuff_area}")
        if len(self.reference_size) != 2 or min(self.reference_size) < 1:
            raise ValueError(
                f"fusion.reference_size must be (height, width) > 0, got {self.reference_size}"
            )

    def stuff_area_at(self, height: int, width: int) -> float:
        """The stuff area threshold in pixels for an image of ``height`` x ``width``."""
        ref_h, ref_w = self.reference_size
        return self.stuff_area * (height * width) / (ref_h * ref_w)


FUSION_LIVE_PARAMS: tuple[LiveParam, ...] = (
    LiveParam("score_threshold", FusionConfig.score_threshold,
              "minimum detection score of a thing instance (0..1)", low=0.0, high=1.0),
    LiveParam("overlap_threshold", FusionConfig.overlap_threshold,
              "drop a detection when MORE than this fraction of its mask is already claimed "
              "by higher-scoring detections (0..1; lower drops more)", low=0.0, high=1.0),
    LiveParam("stuff_area", FusionConfig.stuff_area,
              "stuff regions smaller than this many pixels (at the model's reference "
              "resolution, scaled with the image area) become void", low=0, high=100_000_000),
    LiveParam("strategy", FusionConfig.strategy,
              "fusion of semantic and instance outputs: efficientps (the paper's "
              "logit fusion) or panoptic_fpn (instances pasted over the semantic map)",
              choices=FUSION_STRATEGIES),
)
"""The live settings of the EfficientPS backend (the fields of :class:`FusionConfig` but
``reference_size``)."""


class FusionSettings:
    """Backend interface of an EfficientPS model's live fusion settings and id encoding.

    Shared by the PyTorch model and its ONNX export (:mod:`panoptic_ros.models.onnx_backend`);
    the class using it sets ``config`` (:class:`EfficientPSConfig`), ``fusion_config``
    (:class:`FusionConfig`, the live values) and ``label_set``.
    """

    config: EfficientPSConfig
    fusion_config: FusionConfig
    label_set: Any

    LIVE_PARAMS = FUSION_LIVE_PARAMS
    """Live settings (:mod:`~panoptic_ros.models.live_params`): the fusion thresholds."""

    @property
    def label_divisor(self) -> int:
        """Divisor of the id encoding (settable; only the fusion output depends on it)."""
        return self.config.label_divisor

    @label_divisor.setter
    def label_divisor(self, value: int) -> None:
        check_label_divisor(int(value), self.label_set)
        self.config = dataclasses.replace(self.config, label_divisor=int(value))

    def inference_params(self) -> dict[str, Any]:
        """Current values of :attr:`LIVE_PARAMS` (``strategy``, thresholds, ``stuff_area``)."""
        return {p.name: getattr(self.fusion_config, p.name) for p in self.LIVE_PARAMS}

    def set_inference_params(self, **kwargs: Any) -> None:
        """Change fusion settings live (names of :attr:`LIVE_PARAMS`).

        Unknown names or invalid values raise ``ValueError`` and change nothing.
        """
        check_values(self.LIVE_PARAMS, kwargs)
        self.fusion_config = dataclasses.replace(self.fusion_config, **kwargs)


@dataclass(frozen=True)
class EfficientPSConfig:
    """Architecture and inference settings of one EfficientPS network.

    Widths are channel counts; sizes are pixels of the network input. ``None`` for
    ``width_mult``/``depth_mult`` means the variant's own scaling.

    Attributes:
        variant: one of :data:`VARIANTS`.
        width_mult: EfficientNet width multiplier override.
        depth_mult: EfficientNet depth multiplier override.
        backbone_weights: path of ImageNet weights for the torchvision EfficientNet, or
            ``"torchvision"`` for torchvision's hub cache when the file is there; ``None``:
            random init. Nothing is ever downloaded.
        backbone_norm: norm of the backbone, one of :data:`~.layers.NORMS`.
        head_norm: norm of the FPN and the heads.
        activation: activation of the FPN and the heads (backbone keeps SiLU).
        drop_path: stochastic depth probability of the backbone blocks.
        fpn_channels: two-way FPN width (256 in the paper).
        semantic_channels: semantic head width (128 in the paper).
        anchor_sizes: RPN anchor size per FPN level (strides 4, 8, 16, 32).
        aspect_ratios: RPN anchor aspect ratios (height / width).
        rpn_pre_nms_train / rpn_pre_nms_test: proposals per level kept before NMS.
        rpn_post_nms_train / rpn_post_nms_test: proposals kept after NMS.
        rpn_nms_threshold: RPN NMS IoU.
        rpn_batch_size: anchors sampled per image for the RPN loss.
        box_fc_channels: width of the two fully connected box layers.
        mask_channels: width of the separable mask head convolutions.
        roi_batch_size: proposals sampled per image for the box loss.
        detection_score_threshold: box score threshold at test time.
        detection_nms_threshold: per-class NMS IoU at test time.
        detections_per_image: most detections per image at test time.
        ohem_fraction: fraction of the hardest valid pixels kept by the semantic loss.
        pixel_mean / pixel_std: RGB normalisation, 0..255 units.
        size_divisibility: inputs are padded to a multiple of this.
        label_divisor: ``ids = category * label_divisor + instance``.
        fusion: panoptic fusion settings.
    """

    variant: str = "b5"
    width_mult: float | None = None
    depth_mult: float | None = None
    backbone_weights: str | None = None
    backbone_norm: str = "bn"
    head_norm: str = "bn"
    activation: str = "leaky_relu"
    drop_path: float = 0.2
    fpn_channels: int = 256
    semantic_channels: int = 128
    anchor_sizes: tuple[int, int, int, int] = (32, 64, 128, 256)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_train: int = 2000
    rpn_post_nms_test: int = 1000
    rpn_nms_threshold: float = 0.7
    rpn_batch_size: int = 256
    box_fc_channels: int = 1024
    mask_channels: int = 256
    roi_batch_size: int = 512
    detection_score_threshold: float = 0.5
    detection_nms_threshold: float = 0.5
    detections_per_image: int = 100
    ohem_fraction: float = 0.25
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    size_divisibility: int = 32
    label_divisor: int = DEFAULT_LABEL_DIVISOR
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("backbone_norm", "head_norm"):
            if getattr(self, name) not in NORMS:
                raise ValueError(f"{name} must be one of {NORMS}, got {getattr(self, name)!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        positive = (
            "fpn_channels", "semantic_channels", "rpn_pre_nms_train", "rpn_pre_nms_test",
            "rpn_post_nms_train", "rpn_post_nms_test", "rpn_batch_size", "box_fc_channels",
            "mask_channels", "roi_batch_size", "detections_per_image", "size_divisibility",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("width_mult", "depth_mult"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if len(self.anchor_sizes) != 4:
            raise ValueError(
                f"anchor_sizes needs one size per FPN level (4), got {self.anchor_sizes}"
            )
        if self.size_divisibility % 32:
            raise ValueError(
                f"size_divisibility must be a multiple of 32, got {self.size_divisibility}"
            )
        if not 0.0 < self.ohem_fraction <= 1.0:
            raise ValueError(f"ohem_fraction must lie in (0, 1], got {self.ohem_fraction}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must lie in [0, 1), got {self.drop_path}")
        if self.detections_per_image >= self.label_divisor:
            raise ValueError(
                f"detections_per_image ({self.detections_per_image}) must be below "
                f"label_divisor ({self.label_divisor}) so instance ids fit the encoding"
            )
        for name in ("pixel_mean", "pixel_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs 3 values (RGB), got {getattr(self, name)}")
        if min(self.pixel_std) <= 0:
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std}")

    @property
    def scaling(self) -> tuple[float, float]:
        """The EfficientNet ``(width_mult, depth_mult)`` in effect."""
        width, depth = BACKBONE_SCALING.get(self.variant, _NARROW_SCALING)
        return (
            width if self.width_mult is None else self.width_mult,
            depth if self.depth_mult is None else self.depth_mult,
        )

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str/int/float/list/dict/None): YAML- and checkpoint-safe."""
        return plain_types(dataclasses.asdict(self))

    @classmethod
    def preset(cls, variant: str = "b5") -> EfficientPSConfig:
        """The defaults of ``variant`` (the narrow one shrinks every width)."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "narrow":
            return cls(**_NARROW_OVERRIDES)
        return cls(variant=variant)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EfficientPSConfig:
        """Build from a mapping: the ``variant``'s preset with the given fields overridden.

        Unknown keys raise ``ValueError`` naming them.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"model config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        base = cls.preset(data.get("variant", "b5"))
        fusion = data.pop("fusion", None)
        kwargs = dataclass_kwargs(cls, data, "model config")
        if fusion is not None:
            kwargs["fusion"] = replace(
                base.fusion, **dataclass_kwargs(FusionConfig, fusion, "fusion config")
            )
        return replace(base, **kwargs)


_NARROW_SCALING = (0.5, 0.34)  # (width, depth) of the narrow variant's B0 stages
_NARROW_OVERRIDES: dict[str, Any] = dict(
    variant="narrow",
    drop_path=0.0,
    head_norm="gn",
    fpn_channels=48,
    semantic_channels=32,
    anchor_sizes=(16, 32, 64, 128),
    rpn_pre_nms_train=600,
    rpn_pre_nms_test=300,
    rpn_post_nms_train=300,
    rpn_post_nms_test=100,
    rpn_batch_size=128,
    box_fc_channels=256,
    mask_channels=48,
    roi_batch_size=128,
    detections_per_image=50,
    fusion=FusionConfig(stuff_area=2048),
)


def load_config(path: str | Path) -> EfficientPSConfig:
    """Read a YAML model config (the mapping itself, or under a top-level ``model`` key).

    Raises:
        ValueError: the file is missing, is not YAML, or holds invalid settings.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"model config not found: {path}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"model config {path} is not valid YAML: {err}") from None
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if data is None:
        data = {}
    try:
        return EfficientPSConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
