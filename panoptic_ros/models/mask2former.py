"""Pretrained mask-classification panoptic models through Hugging Face ``transformers``.

Backend ``mask2former`` serves Mask2Former, and by the same inference MaskFormer, OneFormer and
DETR-panoptic checkpoints (all predict per-query class logits plus mask logits; see
:mod:`panoptic_ros.models.mask2former_postprocess`). ``transformers`` is an optional extra
(``pip install 'panoptic_ros[hf]'``) imported only when a model is loaded.

Weights are a hub model id (``facebook/mask2former-swin-tiny-coco-panoptic``) or a local
directory written by ``save_pretrained`` / ``hf download``. Loading never downloads unless the
user allowed it (``allow_download``): a robot works from its local cache or a directory, and a
missing model raises :class:`~panoptic_ros.errors.ModelLoadError` saying how to fetch it.

The model's ``id2label`` is mapped by name onto our COCO panoptic / Cityscapes tables
(:mod:`panoptic_ros.models.hf_labels`), so results carry our category ids, names and colours.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, LabelSet, check_label_divisor
from panoptic_ros.config_dicts import refuse_unknown
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.models.checkpoint import unsafe_file_message
from panoptic_ros.models.hf_labels import LabelMapping, map_labels
from panoptic_ros.models.live_params import LiveParam, check_values
from panoptic_ros.models.mask2former_postprocess import (
    DEFAULT_MAX_CHUNK_ELEMENTS,
    RULES,
    QuerySegments,
    panoptic_from_queries,
    query_scores,
)
from panoptic_ros.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_batch
from panoptic_ros.result import PanopticResult

_log = logging.getLogger(__name__)

# transformers model_type -> (model class name, output attribute of class logits, of masks).
MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "mask2former": ("Mask2FormerForUniversalSegmentation", "class_queries_logits",
                    "masks_queries_logits"),
    "maskformer": ("MaskFormerForInstanceSegmentation", "class_queries_logits",
                   "masks_queries_logits"),
    "oneformer": ("OneFormerForUniversalSegmentation", "class_queries_logits",
                  "masks_queries_logits"),
    "detr": ("DetrForSegmentation", "logits", "pred_masks"),
}
"""Supported ``config.model_type`` values of pretrained checkpoints."""

INSTALL_HINT = "pip install 'panoptic_ros[hf]' (transformers, scipy)"


@dataclass(frozen=True)
class MaskInferenceParams:
    """Thresholds of mask-classification panoptic inference (changeable live).

    Attributes:
        score_threshold: keep queries whose class score is above this (0..1); the same name
            as EfficientPS's detection score threshold, so node parameters carry over.
        mask_threshold: binarisation threshold of the score-weighted mask probabilities.
        overlap_threshold: drop a query keeping no more than this fraction of its binary mask
            after the per-pixel assignment.
        rules: ``mask2former`` (the original implementation, as published results were made)
            or ``transformers`` (Hugging Face's post-processing rules); see
            :mod:`panoptic_ros.models.mask2former_postprocess`.
    """

    score_threshold: float = 0.8
    mask_threshold: float = 0.5
    overlap_threshold: float = 0.8
    rules: str = "mask2former"

    def __post_init__(self) -> None:
        for name in ("score_threshold", "mask_threshold", "overlap_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.rules not in RULES:
            raise ValueError(f"rules must be one of {RULES}, got {self.rules!r}")


MASK_LIVE_PARAMS: tuple[LiveParam, ...] = (
    LiveParam("score_threshold", MaskInferenceParams.score_threshold,
              "keep a query whose class score is above this (0..1)", low=0.0, high=1.0),
    LiveParam("mask_threshold", MaskInferenceParams.mask_threshold,
              "binarisation threshold of the score-weighted mask probabilities (0..1)",
              low=0.0, high=1.0),
    LiveParam("overlap_threshold", MaskInferenceParams.overlap_threshold,
              "keep a query only when MORE than this fraction of its binary mask survives "
              "the per-pixel assignment (0..1; higher drops more)", low=0.0, high=1.0),
    LiveParam("rules", MaskInferenceParams.rules,
              "inference rules: mask2former (the original implementation) or transformers "
              "(Hugging Face's post-processing)", choices=RULES),
)
"""The live settings of the mask-classification backends (Mask2Former, OneFormer, DETR)."""


@dataclass(frozen=True)
class Mask2FormerConfig:
    """Configuration of the ``mask2former`` backend (``model:`` section of a config file).

    Attributes:
        weights: hub model id (``facebook/mask2former-swin-tiny-coco-panoptic``) or a local
            directory holding ``config.json`` and the weights.
        allow_download: let ``transformers`` fetch a hub id missing from the local cache.
        revision: hub revision (branch, tag or commit) of a hub id.
        cache_dir: Hugging Face cache directory (default: ``$HF_HUB_CACHE``).
        label_set: ``auto`` (best built-in table by name, else custom), ``coco``,
            ``cityscapes``, ``custom`` or a category JSON.
        label_divisor: ``ids = category * label_divisor + instance``.
        inference: thresholds of panoptic inference.
        max_chunk_elements: memory bound of the post-processing (queries x pixels at once;
            None: chosen per device).
    """

    weights: str = "facebook/mask2former-swin-tiny-coco-panoptic"
    allow_download: bool = False
    revision: str | None = None
    cache_dir: str | None = None
    label_set: str = "auto"
    label_divisor: int = DEFAULT_LABEL_DIVISOR
    inference: MaskInferenceParams = MaskInferenceParams()
    max_chunk_elements: int | None = DEFAULT_MAX_CHUNK_ELEMENTS

    def __post_init__(self) -> None:
        if not isinstance(self.weights, (str, Path)) or not str(self.weights).strip():
            raise ValueError(
                f"weights must be a hub model id or a directory, got {self.weights!r}"
            )
        if not isinstance(self.allow_download, bool):
            raise TypeError(f"allow_download must be a bool, got {self.allow_download!r}")
        if self.label_divisor < 2:
            raise ValueError(f"label_divisor must be >= 2, got {self.label_divisor}")
        if self.max_chunk_elements is not None and self.max_chunk_elements < 1:
            raise ValueError(f"max_chunk_elements must be >= 1, got {self.max_chunk_elements}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mask2FormerConfig:
        """Build from a mapping; threshold keys may sit at top level or under ``inference``.

        Unknown keys raise ``ValueError`` naming them (``backend`` is ignored).
        """
        data = dict(data)
        data.pop("backend", None)
        params = dict(data.pop("inference", None) or {})
        param_names = {f.name for f in fields(MaskInferenceParams)}
        for name in list(data):
            if name in param_names:
                params[name] = data.pop(name)
        refuse_unknown(data, {f.name for f in fields(cls)} | param_names,
                       "mask2former option(s)")
        refuse_unknown(params, param_names, "mask2former inference option(s)")
        if "weights" in data:
            data["weights"] = str(data["weights"])
        return cls(**data, inference=MaskInferenceParams(**params))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return asdict(self)


def _hf_outputs(outputs: Any, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    return getattr(outputs, names[0]), getattr(outputs, names[1])


class Mask2FormerBackend(nn.Module):
    """A pretrained mask-classification model with our panoptic inference and label set.

    Args:
        model: the ``transformers`` model (``...ForUniversalSegmentation`` and kin).
        mapping: class index -> category mapping of its labels.
        model_type: one of :data:`MODEL_TYPES`.
        pixel_mean: RGB normalisation mean, 0..255 units.
        pixel_std: RGB normalisation std, 0..255 units.
        size_divisibility: inputs are padded to a multiple of this.
        label_divisor: ``ids = category * label_divisor + instance``.
        params: inference thresholds.
        task_inputs: Tensor[1, L] int64, OneFormer's tokenised "the task is panoptic".
        max_chunk_elements: memory bound of the post-processing.
        source: where the weights came from (for messages).

    Attributes:
        label_set: the categories results refer to.
        label_divisor: the id encoding's divisor.
        pixel_mean, pixel_std, size_divisibility: what the Predictor applies to inputs.
        preferred_size: the image processor's resize setting (e.g. ``{"shortest_edge":
            384}``), a hint for the input resolution the model was trained at.
    """

    def __init__(
        self,
        model: nn.Module,
        mapping: LabelMapping,
        *,
        model_type: str = "mask2former",
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 32,
        label_divisor: int = DEFAULT_LABEL_DIVISOR,
        params: MaskInferenceParams | None = None,
        task_inputs: Tensor | None = None,
        max_chunk_elements: int | None = DEFAULT_MAX_CHUNK_ELEMENTS,
        preferred_size: Mapping[str, int] | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}"
            )
        if model_type == "oneformer" and task_inputs is None:
            raise ValueError("OneFormer needs task_inputs (the tokenised panoptic task prompt)")
        check_label_divisor(label_divisor, mapping.label_set)
        num_queries = int(getattr(getattr(model, "config", None), "num_queries", 0) or 0)
        if num_queries >= label_divisor:
            raise ValueError(
                f"the model has {num_queries} queries; label_divisor {label_divisor} must be "
                "larger so that instance ids fit the encoding"
            )
        if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
            raise ValueError(
                f"pixel_mean/pixel_std need 3 values (std > 0), got {pixel_mean}, {pixel_std}"
            )
        self.model = model.eval()
        self.model_type = model_type
        self.mapping = mapping
        self.label_set: LabelSet = mapping.label_set
        self._label_divisor = int(label_divisor)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        self.size_divisibility = int(size_divisibility)
        self.params = params or MaskInferenceParams()
        self.max_chunk_elements = max_chunk_elements
        self.preferred_size = dict(preferred_size or {})
        self.source = source
        self._output_names = MODEL_TYPES[model_type][1:]
        num_classes = mapping.num_classes
        self.register_buffer("_category_ids", torch.as_tensor(mapping.category_ids,
                                                              dtype=torch.int64),
                             persistent=False)
        self.register_buffer("_is_thing", torch.as_tensor(mapping.is_thing), persistent=False)
        fuse = torch.zeros(num_classes + 1, dtype=torch.bool)
        fuse[:num_classes] = torch.as_tensor(mapping.fuse)
        self.register_buffer("_fuse", fuse, persistent=False)
        self.register_buffer(
            "_task_inputs",
            task_inputs.to(torch.int64) if task_inputs is not None else None,
            persistent=False,
        )

    # -- interface --------------------------------------------------------------------------
    @property
    def label_divisor(self) -> int:
        """``ids = category * label_divisor + instance``; settable (validated)."""
        return self._label_divisor

    @label_divisor.setter
    def label_divisor(self, value: int) -> None:
        check_label_divisor(int(value), self.label_set)
        queries = int(getattr(getattr(self.model, "config", None), "num_queries", 0) or 0)
        if queries >= int(value):
            raise ValueError(
                f"label_divisor {value} must exceed the model's {queries} queries so that "
                "instance ids fit the encoding"
            )
        self._label_divisor = int(value)

    @property
    def checkpoint_meta(self) -> dict[str, Any]:
        """``input_size``: the shorter side the model's image processor resizes images to.

        The Predictor uses it when its own ``input_size`` is not set.
        """
        side = self.preferred_size.get("shortest_edge")
        return {"input_size": int(side)} if side else {}

    @property
    def num_classes(self) -> int:
        """Model classes without "no object"."""
        return self.mapping.num_classes

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def preprocess_spec(self) -> dict[str, Any]:
        """Input normalisation the Predictor applies: RGB, 0..255 units, padded."""
        return {
            "pixel_mean": self.pixel_mean,
            "pixel_std": self.pixel_std,
            "size_divisibility": self.size_divisibility,
            "preferred_size": dict(self.preferred_size),
            **self._max_input_pixels(),
        }

    def _max_input_pixels(self) -> dict[str, int]:
        """The image processor's largest resize (shortest x longest edge), when it has one."""
        short = self.preferred_size.get("shortest_edge")
        long = self.preferred_size.get("longest_edge")
        return {"max_input_pixels": int(short) * int(long)} if short and long else {}

    LIVE_PARAMS = MASK_LIVE_PARAMS
    """Live settings (:mod:`~panoptic_ros.models.live_params`): the fields of
    :class:`MaskInferenceParams`."""

    def inference_params(self) -> dict[str, Any]:
        """Current values of :attr:`LIVE_PARAMS`."""
        return asdict(self.params)

    def set_inference_params(self, **kwargs: Any) -> None:
        """Change thresholds live (names of :attr:`LIVE_PARAMS`).

        Unknown names or invalid values raise ``ValueError`` and change nothing.
        """
        check_values(self.LIVE_PARAMS, kwargs)
        self.params = replace(self.params, **kwargs)

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Raw model outputs.

        Args:
            images: Tensor[B, 3, H, W] float, normalised with :attr:`pixel_mean` /
                :attr:`pixel_std`, padded to :attr:`size_divisibility`.
            pixel_mask: Tensor[B, H, W] int64, 1 on valid pixels (used by DETR and MaskFormer).

        Returns:
            ``class_logits`` Tensor[B, Q, C + 1] and ``mask_logits`` Tensor[B, Q, H/4, W/4].
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        kwargs: dict[str, Any] = {"pixel_values": images}
        if self.model_type in ("detr", "maskformer") and pixel_mask is not None:
            kwargs["pixel_mask"] = pixel_mask
        if self.model_type == "oneformer":
            kwargs["task_inputs"] = self._task_inputs.expand(images.shape[0], -1)
        return _hf_outputs(self.model(**kwargs), self._output_names)

    @torch.inference_mode()
    def predict(
        self,
        images: Tensor,
        image_sizes: Sequence[Sequence[int]],
        output_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[PanopticResult]:
        """Panoptic segmentation of a batch.

        Args:
            images: Tensor[B, 3, Hp, Wp] float on the model's device, normalised and padded
                at the bottom and right.
            image_sizes: ``(h, w)`` per image, its valid region inside the padded tensor.
            output_sizes: ``(H, W)`` per image of the returned id maps (default: image_sizes),
                typically the camera image's size before the Predictor resized it.

        Returns:
            One :class:`~panoptic_ros.result.PanopticResult` per image at its output size.
        """
        image_sizes = check_batch(images, image_sizes, output_sizes)
        if output_sizes is None:
            output_sizes = image_sizes
        batch, _, pad_h, pad_w = images.shape
        pixel_mask = torch.zeros(batch, pad_h, pad_w, dtype=torch.int64, device=images.device)
        for i, (h, w) in enumerate(image_sizes):
            pixel_mask[i, :h, :w] = 1
        class_logits, mask_logits = self(images, pixel_mask)
        return self.postprocess(class_logits, mask_logits, (pad_h, pad_w), image_sizes,
                                output_sizes)

    def postprocess(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        input_size: Sequence[int],
        image_sizes: Sequence[Sequence[int]],
        output_sizes: Sequence[Sequence[int]],
    ) -> list[PanopticResult]:
        """Panoptic inference on raw outputs of :meth:`forward`.

        Mask logits are resized to the padded input size, cropped to the valid region and
        resized to the output size (all bilinear, align_corners=False), as the original
        Mask2Former does (``rules="transformers"``: the sigmoid comes before the last resize),
        then the rules of :func:`~panoptic_ros.models.mask2former_postprocess.
        panoptic_from_queries` apply with stuff classes fused.
        """
        class_logits = class_logits.float()
        mask_logits = mask_logits.float()
        scores, labels = query_scores(class_logits)
        p = self.params
        results = []
        for i in range(class_logits.shape[0]):
            segments = panoptic_from_queries(
                scores[i], labels[i], mask_logits[i],
                num_classes=self.num_classes,
                threshold=p.score_threshold,
                mask_threshold=p.mask_threshold,
                overlap_threshold=p.overlap_threshold,
                fuse=self._fuse,
                target_size=tuple(output_sizes[i]),
                logit_size=tuple(input_size),
                crop=tuple(image_sizes[i]),
                rules=p.rules,
                resize_logits=p.rules == "mask2former",
                max_chunk_elements=self.max_chunk_elements,
            )
            results.append(self.to_result(segments))
        return results

    def to_result(self, segments: QuerySegments) -> PanopticResult:
        """Encode model-space segments with our category ids (things numbered 1.. per category).

        Segments of unmapped labels become void.
        """
        cats = self._category_ids[segments.labels]
        thing = self._is_thing[segments.labels] & (cats > 0)
        same = (cats[:, None] == cats[None, :]) & thing[:, None] & thing[None, :]
        earlier = torch.ones_like(same).tril(-1)
        instance = torch.where(thing, (same & earlier).sum(1) + 1, 0)
        encoded = torch.where(cats > 0, cats * self.label_divisor + instance, 0)
        lut = torch.cat([encoded.new_zeros(1), encoded])
        ids = lut[segments.segment_map].to(torch.int32).cpu().numpy()
        # Scores per encoded id; segments sharing an id (stuff labels mapped to one category)
        # average.
        total: dict[int, list[float]] = {}
        for value, score in zip(encoded.tolist(), segments.scores.tolist()):
            if value:
                total.setdefault(value, []).append(score)
        scores = {k: float(np.mean(v)) for k, v in total.items()}
        return PanopticResult.from_ids(ids, self.label_set, self.label_divisor, scores=scores)

    def extra_repr(self) -> str:
        """Summary line of ``repr``."""
        return (
            f"model_type={self.model_type!r}, source={self.source!r}, "
            f"label_set={self.label_set.name!r}, classes={self.num_classes}"
        )


# -- loading ------------------------------------------------------------------------------
def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ModelLoadError(
            f"the mask2former backend needs the 'transformers' package: {INSTALL_HINT}"
        ) from err
    return transformers


def _looks_like_path(weights: str) -> bool:
    return weights.startswith(("/", "./", "../", "~")) or Path(weights).expanduser().exists()


def _fetch_hint(weights: str) -> str:
    return (
        f"To fetch it, run `hf download {weights}` (older huggingface_hub: "
        f"`huggingface-cli download {weights}`) on a machine with internet and copy its "
        "Hugging Face cache to this one, or save the model with save_pretrained and set "
        "model.weights to that directory; or set model.allow_download: true to let it "
        "download here."
    )


def _not_found(weights: str, cache_dir: str | None, err: Exception | None) -> ModelLoadError:
    if cache_dir is None:
        try:
            from huggingface_hub import constants

            cache_dir = constants.HF_HUB_CACHE
        except ImportError:  # pragma: no cover - transformers depends on it
            cache_dir = "the Hugging Face cache"
    detail = f" ({type(err).__name__}: {str(err).splitlines()[0]})" if err else ""
    return ModelLoadError(
        f"pretrained model {weights!r} is not in the local Hugging Face cache ({cache_dir}) "
        f"and downloads are off (model.allow_download: false){detail}. " + _fetch_hint(weights)
    )


def _preprocessing(transformers, source: str, hub_kwargs: dict, model_type: str):
    """Mean/std (0..255), size divisibility and resize hint from the image processor config."""
    mean, std, divisibility, size = IMAGENET_MEAN, IMAGENET_STD, 32, {}
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError, KeyError) as err:
        _log.info("no image processor config with %s (%s): using ImageNet normalisation",
                  source, str(err).splitlines()[0] if str(err) else type(err).__name__)
        processor = None
    if processor is not None:
        scale = 255.0 if getattr(processor, "do_rescale", True) else 1.0
        if getattr(processor, "rescale_factor", None) not in (None, 0) and scale != 1.0:
            scale = 1.0 / float(processor.rescale_factor)
        if getattr(processor, "do_normalize", True):
            m = getattr(processor, "image_mean", None)
            s = getattr(processor, "image_std", None)
            if m is not None and s is not None:
                mean = tuple(round(float(v) * scale, 6) for v in np.broadcast_to(m, 3))
                std = tuple(round(float(v) * scale, 6) for v in np.broadcast_to(s, 3))
        divisibility = int(getattr(processor, "size_divisor", None) or
                           getattr(processor, "size_divisibility", None) or
                           (1 if model_type == "detr" else 32))
        raw = getattr(processor, "size", None)
        if raw is not None:
            items = raw.items() if hasattr(raw, "items") else vars(raw).items()
            size = {k: int(v) for k, v in items if isinstance(v, int) and v}
    return mean, std, divisibility, size


def _task_inputs(transformers, source: str, hub_kwargs: dict) -> Tensor:
    """OneFormer's tokenised task prompt "the task is panoptic" (needs its tokenizer files)."""
    try:
        processor = transformers.AutoProcessor.from_pretrained(source, **hub_kwargs)
        length = int(getattr(processor, "task_seq_length", 77))
        return processor._preprocess_text(["the task is panoptic"], max_length=length)
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise ModelLoadError(
            f"OneFormer model {source!r}: could not build the task prompt from its processor "
            f"and tokenizer files ({type(err).__name__}: {err})"
        ) from err


def load_pretrained(config: Mask2FormerConfig | Mapping[str, Any] | str,
                    **overrides: Any) -> Mask2FormerBackend:
    """Load a pretrained checkpoint as a :class:`Mask2FormerBackend` (on the CPU, eval mode).

    Steps: resolve the config, find the weights (directory or hub id), read the model's
    config, load its weights, map its labels and read its preprocessing.

    Args:
        config: a :class:`Mask2FormerConfig`, its dict form, or just the weights (id or path).
        overrides: config fields to override.

    Raises:
        ModelLoadError: transformers missing, model not found locally (with the fetch
            command), an unsupported model type, or unreadable weights.
    """
    config = _resolved_config(config, overrides)
    transformers = _transformers()
    weights = str(config.weights)
    source, is_local = _weights_source(weights)
    hub_kwargs = _hub_kwargs(config)
    hf_config = _load_hf_config(transformers, source, is_local, config, hub_kwargs)
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in MODEL_TYPES:
        raise ModelLoadError(
            f"model {weights!r} is a {model_type!r} model; the mask2former backend supports "
            f"{sorted(MODEL_TYPES)} panoptic checkpoints"
        )
    model_cls = getattr(transformers, MODEL_TYPES[model_type][0])
    model = _load_hf_model(model_cls, hf_config, source, is_local, config, hub_kwargs)

    mapping = map_labels(
        hf_config.id2label,
        config.label_set,
        custom_name=f"custom:{Path(weights).name or weights}",
    )
    mean, std, divisibility, size = _preprocessing(transformers, source, hub_kwargs, model_type)
    task_inputs = (
        _task_inputs(transformers, source, hub_kwargs) if model_type == "oneformer" else None
    )
    _log.info(
        "loaded %s model %s: %d classes -> label set %r (%.0f%% mapped)",
        model_type, weights, mapping.num_classes, mapping.label_set.name, 100 * mapping.coverage,
    )
    return Mask2FormerBackend(
        model,
        mapping,
        model_type=model_type,
        pixel_mean=mean,
        pixel_std=std,
        size_divisibility=divisibility,
        label_divisor=config.label_divisor,
        params=config.inference,
        task_inputs=task_inputs,
        max_chunk_elements=config.max_chunk_elements,
        preferred_size=size,
        source=weights,
    )


def _resolved_config(config: Mask2FormerConfig | Mapping[str, Any] | str,
                     overrides: Mapping[str, Any]) -> Mask2FormerConfig:
    """The :class:`Mask2FormerConfig` of :func:`load_pretrained`'s arguments."""
    if isinstance(config, (str, Path)):
        config = {"weights": str(config)}
    if isinstance(config, Mapping):
        return Mask2FormerConfig.from_dict({**config, **overrides})
    if overrides:
        return Mask2FormerConfig.from_dict({**config.to_dict(), **overrides})
    return config


def _weights_source(weights: str) -> tuple[str, bool]:
    """``(source, is_local)``: a checked ``save_pretrained`` directory, or the hub id as given.

    Raises:
        ModelLoadError: a path that is not a directory or has no ``config.json``.
    """
    if not _looks_like_path(weights):
        return weights, False
    directory = Path(weights).expanduser()
    if not directory.is_dir():
        raise ModelLoadError(
            f"model directory {str(directory)!r} does not exist or is not a directory. "
            + _fetch_hint("<model id>")
        )
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"model directory {str(directory)!r} has no config.json: expected a directory "
            "written by save_pretrained (config.json + model.safetensors)"
        )
    return str(directory), True


def _hub_kwargs(config: Mask2FormerConfig) -> dict[str, Any]:
    """Keyword arguments of every ``from_pretrained`` call: offline unless allowed, no code."""
    # Never run code shipped with a model (config auto_map), nor ask about it on stdin.
    hub_kwargs: dict[str, Any] = {
        "local_files_only": not config.allow_download, "trust_remote_code": False,
    }
    if config.revision is not None:
        hub_kwargs["revision"] = config.revision
    if config.cache_dir is not None:
        hub_kwargs["cache_dir"] = config.cache_dir
    return hub_kwargs


def _load_hf_config(transformers, source: str, is_local: bool, config: Mask2FormerConfig,
                    hub_kwargs: dict[str, Any]):
    """The model's transformers config; every failure as a :class:`ModelLoadError`."""
    weights = str(config.weights)
    try:
        return transformers.AutoConfig.from_pretrained(source, **hub_kwargs)
    except OSError as err:
        if not is_local and not config.allow_download:
            raise _not_found(weights, config.cache_dir, err) from err
        raise ModelLoadError(f"could not load the config of model {weights!r}: {err}") from err
    except ValueError as err:  # custom code refused (trust_remote_code), unknown model type
        if "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"model {weights!r} needs Python code shipped with it (config.json auto_map), "
                "which panoptic_ros never runs; the mask2former backend loads "
                f"{sorted(MODEL_TYPES)} checkpoints with transformers' own classes"
            ) from err
        raise ModelLoadError(
            f"could not load the config of model {weights!r}: {' '.join(str(err).split())}"
        ) from err


def _load_hf_model(model_cls, hf_config, source: str, is_local: bool,
                   config: Mask2FormerConfig, hub_kwargs: dict[str, Any]) -> nn.Module:
    """The model with its weights (tensors only); every failure as a :class:`ModelLoadError`."""
    weights = str(config.weights)
    try:
        return model_cls.from_pretrained(
            source, config=hf_config, weights_only=True, **hub_kwargs
        )
    except OSError as err:
        if not is_local and not config.allow_download:
            raise _not_found(weights, config.cache_dir, err) from err
        raise ModelLoadError(f"could not load the weights of model {weights!r}: {err}") from err
    except ImportError as err:
        raise ModelLoadError(
            f"model {weights!r} needs a package that is not installed: {err}"
        ) from err
    except pickle.UnpicklingError as err:  # a pytorch_model.bin with more than tensors
        raise ModelLoadError(
            f"could not load the weights of model {weights!r} (pytorch_model.bin): "
            + unsafe_file_message(err)
        ) from None
    except Exception as err:  # noqa: BLE001 - corrupt files raise many types (safetensors, torch)
        raise ModelLoadError(
            f"could not load the weights of model {weights!r} ({type(err).__name__}): "
            f"{' '.join(str(err).split())[:600]}"
        ) from err


def build_mask2former(config: Mask2FormerConfig | Mapping[str, Any]) -> Mask2FormerBackend:
    """Registry builder of backend ``mask2former``: see :func:`load_pretrained`."""
    return load_pretrained(config)
