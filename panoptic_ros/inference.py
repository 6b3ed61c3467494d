"""Predictor: RGB frames in, :class:`~panoptic_ros.result.PanopticResult` out, on CPU or GPU.

One object owns the model, the device, the precision and the pre-processing::

    predictor = Predictor(PredictorConfig(weights="model.pt", device="cuda", precision="fp16"))
    result = predictor(rgb)            # ndarray[H, W, 3] uint8 -> PanopticResult at H x W
    results = predictor([rgb1, rgb2])  # a batch, sizes may differ

The frame is uploaded once (through pinned memory on CUDA), resized, normalised and padded on
the device, run (optionally under ``torch.autocast``, channels-last, ``torch.compile``), fused
on the device, and the final id map is copied to the host once, at the exact input size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from panoptic_ros import models
from panoptic_ros.categories import LabelSet, check_label_divisor, get_label_set
from panoptic_ros.devices import parse_device
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.models import DEMO_WEIGHTS  # noqa: F401 - re-exported for users
from panoptic_ros.models.live_params import LiveParam, check_values
from panoptic_ros.models.preprocess import normalize_and_pad
from panoptic_ros.result import PanopticResult

_log = logging.getLogger(__name__)


PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
"""Accepted precisions and their autocast dtypes (``fp32``: no autocast); see
:func:`autocast_dtype` for the choice per device."""

PRETRAINED_OPTIONS = ("allow_download", "cache_dir", "revision", "pretrained_label_set")
""":class:`PredictorConfig` fields that only pretrained backends (``mask2former``) take."""

InputSize = int | tuple[int, int] | None

DEFAULT_MAX_INPUT_PIXELS = 1024 * 2048
"""Bound of the network input's area when neither the config nor the model gives one."""


@dataclass(frozen=True)
class PredictorConfig:
    """Everything that decides how frames are processed.

    Attributes:
        backend: model backend (``efficientps`` or another registered one).
        weights: ``"demo"`` (the bundled model), a checkpoint path (a hub id or folder for
            pretrained backends), or ``None`` for random initialisation of ``variant``.
        variant: network variant when ``weights`` is ``None``.
        label_set: categories when ``weights`` is ``None`` (built-in name or JSON path).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: one of :data:`PRECISIONS`; fp16/bf16 run the network under autocast.
        input_size: network input size: an int is the shorter image side, ``(H, W)`` a box the
            image is fitted into, both keeping the aspect ratio; ``None``: the checkpoint's
            ``meta["input_size"]`` when it has one, else the image's own size.
        label_divisor: id encoding divisor (``None``: the model's).
        inference: overrides of the backend's live settings (name -> value, names of the
            backend's ``LIVE_PARAMS``, e.g. ``score_threshold``; see
            :mod:`~panoptic_ros.models.live_params`); others keep the model's own values.
        max_input_pixels: upper bound of the network input's area: a frame larger after the
            ``input_size`` fit is shrunk to this many pixels (``None``: the model's reference
            area, 1024 x 2048 for EfficientPS), so no frame costs more than that.
        compile: ``torch.compile`` the dense part of the network (EfficientPS: backbone, FPN
            and semantic head; other backends: the whole module). The first frame of each new
            input size pays the compilation.
        compile_backend: the ``torch.compile`` backend (``inductor``; ``cudagraphs``, or
            ``tensorrt`` when torch-tensorrt is installed).
        channels_last: channels-last memory format (``None``: on CUDA only).
        allow_download: pretrained backends: let them fetch a hub id missing from the local
            cache (off: a robot works offline).
        cache_dir: pretrained backends: Hugging Face cache directory (``None``: the default).
        revision: pretrained backends: hub revision of a hub id.
        pretrained_label_set: pretrained backends: how the model's labels map onto our
            categories: ``auto``, ``coco``, ``cityscapes``, ``custom`` or a category JSON
            (``None``: the backend's default, ``auto``).
        backend_options: further options of a registered backend's builder, passed in its
            spec (``onnx``: ``providers``, ``intra_op_threads``); not for efficientps.
    """

    backend: str = "efficientps"
    weights: str | None = "demo"
    variant: str = "narrow"
    label_set: str = "synthetic"
    device: str = "auto"
    precision: str = "fp32"
    input_size: InputSize = None
    label_divisor: int | None = None
    inference: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    max_input_pixels: int | None = None
    compile: bool = False
    compile_backend: str = "inductor"
    channels_last: bool | None = None
    allow_download: bool = False
    cache_dir: str | None = None
    revision: str | None = None
    pretrained_label_set: str | None = None
    backend_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}"
            )
        size = self.input_size
        if isinstance(size, list):
            object.__setattr__(self, "input_size", tuple(size))
            size = self.input_size
        if size is not None:
            ok = (isinstance(size, int) and size >= 1) or (
                isinstance(size, tuple) and len(size) == 2
                and all(isinstance(v, int) and v >= 1 for v in size)
            )
            if not ok or isinstance(size, bool):
                raise ValueError(
                    f"input_size must be None, a shorter side (int >= 1) or (height, width), "
                    f"got {size!r}"
                )
        if self.max_input_pixels is not None and self.max_input_pixels < 1:
            raise ValueError(f"max_input_pixels must be >= 1, got {self.max_input_pixels}")
        parse_device(self.device, check_available=False)
        if self.backend == "efficientps":
            given = [name for name in PRETRAINED_OPTIONS
                     if getattr(self, name) not in (None, False)]
            if given:
                raise ValueError(
                    f"{given} apply to pretrained backends (mask2former), not to efficientps"
                )
            if self.backend_options:
                raise ValueError(f"backend_options {sorted(self.backend_options)} apply to "
                                 f"other backends, not to efficientps")

    def model_spec(self) -> dict[str, Any]:
        """Registry spec of a pretrained backend: where this config becomes backend options.

        The mapping :func:`~panoptic_ros.models.registry.build_model` takes. Options left at
        their defaults are left out, so backends that do not know them (a registered
        third-party one) still build.
        """
        spec: dict[str, Any] = {"backend": self.backend, "weights": self.weights}
        if self.allow_download:
            spec["allow_download"] = True
        optional = {"cache_dir": self.cache_dir, "revision": self.revision,
                    "label_set": self.pretrained_label_set}
        spec.update({k: v for k, v in optional.items() if v is not None})
        spec.update(self.backend_options)
        return spec

    def inference_overrides(self) -> dict[str, Any]:
        """The live settings this config overrides (``None`` values keep the model's)."""
        return {k: v for k, v in self.inference.items() if v is not None}


def autocast_dtype(
    device: torch.device, precision: str, *, cuda_bf16: bool | None = None
) -> torch.dtype | None:
    """The dtype the network runs in under ``torch.autocast`` (``None``: no autocast, fp32).

    * ``fp32``: ``None`` everywhere.
    * ``fp16``: ``float16`` on CUDA. On the CPU ``None`` with a warning: CPUs have no fast
      float16 kernels (the narrow network ran several times slower than in fp32 on a CPU),
      so a GPU robot's config still runs sensibly where ``device: auto`` finds no GPU.
    * ``bf16``: ``bfloat16`` on the CPU (fast where it has AVX512-BF16/AMX) and on GPUs with
      native bfloat16 (compute capability 8.0+, Ampere and later).

    Args:
        device: where the network runs.
        precision: one of :data:`PRECISIONS`.
        cuda_bf16: whether the GPU has native bfloat16 (``None``: ask CUDA).

    Raises:
        ValueError: unknown precision, or ``bf16`` on a GPU without native bfloat16 (Volta,
            Turing, e.g. Jetson AGX Xavier): use ``fp16`` there.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == "cuda":
        if dtype == torch.bfloat16:
            if cuda_bf16 is None:
                cuda_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            if not cuda_bf16:
                raise ValueError(
                    "precision bf16 needs a GPU with native bfloat16 (compute capability 8.0+); "
                    "use fp16 on this one"
                )
        return dtype
    if dtype == torch.float16:
        _log.warning("precision fp16 on %s: no fast float16 kernels there, running fp32 "
                     "(bf16 is the CPU's reduced precision)", device)
        return None
    return dtype


def cudnn_autotuning(device: torch.device):
    """CuDNN autotuning (``benchmark``) for the calls inside, on CUDA only.

    Scoped rather than set process-wide, so a node sharing its process with other code (or a
    test) does not change that code's behaviour; the other cuDNN flags are kept as they are.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=True,
                       deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32)


def fit_size(
    height: int, width: int, input_size: InputSize, max_pixels: int | None = None
) -> tuple[int, int]:
    """Network input size of an image, keeping its aspect ratio.

    Args:
        height, width: the image size.
        input_size: shorter side (int), ``(H, W)`` box to fit into, or ``None`` (unchanged).
        max_pixels: the result is shrunk further (never grown) to at most this area.
    """
    scale = 1.0
    if isinstance(input_size, int):
        scale = input_size / min(height, width)
    elif input_size is not None:
        scale = min(input_size[0] / height, input_size[1] / width)
    if max_pixels is not None and height * width * scale * scale > max_pixels:
        scale = (max_pixels / (height * width)) ** 0.5
        # Rounding must not push the area back over the bound.
        while max(1, round(height * scale)) * max(1, round(width * scale)) > max_pixels:
            scale *= 0.999
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_to_fit(
    image: Tensor, input_size: InputSize, max_pixels: int | None = None
) -> Tensor:
    """Resize an image to its network input size (:func:`fit_size`), on its device.

    Args:
        image: Tensor[3, H, W] RGB, uint8 or float.
        input_size, max_pixels: as :func:`fit_size`.

    Returns:
        ``image`` itself when the size does not change, else Tensor[3, h, w] float32
        (bilinear, antialiased when shrinking).
    """
    h, w = int(image.shape[1]), int(image.shape[2])
    size = fit_size(h, w, input_size, max_pixels)
    if size == (h, w):
        return image
    return F.interpolate(
        image[None].float(), size=size, mode="bilinear", align_corners=False,
        antialias=size[0] < h or size[1] < w,
    )[0]


def _describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"ndarray {obj.dtype} of shape {obj.shape}"
    if isinstance(obj, Tensor):
        return f"Tensor {obj.dtype} of shape {tuple(obj.shape)}"
    return type(obj).__name__


_EXPECTED = (
    "a uint8 RGB image [H, W, 3] (numpy array or torch tensor), a batch [B, H, W, 3] or a "
    "list of images"
)


def as_image_list(images: Any) -> tuple[list[np.ndarray | Tensor], bool]:
    """Split the Predictor's input into HxWx3 uint8 images.

    Returns:
        the images and whether a single image (not a batch) was given.

    Raises:
        ValueError: anything else, naming what was expected and what arrived.
    """
    if isinstance(images, (np.ndarray, Tensor)):
        if images.ndim == 3:
            items, single = [images], True
        elif images.ndim == 4:
            items, single = list(images), False
        else:
            raise ValueError(f"expected {_EXPECTED}; got {_describe(images)}")
    elif isinstance(images, (list, tuple)):
        items, single = list(images), False
        if not items:
            raise ValueError(f"expected {_EXPECTED}; got an empty {type(images).__name__}")
    else:
        raise ValueError(f"expected {_EXPECTED}; got {_describe(images)}")
    for i, im in enumerate(items):
        where = "" if single else f" (item {i})"
        if not isinstance(im, (np.ndarray, Tensor)):
            raise ValueError(f"expected {_EXPECTED}; got {_describe(im)}{where}")
        uint8 = im.dtype == (np.uint8 if isinstance(im, np.ndarray) else torch.uint8)
        if im.ndim != 3 or im.shape[2] != 3 or not uint8 or im.shape[0] < 1 or im.shape[1] < 1:
            raise ValueError(f"expected {_EXPECTED}; got {_describe(im)}{where}")
    return items, single


class Predictor:
    """Panoptic segmentation of RGB frames with one model on one device.

    Args:
        config: the settings (default :class:`PredictorConfig`).
        **overrides: fields of :class:`PredictorConfig` replacing those of ``config``.

    Raises:
        ModelLoadError: the weights cannot be loaded (missing file, corrupt checkpoint, no
            bundled demo model, CUDA unavailable); the message says why.
        ValueError: invalid settings.
    """

    def __init__(self, config: PredictorConfig | None = None, **overrides: Any) -> None:
        config = config or PredictorConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.device = parse_device(config.device)
        self.autocast_dtype = autocast_dtype(self.device, config.precision)
        self.model = self._load_model(config)
        self.label_set: LabelSet = self.model.label_set
        if config.label_divisor is not None and config.label_divisor != self.model.label_divisor:
            check_label_divisor(config.label_divisor, self.label_set)
            self.model.label_divisor = config.label_divisor
        self._own_inference = dict(self.model.inference_params())  # the model's own values
        self.set_inference_params(**config.inference_overrides())
        meta = getattr(self.model, "checkpoint_meta", {}) or {}
        size = config.input_size if config.input_size is not None else meta.get("input_size")
        self.input_size: InputSize = tuple(size) if isinstance(size, list) else size
        spec = self.model.preprocess_spec()
        self._mean, self._std = spec["pixel_mean"], spec["pixel_std"]
        self._divisibility = int(spec["size_divisibility"])
        self.max_input_pixels: int = int(
            config.max_input_pixels or spec.get("max_input_pixels") or DEFAULT_MAX_INPUT_PIXELS
        )
        self.channels_last = (
            self.device.type == "cuda" if config.channels_last is None else config.channels_last
        )
        self.model = self.model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda" and hasattr(self.model, "roi_heads"):
            self.model.roi_heads.bucket_detections = True  # few shapes for cuDNN to tune
        if config.compile:
            if hasattr(self.model, "compile_dense"):
                self.model.compile_dense(backend=config.compile_backend)
            else:
                self.model.compile(backend=config.compile_backend)
        self._staging: dict[int, Tensor] = {}

    # -- loading ---------------------------------------------------------------------------
    @staticmethod
    def _load_model(config: PredictorConfig) -> torch.nn.Module:
        from panoptic_ros.models.checkpoint import load_model
        from panoptic_ros.models.registry import build_model

        if config.backend != "efficientps":
            if config.weights is None or config.weights == "demo":
                raise ModelLoadError(
                    f"backend {config.backend!r} needs weights (a model id, folder or "
                    f"file)"
                )
            try:
                return build_model(config.model_spec())
            except (TypeError, ValueError) as err:
                raise ModelLoadError(str(err)) from None
        if config.weights is None:
            from panoptic_ros.models.efficientps import EfficientPSConfig

            try:
                return build_model(
                    "efficientps", EfficientPSConfig.preset(config.variant),
                    get_label_set(config.label_set),
                )
            except ValueError as err:
                raise ModelLoadError(
                    f"cannot build a random {config.variant!r} model: {err}"
                ) from None
        if config.weights == "demo":
            demo = models.DEMO_WEIGHTS
            if not demo.is_file():
                raise ModelLoadError(f"bundled demo model not found at {demo}")
            return load_model(demo)
        return load_model(config.weights)

    def release(self) -> None:
        """Free the model and its device memory; the Predictor is unusable afterwards.

        The order matters: the model's parameters are freed first (a garbage collection for
        reference cycles, e.g. a compiled module holding its own bound method), compiled graphs
        and their memory pools next (``torch._dynamo.reset``), and only then is the CUDA
        caching allocator emptied, so that the memory really returns to the device.
        """
        self.model = None
        self._staging = {}
        gc.collect()
        if self.config.compile:
            torch._dynamo.reset()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    # -- live settings ---------------------------------------------------------------------
    def live_params(self) -> tuple[LiveParam, ...]:
        """The backend's live settings, each with the loaded model's own value as default."""
        return tuple(p.with_default(self._own_inference[p.name])
                     for p in self.model.LIVE_PARAMS)

    def inference_params(self) -> dict[str, Any]:
        """The backend's current live settings (name -> value)."""
        return self.model.inference_params()

    def set_inference_params(self, **kwargs: Any) -> None:
        """Change live settings (names of :meth:`live_params`).

        ``None`` restores the model's own value. Unknown names or invalid values raise
        ``ValueError`` and change nothing.
        """
        values = {k: self._own_inference.get(k) if v is None else v for k, v in kwargs.items()}
        check_values(self.model.LIVE_PARAMS, values)
        self.model.set_inference_params(**values)

    def reset_inference_params(self) -> None:
        """Every live setting back to the loaded model's own value."""
        self.model.set_inference_params(**self._own_inference)

    # -- inference -------------------------------------------------------------------------
    def __call__(self, images: Any) -> PanopticResult | list[PanopticResult]:
        """Same as :meth:`predict`."""
        return self.predict(images)

    @torch.inference_mode()
    def predict(self, images: Any) -> PanopticResult | list[PanopticResult]:
        """Panoptic segmentation of one image or a batch.

        Args:
            images: ndarray/Tensor[H, W, 3] uint8 RGB; a batch ndarray/Tensor[B, H, W, 3]; or a
                list of images (sizes may differ).

        Returns:
            one :class:`PanopticResult` (single image) or a list, each at its input's exact
            size.

        Raises:
            ValueError: input of another type, dtype or shape.
        """
        if self.model is None:
            raise RuntimeError("the Predictor was released")
        items, single = as_image_list(images)
        tensors, out_sizes = [], []
        for slot, im in enumerate(items):
            h, w = int(im.shape[0]), int(im.shape[1])
            out_sizes.append((h, w))
            x = self._upload(im, slot).permute(2, 0, 1)  # [3, H, W] uint8 on the device
            tensors.append(resize_to_fit(x, self.input_size, self.max_input_pixels))
        # At least two strides of padding: a frame of a few pixels (even 1x1) keeps more than
        # one value per channel at the coarsest level, where the heads' norms need them.
        batch, sizes = normalize_and_pad(
            tensors, self._mean, self._std, self._divisibility, self.channels_last,
            min_size=2 * self._divisibility,
        )
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None else contextlib.nullcontext()
        )
        with autocast, cudnn_autotuning(self.device):
            results = self.model.predict(batch, sizes, out_sizes)
        for result, size in zip(results, out_sizes, strict=True):
            if result.ids.shape != size:  # the promise every caller relies on
                raise RuntimeError(f"backend {self.config.backend!r} returned a "
                                   f"{result.ids.shape} id map for a {size} image")
        return results[0] if single else results

    def _upload(self, image: np.ndarray | Tensor, slot: int) -> Tensor:
        """Tensor[H, W, 3] uint8 on the device; CPU frames go through pinned buffers on CUDA.

        One reusable pinned buffer per batch position: the previous call's transfers have
        finished, since :meth:`predict` ends with a device->host copy. A strided frame (a BGR
        view reversed to RGB, a crop) is copied into the pinned buffer directly, once.
        """
        is_array = isinstance(image, np.ndarray)
        if self.device.type != "cuda" or (not is_array and image.device.type == "cuda"):
            if is_array:
                image = torch.from_numpy(np.ascontiguousarray(image))
            return image.to(self.device)
        staging = self._staging.get(slot)
        if staging is None or tuple(staging.shape) != tuple(image.shape):
            staging = torch.empty(tuple(image.shape), dtype=torch.uint8, pin_memory=True)
            self._staging[slot] = staging
        if is_array:
            np.copyto(staging.numpy(), image)
        else:
            staging.copy_(image)
        return staging.to(self.device, non_blocking=True)

    def warmup(self, height: int = 256, width: int = 320, frames: int = 2) -> None:
        """Run a few scenes of the camera's size (cuDNN autotuning, compile) before use.

        Synthetic scenes with things in them, not a black frame: the detection heads and the
        fusion run too, at the size the camera will send.
        """
        from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng

        config = SceneConfig(height=max(32, height), width=max(32, width), min_things=2)
        for k in range(frames):
            image = generate_scene(scene_rng(0, k), config).image
            self.predict(cv2.resize(image, (width, height)) if image.shape[:2] != (
                height, width) else image)

