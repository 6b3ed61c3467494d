"""Model registry: backend name -> builder, imported only when that backend is built.

Every backend returns an ``nn.Module`` with the backend interface the Predictor uses:
``label_set``, ``label_divisor``, ``device``, ``preprocess_spec()``, ``inference_params()``,
``set_inference_params(**kw)`` and ``predict(images, image_sizes, output_sizes)`` returning
one :class:`~panoptic_ros.result.PanopticResult` per image.

Two call forms::

    build_model("efficientps", EfficientPSConfig.preset("b0"), coco_panoptic())
    build_model({"backend": "efficientps", "variant": "narrow", "label_set": "synthetic"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from panoptic_ros.categories import LabelSet, get_label_set

if TYPE_CHECKING:  # torch is imported only when a backend is built
    from torch import nn

Builder = Callable[[Any, "LabelSet | None"], "nn.Module"]

_BACKENDS: dict[str, str | Builder] = {
    "efficientps": "panoptic_ros.models.registry:_build_efficientps",
    "mask2former": "panoptic_ros.models.registry:_build_mask2former",
    "onnx": "panoptic_ros.models.onnx_backend:build_onnx",
}


def register_backend(name: str, builder: str | Builder) -> None:
    """Add a backend: ``builder(config, label_set) -> nn.Module``, or ``"module:function"``."""
    _BACKENDS[name] = builder


def backend_names() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_BACKENDS)


def _resolve(name: str) -> Builder:
    try:
        target = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown model backend {name!r}; known: {backend_names()}") from None
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def build_model(
    spec: str | Mapping[str, Any],
    config: Any = None,
    label_set: LabelSet | str | None = None,
) -> nn.Module:
    """Build a backend with random (or backend-defined pretrained) weights.

    Args:
        spec: a backend name, or a mapping with ``backend`` (default ``efficientps``) and the
            backend's config keys (plus ``label_set`` for backends that take one).
        config: the backend's config (dataclass or mapping) when ``spec`` is a name.
        label_set: categories (object, built-in name or JSON path), for backends that take it.

    Raises:
        ValueError: unknown backend or invalid config.
    """
    if isinstance(spec, Mapping):
        data = dict(spec)
        name = str(data.pop("backend", "efficientps"))
        if config is not None:
            raise ValueError("give the config either inside the mapping or as config, not both")
        config = data
    else:
        name = str(spec)
    return _resolve(name)(config, label_set)


def _build_efficientps(config: Any, label_set: LabelSet | str | None) -> nn.Module:
    from panoptic_ros.models.efficientps import EfficientPS, EfficientPSConfig

    if config is None:
        config = {}
    if isinstance(config, Mapping):
        data = dict(config)
        from_map = data.pop("label_set", None)
        label_set = label_set if label_set is not None else from_map
        config = EfficientPSConfig.from_dict(data)
    if not isinstance(config, EfficientPSConfig):
        raise ValueError(
            f"efficientps needs an EfficientPSConfig or a mapping, got {type(config).__name__}"
        )
    if label_set is None:
        raise ValueError("efficientps needs a label_set (object, built-in name or JSON path)")
    return EfficientPS(config, get_label_set(label_set))


def _build_mask2former(config: Any, label_set: LabelSet | str | None) -> nn.Module:
    from panoptic_ros.models.mask2former import build_mask2former

    if label_set is not None:
        raise ValueError("mask2former takes its categories from its config ('label_set' key)")
    return build_mask2former(config or {})
